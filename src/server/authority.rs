//! UNIX listeners take any `:authority` a client derives from a socket path. gRPC C-core
//! (Python, Ruby, C++) sends `tmp%2Fatp.sock` for `unix:///tmp/atp.sock`, grpc-go
//! (grpcurl `-unix`) the path itself; the HTTP/2 server (h2) refuses both as malformed and
//! resets the stream before our service sees it. On a UNIX socket the authority names
//! nothing, so [`AuthorityFix`] sits between the socket and the server and, when a
//! connection's first request carries an authority that is not a valid URI authority,
//! re-encodes every request header block of that connection with `:authority: localhost`.
//! A connection whose first authority is valid (or absent) is passed through untouched from
//! then on, at no cost. Only the client-to-server direction is read; frames other than
//! HEADERS/CONTINUATION are streamed through without being buffered.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The HTTP/2 client preface.
const PREFACE: usize = 24;
/// Frame header length.
const HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest header block (all its frames) held; a larger one closes the connection. It
/// bounds what one connection buffers here (512 connections: 32 MiB at most), and is
/// still four times the header list the server itself accepts (16 KiB).
const MAX_BLOCK: usize = 64 << 10;
/// Fragment size of re-encoded blocks: the smallest SETTINGS_MAX_FRAME_SIZE a server has.
const MAX_FRAGMENT: usize = 16_384;
/// What a rewritten request says instead.
const LOCAL: &[u8] = b"localhost";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Until the first header block: it decides.
    Detect,
    /// Every header block is re-encoded.
    Rewrite,
    /// Everything passes unchanged.
    Pass,
}

/// A header block being gathered: its frames as received, and its fragments.
#[derive(Debug)]
struct Block {
    stream: [u8; 4],
    end_stream: bool,
    frames: Vec<u8>,
    fragments: Vec<u8>,
}

/// The client-to-server rewriting, without I/O: bytes in, bytes out.
pub(crate) struct Fixer {
    mode: Mode,
    preface_left: usize,
    /// Payload bytes of the current non-header frame still to pass.
    passing: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl std::fmt::Debug for Fixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Default for Fixer {
    fn default() -> Self {
        Self {
            mode: Mode::Detect,
            preface_left: PREFACE,
            passing: 0,
            block: None,
            decoder: loona_hpack::Decoder::new(),
        }
    }
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Fixer {
    /// Whether everything from now on passes unchanged.
    pub(crate) fn passing_all(&self) -> bool {
        self.mode == Mode::Pass
    }

    /// Moves what can be processed from `raw` to `out` (rewritten where needed); leaves a
    /// partial frame header or header frame in `raw` for more bytes.
    pub(crate) fn process(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut at = 0;
        let res = self.step_all(raw, &mut at, out);
        raw.drain(..at);
        res
    }

    fn step_all(&mut self, raw: &[u8], at: &mut usize, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let rest = &raw[*at..];
            if self.mode == Mode::Pass {
                out.extend_from_slice(rest);
                *at = raw.len();
                return Ok(());
            }
            if rest.is_empty() {
                return Ok(());
            }
            let through = if self.preface_left > 0 {
                &mut self.preface_left
            } else {
                &mut self.passing
            };
            if *through > 0 {
                let n = (*through).min(rest.len());
                out.extend_from_slice(&rest[..n]);
                *through -= n;
                *at += n;
                continue;
            }
            if rest.len() < HEADER {
                return Ok(());
            }
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (ty, flags) = (rest[3], rest[4]);
            let header_frame = ty == HEADERS || (ty == CONTINUATION && self.block.is_some());
            if !header_frame {
                out.extend_from_slice(&rest[..HEADER]);
                self.passing = len;
                *at += HEADER;
                continue;
            }
            if len > MAX_BLOCK {
                return Err(broken("HTTP/2 header frame too large"));
            }
            if rest.len() < HEADER + len {
                return Ok(());
            }
            let frame = &rest[..HEADER + len];
            *at += HEADER + len;
            self.gather(frame, ty, flags)?;
            if flags & END_HEADERS != 0
                && let Some(block) = self.block.take()
            {
                self.finish(block, out)?;
            }
        }
    }

    /// Adds one HEADERS or CONTINUATION frame to the block being gathered.
    fn gather(&mut self, frame: &[u8], ty: u8, flags: u8) -> io::Result<()> {
        let payload = &frame[HEADER..];
        if ty == HEADERS {
            let mut start = 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                pad = usize::from(
                    *payload
                        .first()
                        .ok_or_else(|| broken("empty padded frame"))?,
                );
                start = 1;
            }
            if flags & PRIORITY != 0 {
                start += 5;
            }
            let end = payload
                .len()
                .checked_sub(pad)
                .filter(|&e| e >= start)
                .ok_or_else(|| broken("HTTP/2 HEADERS padding exceeds the frame"))?;
            self.block = Some(Block {
                stream: [frame[5], frame[6], frame[7], frame[8]],
                end_stream: flags & END_STREAM != 0,
                frames: Vec::new(),
                fragments: Vec::new(),
            });
            if let Some(b) = &mut self.block {
                b.fragments.extend_from_slice(&payload[start..end]);
            }
        } else if let Some(b) = &mut self.block {
            b.fragments.extend_from_slice(payload);
        }
        let b = self
            .block
            .as_mut()
            .ok_or_else(|| broken("no header block"))?;
        b.frames.extend_from_slice(frame);
        if b.frames.len() > MAX_BLOCK {
            return Err(broken("HTTP/2 header block too large"));
        }
        Ok(())
    }

    /// A whole header block: passed as received, or re-encoded.
    fn finish(&mut self, block: Block, out: &mut Vec<u8>) -> io::Result<()> {
        let mut fields = Vec::new();
        let decoded = self.decoder.decode_with_cb(&block.fragments, |n, v| {
            fields.push((n.into_owned(), v.into_owned()))
        });
        if self.mode == Mode::Detect {
            let bad = decoded.is_ok()
                && fields.iter().any(|(n, v)| {
                    n == b":authority" && http::uri::Authority::try_from(v.as_slice()).is_err()
                });
            if !bad {
                // A valid (or absent) authority, or a block the server will refuse itself.
                out.extend_from_slice(&block.frames);
                self.mode = Mode::Pass;
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        if decoded.is_err() {
            return Err(broken("undecodable HTTP/2 header block"));
        }
        let mut encoded = Vec::new();
        for (name, value) in &fields {
            let value = if name == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                LOCAL
            } else {
                value.as_slice()
            };
            literal(&mut encoded, name, value);
        }
        frames(out, &block, &encoded);
        Ok(())
    }
}

/// Appends a header as "literal without indexing, new name" (RFC 7541 §6.2.2): the
/// server's decoder table is never used, so it cannot go out of step with ours.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    for s in [name, value] {
        integer(out, s.len(), 7, 0);
        out.extend_from_slice(s);
    }
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix; `high` holds the first byte's other bits.
fn integer(out: &mut Vec<u8>, mut v: usize, n: u32, high: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Frames `encoded` as one HEADERS frame and as many CONTINUATIONs as needed.
fn frames(out: &mut Vec<u8>, block: &Block, encoded: &[u8]) {
    let chunks: Vec<&[u8]> = if encoded.is_empty() {
        vec![&[]]
    } else {
        encoded.chunks(MAX_FRAGMENT).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let (ty, mut flags) = if i == 0 {
            (HEADERS, if block.end_stream { END_STREAM } else { 0 })
        } else {
            (CONTINUATION, 0)
        };
        if i == last {
            flags |= END_HEADERS;
        }
        let len = chunk.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
        out.extend_from_slice(&block.stream);
        out.extend_from_slice(chunk);
    }
}

/// A UNIX connection with [`Fixer`] applied to what the client sends.
#[derive(Debug)]
pub(crate) struct AuthorityFix<IO> {
    io: IO,
    fixer: Fixer,
    raw: Vec<u8>,
    ready: Vec<u8>,
    /// Bytes of `ready` already handed out.
    given: usize,
}

impl<IO> AuthorityFix<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Self {
            io,
            fixer: Fixer::default(),
            raw: Vec::new(),
            ready: Vec::new(),
            given: 0,
        }
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.given < this.ready.len() {
                let n = (this.ready.len() - this.given).min(buf.remaining());
                buf.put_slice(&this.ready[this.given..this.given + n]);
                this.given += n;
                if this.given == this.ready.len() {
                    this.ready.clear();
                    this.given = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.fixer.passing_all() && this.raw.is_empty() {
                // Nothing held back any more: straight from the socket.
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 << 10];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // EOF: whatever is held back is an incomplete frame; the server sees
                    // the connection end either way.
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    this.raw.extend_from_slice(rb.filled());
                    this.fixer.process(&mut this.raw, &mut this.ready)?;
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
