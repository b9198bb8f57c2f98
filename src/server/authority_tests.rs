//! The rewriting on made-up connections: a client encoder with its dynamic table on one
//! side, a fresh server decoder on the other.

use super::*;

const PRI: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn request(authority: &str, path: &str) -> Fields {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A client connection: the preface, SETTINGS, then per request a header block (split in
/// `split`-byte fragments: HEADERS + CONTINUATIONs, the first one padded) and a DATA frame.
fn connection(requests: &[Fields], split: usize) -> Vec<u8> {
    let mut enc = loona_hpack::Encoder::new();
    let mut out = PRI.to_vec();
    frame(&mut out, 0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    for (i, req) in requests.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let block = enc.encode(req.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let parts: Vec<&[u8]> = block.chunks(split).collect();
        for (j, part) in parts.iter().enumerate() {
            let end = if j == parts.len() - 1 { END_HEADERS } else { 0 };
            if j == 0 {
                let mut padded = vec![3u8];
                padded.extend_from_slice(part);
                padded.extend_from_slice(&[0, 0, 0]);
                frame(&mut out, HEADERS, end | PADDED, stream, &padded);
            } else {
                frame(&mut out, CONTINUATION, end, stream, part);
            }
        }
        frame(&mut out, 0x0, END_STREAM, stream, &vec![7u8; 40_000]);
    }
    out
}

/// What the server side receives, fed `chunk` bytes at a time.
fn through(input: &[u8], chunk: usize) -> Vec<u8> {
    let mut fixer = Fixer::default();
    let (mut raw, mut out) = (Vec::new(), Vec::new());
    for piece in input.chunks(chunk) {
        raw.extend_from_slice(piece);
        fixer.process(&mut raw, &mut out).unwrap();
    }
    assert!(raw.is_empty(), "{} bytes held back at the end", raw.len());
    out
}

/// The server's view: header blocks decoded with one decoder, and DATA bytes.
fn server_view(bytes: &[u8]) -> (Vec<Fields>, usize) {
    assert_eq!(&bytes[..PREFACE], PRI);
    let mut dec = loona_hpack::Decoder::new();
    let (mut blocks, mut data, mut pending) = (Vec::new(), 0, Vec::new());
    let mut at = PREFACE;
    while at < bytes.len() {
        let h = &bytes[at..at + HEADER];
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let payload = &bytes[at + HEADER..at + HEADER + len];
        match h[3] {
            HEADERS | CONTINUATION => {
                let mut p = payload;
                if h[3] == HEADERS && h[4] & PADDED != 0 {
                    p = &p[1..p.len() - usize::from(p[0])];
                }
                pending.extend_from_slice(p);
                if h[4] & END_HEADERS != 0 {
                    blocks.push(dec.decode(&pending).unwrap());
                    pending.clear();
                }
            }
            0x0 => data += len,
            _ => {}
        }
        at += HEADER + len;
    }
    (blocks, data)
}

#[test]
fn socket_path_authorities_become_localhost_on_every_request() {
    let reqs: Vec<Fields> = (0..5)
        .map(|i| request("tmp%2Fatp.sock", &format!("/svc/M{}", i % 2)))
        .collect();
    let input = connection(&reqs, 7);
    for chunk in [1, 5, 9, 100, 1 << 20] {
        let (blocks, data) = server_view(&through(&input, chunk));
        assert_eq!(data, 5 * 40_000, "DATA passes whole (chunk {chunk})");
        assert_eq!(blocks.len(), 5);
        for (got, sent) in blocks.iter().zip(&reqs) {
            let mut want = sent.clone();
            want[3].1 = b"localhost".to_vec();
            assert_eq!(got, &want, "chunk {chunk}");
        }
    }
}

#[test]
fn a_path_authority_like_grpc_go_sends_is_rewritten_too() {
    let reqs = vec![request("/run/atp/atp.sock", "/svc/Ping")];
    let (blocks, _) = server_view(&through(&connection(&reqs, 1000), 3));
    assert_eq!(
        blocks[0][3],
        (b":authority".to_vec(), b"localhost".to_vec())
    );
}

#[test]
fn a_valid_first_authority_passes_the_connection_through_byte_for_byte() {
    let reqs: Vec<Fields> = (0..3).map(|_| request("localhost", "/svc/Ping")).collect();
    let input = connection(&reqs, 4);
    assert_eq!(through(&input, 13), input);
}

#[test]
fn large_blocks_are_refragmented_and_oversized_ones_refused() {
    let mut req = request("a%2Fb", "/svc/Ping");
    req.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
    let (blocks, _) = server_view(&through(
        &connection(std::slice::from_ref(&req), 20_000),
        4096,
    ));
    assert_eq!(blocks[0].last().unwrap().1.len(), 40_000);
    let mut huge = request("a%2Fb", "/svc/Ping");
    huge.push((b"x-huge".to_vec(), vec![b'v'; MAX_BLOCK]));
    let input = connection(&[huge], MAX_BLOCK / 2);
    let mut fixer = Fixer::default();
    let (mut raw, mut out) = (input, Vec::new());
    assert!(fixer.process(&mut raw, &mut out).is_err());
}

#[test]
fn integers_use_their_prefix_and_continuation_bytes() {
    let mut out = Vec::new();
    integer(&mut out, 10, 5, 0);
    integer(&mut out, 1337, 5, 0);
    integer(&mut out, 127, 7, 0);
    assert_eq!(out, [10, 31, 154, 10, 127, 0]);
}
