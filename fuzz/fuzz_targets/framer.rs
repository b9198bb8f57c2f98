//! Fuzzes the agent reply framer and parser (`transport::framing`) the way the socket
//! transport drives them: the agent's bytes arrive in arbitrary pieces; between pieces the
//! reader takes lines, or (while syncing) skips past the 0xFF sentinel; every line taken is
//! parsed. Each input is replayed three ways: in one piece, one byte at a time, and in
//! pieces with operations chosen by a PRNG seeded from the input (so a crash file replays
//! exactly).
//!
//! Checked on every input:
//! - nothing panics, in the framer or in `parse_reply`;
//! - no returned line contains `\n`;
//! - every byte fed is accounted for: line bytes + their newlines + bytes dropped by
//!   `skip_past_sentinel`/`clear` + bytes still buffered == bytes fed (so lines + what
//!   remains never exceed the input);
//! - the framer agrees, line for line, with a naive reference framer;
//! - `next_line` never errors below `MAX_LINE` bytes;
//! - `parse_reply` ignores one leading sentinel, and the `return` and `id` it hands back
//!   are valid JSON text.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use ocloudview_atp::transport::{
    AgentReply,
    framing::{Framer, MAX_LINE, SENTINEL, parse_reply, preview},
};
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    // The whole input as one reply line, newlines and all.
    check_parse(data);

    replay(data, &mut Schedule::Whole);
    replay(data, &mut Schedule::ByteByByte);
    replay(data, &mut Schedule::Random(Rng::from_input(data)));
});

/// How the bytes arrive and what the reader does between pieces.
enum Schedule {
    Whole,
    ByteByByte,
    Random(Rng),
}

#[derive(Clone, Copy)]
enum Op {
    /// Take lines until none is complete (the normal read loop).
    Drain,
    /// Take at most one line (the reader stops early; lines pile up).
    One,
    /// Skip past the next sentinel (sync), then drain.
    Sync,
    /// Drop everything (reconnect).
    Clear,
    /// Nothing: wait for more bytes.
    Wait,
}

impl Schedule {
    /// The next piece's length (≥ 1, ≤ `left`) and what to do after it.
    fn next(&mut self, left: usize) -> (usize, Op) {
        match self {
            Schedule::Whole => (left, Op::Drain),
            Schedule::ByteByByte => (1, Op::Drain),
            Schedule::Random(rng) => {
                let len = match rng.below(4) {
                    0 => 1,
                    1 => 1 + rng.below(16) as usize,
                    2 => 1 + rng.below(left as u64) as usize,
                    _ => left,
                }
                .min(left);
                let op = match rng.below(32) {
                    0..=15 => Op::Drain,
                    16..=21 => Op::One,
                    22..=26 => Op::Sync,
                    27 => Op::Clear,
                    _ => Op::Wait,
                };
                (len, op)
            }
        }
    }
}

/// xorshift64, seeded with FNV-1a of the input.
struct Rng(u64);

impl Rng {
    fn from_input(data: &[u8]) -> Self {
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

/// A plain reference framer, for comparison: it notes where each newline is as bytes
/// arrive (so that it stays linear when fed one byte at a time) and keeps no other state.
#[derive(Default)]
struct Model {
    buf: VecDeque<u8>,
    /// Stream offset of `buf[0]`.
    base: usize,
    /// Stream offsets of the newlines in `buf`.
    newlines: VecDeque<usize>,
}

impl Model {
    fn push(&mut self, piece: &[u8]) {
        let end = self.base + self.buf.len();
        for (i, &b) in piece.iter().enumerate() {
            if b == b'\n' {
                self.newlines.push_back(end + i);
            }
        }
        self.buf.extend(piece);
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn drop_front(&mut self, n: usize) {
        self.buf.drain(..n);
        self.base += n;
        while self.newlines.front().is_some_and(|&p| p < self.base) {
            self.newlines.pop_front();
        }
    }

    fn next_line(&mut self) -> Option<Vec<u8>> {
        let at = *self.newlines.front()? - self.base;
        let line: Vec<u8> = self.buf.iter().take(at).copied().collect();
        self.drop_front(at + 1);
        Some(line)
    }

    fn skip_past_sentinel(&mut self) -> bool {
        match self.buf.iter().position(|&b| b == SENTINEL) {
            Some(i) => {
                self.drop_front(i + 1);
                true
            }
            None => {
                self.clear();
                false
            }
        }
    }

    fn clear(&mut self) {
        self.drop_front(self.buf.len());
    }
}

/// Byte accounting for one replay.
#[derive(Default)]
struct Tally {
    fed: usize,
    line_bytes: usize,
    lines: usize,
    dropped: usize,
}

fn replay(data: &[u8], schedule: &mut Schedule) {
    let mut framer = Framer::new();
    let mut model = Model::default();
    let mut t = Tally::default();
    let mut rest = data;
    while !rest.is_empty() {
        let (n, op) = schedule.next(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        framer.buffer_mut().extend_from_slice(piece);
        model.push(piece);
        t.fed += piece.len();
        match op {
            Op::Drain => drain(&mut framer, &mut model, &mut t),
            Op::One => {
                take_line(&mut framer, &mut model, &mut t);
            }
            Op::Sync => {
                let before = framer.buffered();
                let found = framer.skip_past_sentinel();
                assert_eq!(found, model.skip_past_sentinel(), "skip_past_sentinel");
                assert!(framer.buffered() <= before, "skip grew the buffer");
                t.dropped += before - framer.buffered();
                drain(&mut framer, &mut model, &mut t);
            }
            Op::Clear => {
                t.dropped += framer.buffered();
                framer.clear();
                model.clear();
            }
            Op::Wait => {}
        }
        check_tally(data, &framer, &model, &t);
    }
    drain(&mut framer, &mut model, &mut t);
    check_tally(data, &framer, &model, &t);
    assert_eq!(t.fed, data.len());
}

fn drain(framer: &mut Framer, model: &mut Model, t: &mut Tally) {
    while take_line(framer, model, t) {}
}

/// Takes one line from both framers, checks and parses it; false when none was complete.
fn take_line(framer: &mut Framer, model: &mut Model, t: &mut Tally) -> bool {
    let buffered = framer.buffered();
    let got = match framer.next_line() {
        Ok(line) => line,
        Err(e) => {
            assert!(
                buffered > MAX_LINE,
                "error with {buffered} bytes buffered: {e}"
            );
            return false;
        }
    };
    assert_eq!(got, model.next_line(), "framer and reference disagree");
    let Some(line) = got else {
        return false;
    };
    assert!(!line.contains(&b'\n'), "a line contains a newline");
    t.line_bytes += line.len();
    t.lines += 1;
    check_parse(&line);
    true
}

fn check_tally(data: &[u8], framer: &Framer, model: &Model, t: &Tally) {
    assert_eq!(framer.buffered(), model.len(), "buffered bytes");
    assert_eq!(
        t.line_bytes + t.lines + t.dropped + framer.buffered(),
        t.fed,
        "bytes fed are not accounted for"
    );
    assert!(t.line_bytes + framer.buffered() <= data.len());
}

fn check_parse(line: &[u8]) {
    let _ = preview(line);
    let parsed = parse_reply(line);
    if line.first() != Some(&SENTINEL) {
        let mut prefixed = Vec::with_capacity(line.len() + 1);
        prefixed.push(SENTINEL);
        prefixed.extend_from_slice(line);
        assert_eq!(
            parse_reply(&prefixed).ok(),
            parsed.as_ref().ok().cloned(),
            "a leading sentinel changed the parse"
        );
    }
    let Ok(p) = parsed else {
        return;
    };
    if let AgentReply::Return(raw) = &p.reply {
        assert!(
            serde_json::from_slice::<Box<RawValue>>(raw).is_ok(),
            "return is not JSON: {}",
            preview(raw)
        );
    }
    if let Some(id) = &p.id {
        assert!(
            serde_json::from_str::<Box<RawValue>>(id).is_ok(),
            "id is not JSON: {id}"
        );
    }
}
