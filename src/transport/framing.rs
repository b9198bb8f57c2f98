//! Reply framing for the agent's byte stream: newline-delimited JSON, where a reply to
//! `guest-sync-delimited` is prefixed by the sentinel byte 0xFF.
//!
//! Pure and amortised O(n): each byte is scanned once for the newline and copied a bounded
//! number of times, however the replies arrive.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AgentReply, TransportError};

/// The byte qemu-ga puts before a `guest-sync-delimited` reply, and that a client sends to
/// reset the agent's JSON parser. It never occurs in UTF-8 JSON text.
pub const SENTINEL: u8 = 0xFF;

/// Longest reply line we accept: a 48 MiB `guest-file-read` is 64 MiB of base64 plus a
/// small JSON wrapper. Anything longer is not a qemu-ga reply.
pub const MAX_LINE: usize = 66 << 20;

/// Accumulates bytes read from the agent and cuts them into reply lines.
///
/// Each byte is scanned once for the newline, and a returned line costs a copy of at most
/// the smaller of the line and what follows it: a huge reply is moved out, not copied, and
/// many small pipelined replies in one buffer are copied out one by one, not shifted.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` before this were already returned (or discarded).
    start: usize,
    /// Bytes of `buf` before this are known to hold no newline (`>= start`).
    scanned: usize,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The buffer to append freshly read bytes to.
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        // Reclaim the consumed front before it grows the buffer (amortised O(1) per byte).
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        &mut self.buf
    }

    /// Number of buffered bytes not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
    }

    /// Takes the next complete line (without its `\n`), if one is buffered.
    ///
    /// Errors when more than [`MAX_LINE`] bytes arrive without a newline.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let tail = self.buf.get(self.scanned..).unwrap_or_default();
        match tail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let line_len = end - self.start;
                let rest_len = self.buf.len() - end - 1;
                let line = if self.start == 0 && line_len > rest_len {
                    // Move the line out and copy the (shorter) rest into a new buffer.
                    let rest = self.buf.split_off(end + 1);
                    let mut line = std::mem::replace(&mut self.buf, rest);
                    line.truncate(end);
                    self.start = 0;
                    line
                } else {
                    let line = self.buf.get(self.start..end).unwrap_or_default().to_vec();
                    self.start = end + 1;
                    line
                };
                if self.start == self.buf.len() {
                    self.clear();
                }
                self.scanned = self.start;
                Ok(Some(line))
            }
            None if self.buffered() > MAX_LINE => Err(TransportError::Protocol(format!(
                "reply longer than {MAX_LINE} bytes without a line end"
            ))),
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }

    /// Discards input up to and including the next [`SENTINEL`]. Returns whether one was
    /// found; if not, everything buffered was discarded.
    pub fn skip_past_sentinel(&mut self) -> bool {
        let tail = self.buf.get(self.start..).unwrap_or_default();
        match tail.iter().position(|&b| b == SENTINEL) {
            Some(i) => {
                self.start += i + 1;
                self.scanned = self.start;
                if self.start == self.buf.len() {
                    self.clear();
                }
                true
            }
            None => {
                self.clear();
                false
            }
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "return", borrow)]
    ret: Option<&'a RawValue>,
    error: Option<ErrorObject>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorObject {
    class: String,
    #[serde(default)]
    desc: String,
}

/// A parsed reply line: what the agent said and the request id it echoed, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReply {
    /// The reply itself.
    pub reply: AgentReply,
    /// The echoed `id`, as JSON text (`7`, `"abc"`).
    pub id: Option<String>,
}

/// Parses one reply line (a leading sentinel is tolerated).
pub fn parse_reply(line: &[u8]) -> Result<ParsedReply, TransportError> {
    let line = line.strip_prefix(&[SENTINEL]).unwrap_or(line);
    let env: Envelope<'_> = serde_json::from_slice(line).map_err(|e| {
        TransportError::Protocol(format!("unparsable agent reply ({e}): {}", preview(line)))
    })?;
    let id = env.id.map(|v| v.get().to_owned());
    let reply = match (env.ret, env.error) {
        (Some(r), None) => AgentReply::Return(r.get().as_bytes().to_vec()),
        (None, Some(e)) => AgentReply::Error {
            class: e.class,
            desc: e.desc,
        },
        _ => {
            return Err(TransportError::Protocol(format!(
                "reply has neither or both of return/error: {}",
                preview(line)
            )));
        }
    };
    Ok(ParsedReply { reply, id })
}

/// The start of a reply, for error messages.
pub fn preview(line: &[u8]) -> String {
    let cut = &line[..line.len().min(120)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > cut.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_arrive_in_pieces() {
        let mut f = Framer::new();
        f.buffer_mut()
            .extend_from_slice(b"{\"return\": {}}\n{\"ret");
        assert_eq!(f.next_line().unwrap().unwrap(), b"{\"return\": {}}");
        assert_eq!(f.next_line().unwrap(), None);
        f.buffer_mut().extend_from_slice(b"urn\": 1}\n");
        assert_eq!(f.next_line().unwrap().unwrap(), b"{\"return\": 1}");
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn mixed_big_and_small_lines_in_any_pieces_come_out_whole_and_in_order() {
        let lines: Vec<Vec<u8>> = (0..40usize)
            .map(|i| {
                let len = if i % 7 == 3 { 300_000 + i } else { i * 3 };
                (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect()
            })
            .collect();
        let stream: Vec<u8> = lines
            .iter()
            .flat_map(|l| [&l[..], b"\n"].concat())
            .collect();
        for piece in [1usize, 7, 4096, 65_536, 1 << 20] {
            let mut f = Framer::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                f.buffer_mut().extend_from_slice(chunk);
                while let Some(line) = f.next_line().unwrap() {
                    got.push(line);
                }
            }
            assert!(got == lines, "piece size {piece}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn sentinel_skips_stale_lines() {
        let mut f = Framer::new();
        f.buffer_mut()
            .extend_from_slice(b"{\"return\": {}, \"id\": \"stale\"}\n\xff{\"return\": 42}\n");
        assert!(f.skip_past_sentinel());
        let line = f.next_line().unwrap().unwrap();
        let p = parse_reply(&line).unwrap();
        assert_eq!(p.reply, AgentReply::Return(b"42".to_vec()));
        assert!(!f.skip_past_sentinel());
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn parses_errors_and_ids() {
        let p = parse_reply(
            br#"{"error": {"class": "CommandNotFound", "desc": "Command guest-shutdown has been disabled"}, "id": 9}"#,
        )
        .unwrap();
        assert_eq!(p.id.as_deref(), Some("9"));
        assert!(
            matches!(p.reply, AgentReply::Error { ref class, .. } if class == "CommandNotFound")
        );
        assert!(parse_reply(b"not json").is_err());
        assert!(parse_reply(br#"{"id": 1}"#).is_err());
    }

    #[test]
    fn oversized_line_is_refused() {
        let mut f = Framer::new();
        f.buffer_mut().resize(MAX_LINE + 1, b'a');
        assert!(f.next_line().is_err());
    }
}
