//! Checking a log file from its first line: reports the first broken record. A log cut
//! after a complete record still verifies; compare `last_hash` with a copy kept elsewhere.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use super::record::{self, GENESIS};

/// Bytes read at a time from the end of a log.
const CHUNK: u64 = 64 * 1024;
const TRUNCATED: &str = "truncated: no newline at the end of the file";

/// A log whose chain is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records (0 for an empty file).
    pub records: u64,
    /// `hash` of the last record ([`GENESIS`] for an empty file).
    pub last_hash: String,
}

/// Why a log does not verify. Messages include their cause (no `source()` chain).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The first broken record.
    #[error("record broken at line {line} (seq {}): {reason}", seq_text(*.seq))]
    Broken {
        /// 1-based line number.
        line: u64,
        /// The record's seq, when it can be read.
        seq: Option<u64>,
        /// What is wrong: unparsable or truncated line, seq gap, `prev` or hash mismatch.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}

/// A broken chain in a named file, as `atp audit verify` reports it; a type of its own so
/// the CLI can give it a distinct exit code.
#[derive(Debug, thiserror::Error)]
#[error("{}: record broken at line {line} (seq {}): {reason}", .path.display(), seq_text(*.seq))]
pub struct ChainBroken {
    /// The log file.
    pub path: PathBuf,
    /// 1-based line number of the first broken record.
    pub line: u64,
    /// Its seq, when it can be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

fn seq_text(seq: Option<u64>) -> String {
    seq.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
}

/// Reads the whole log and checks every record: a complete line that parses, `seq` one
/// more than the previous, `prev` equal to the previous `hash`, and its own `hash`.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    scan(path, None).map(|(report, _)| report)
}

/// Like [`verify`], and the log must still hold the record `anchor` names (exported
/// earlier with `atp audit head`, or read from the log's head file): a log cut after a
/// complete record verifies on its own, not against an anchor past its end.
pub fn verify_against(
    path: &Path,
    anchor: &super::head::Anchor,
) -> Result<VerifyReport, VerifyError> {
    let (report, found) = scan(path, Some(anchor.seq))?;
    let reason = match found {
        Some(h) if h == anchor.hash => return Ok(report),
        Some(h) => format!(
            "record {} has hash {h}, the anchor {anchor} says otherwise: the log was replaced",
            anchor.seq
        ),
        None => format!(
            "the log ends at seq {}, before the anchor's seq {}: records were removed from its end",
            report.records, anchor.seq
        ),
    };
    Err(VerifyError::Broken {
        line: report.records + 1,
        seq: Some(anchor.seq),
        reason,
    })
}

/// Checks the whole chain; also returns the hash of record `want`, if present.
fn scan(path: &Path, want: Option<u64>) -> Result<(VerifyReport, Option<String>), VerifyError> {
    let io = |error| VerifyError::Io {
        path: path.to_owned(),
        error,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let (mut records, mut last_hash, mut buf) = (0, GENESIS.to_owned(), Vec::new());
    let mut found = None;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok((VerifyReport { records, last_hash }, found));
        }
        let line = records + 1;
        let broken = |seq, reason| VerifyError::Broken { line, seq, reason };
        let Some(text) = buf.strip_suffix(b"\n") else {
            return Err(broken(leading_seq(&buf), TRUNCATED.to_owned()));
        };
        let head = record::parse(text).map_err(|r| broken(leading_seq(text), r))?;
        let seq = Some(head.seq);
        record::check_seal(text, &head).map_err(|r| broken(seq, r))?;
        if head.seq != line {
            let reason = format!("seq {} where {line} was expected", head.seq);
            return Err(broken(seq, reason));
        }
        if head.prev != last_hash {
            let reason = "prev is not the hash of the previous record".to_owned();
            return Err(broken(seq, reason));
        }
        if Some(head.seq) == want {
            found = Some(head.hash.clone());
        }
        (records, last_hash) = (head.seq, head.hash);
    }
}

/// The seq of a line too broken to parse, if its start is intact.
fn leading_seq(text: &[u8]) -> Option<u64> {
    let rest = text.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The seq and hash of the last record of a log of `len` bytes, read from its end without
/// checking the rest: how [`AuditLog`](super::AuditLog) continues a chain.
pub(super) fn chain_head(file: &File, len: u64, path: &Path) -> Result<(u64, String), VerifyError> {
    let io = |error| VerifyError::Io {
        path: path.to_owned(),
        error,
    };
    if len == 0 {
        return Ok((0, GENESIS.to_owned()));
    }
    let broken = |seq, reason| match count_lines(file, len) {
        Ok(line) => VerifyError::Broken { line, seq, reason },
        Err(e) => io(e),
    };
    let line = last_line(file, len).map_err(io)?;
    let Some(text) = line.strip_suffix(b"\n") else {
        return Err(broken(leading_seq(&line), TRUNCATED.to_owned()));
    };
    let head = record::unseal(text).map_err(|r| broken(leading_seq(text), r))?;
    Ok((head.seq, head.hash))
}

/// The last line of a non-empty file, with its `\n` if it has one.
fn last_line(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let (mut tail, mut end) = (Vec::new(), len);
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0; (end - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        let search = chunk.len() - usize::from(end == len); // not the final '\n'
        if let Some(i) = chunk[..search].iter().rposition(|&b| b == b'\n') {
            chunk.drain(..=i);
            chunk.extend_from_slice(&tail);
            return Ok(chunk);
        }
        chunk.extend_from_slice(&tail);
        (tail, end) = (chunk, start);
    }
    Ok(tail)
}

/// The 1-based number of the last line of a non-empty file.
fn count_lines(file: &File, len: u64) -> io::Result<u64> {
    let (mut newlines, mut pos, mut buf) = (0, 0, vec![0; CHUNK as usize]);
    let mut last = b'\n';
    while pos < len {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        newlines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        (last, pos) = (buf[n - 1], pos + n as u64);
    }
    Ok(newlines + u64::from(last != b'\n'))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::audit::record::{seal, tests::entry};

    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let (line, hash) = seal(seq, "t", &prev, &entry()).unwrap();
                prev = hash;
                line
            })
            .collect()
    }

    fn check(lines: &[Vec<u8>]) -> Result<VerifyReport, VerifyError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&lines.concat()).unwrap();
        verify(file.path())
    }

    fn broken_at(lines: &[Vec<u8>]) -> (u64, Option<u64>, String) {
        match check(lines) {
            Err(VerifyError::Broken { line, seq, reason }) => (line, seq, reason),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_intact_logs_verify() {
        assert_eq!(check(&[]).unwrap().records, 0);
        let lines = chain(3);
        let report = check(&lines).unwrap();
        assert_eq!(report.records, 3);
        assert_eq!(
            record::unseal(&lines[2][..lines[2].len() - 1])
                .unwrap()
                .hash,
            report.last_hash
        );
    }

    #[test]
    fn reports_the_first_broken_record() {
        let mut lines = chain(4);
        lines.remove(1);
        let (line, seq, reason) = broken_at(&lines);
        assert_eq!((line, seq), (2, Some(3)), "{reason}");
        let mut lines = chain(4);
        lines[1] = seal(2, "t", GENESIS, &entry()).unwrap().0;
        assert_eq!(broken_at(&lines).0, 2, "prev of another chain");
        let mut lines = chain(3);
        let last = lines.pop().unwrap();
        lines.push(last[..last.len() - 1].to_vec());
        let (line, seq, reason) = broken_at(&lines);
        assert_eq!((line, seq), (3, Some(3)));
        assert!(reason.contains("truncated"), "{reason}");
    }

    #[test]
    fn chain_broken_names_file_line_and_seq() {
        let e = ChainBroken {
            path: "/a.log".into(),
            line: 5,
            seq: None,
            reason: "x".into(),
        };
        assert_eq!(
            e.to_string(),
            "/a.log: record broken at line 5 (seq unknown): x"
        );
    }
}
