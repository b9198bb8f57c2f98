//! ReadFile: odd paths, offsets and chunk sizes inside the agent's directory.

use ocloudview_atp::{pb::ReadFileRequest, policy::request::normalize_path};
use proptest::{prelude::*, sample::select, test_runner::TestCaseError};
use sha2::{Digest, Sha256};

use crate::{bed::*, generators::*};

/// Files the read property finds in the agent's directory.
const DATA: &str = "data";
const EMPTY: &str = "empty";

fn read_path(dir: String) -> impl Strategy<Value = String> {
    let existing = select(vec![DATA, EMPTY, "", "state", "qga.log", "qga.sock"]);
    prop_oneof![
        6 => existing.prop_map({
            let dir = dir.clone();
            move |name| format!("{dir}/{name}")
        }),
        1 => Just(format!("{dir}/./zz/..//{DATA}")),
        3 => under(dir.clone()),
        1 => segment().prop_map(|s| format!("{NOWHERE}/{s}")),
        1 => segment().prop_map(|s| format!("relative/{s}")),
        1 => segment().prop_map(|s| format!("C:\\atp-props\\{s}")),
        1 => Just(String::new()),
        1 => with_nul(Just(format!("{dir}/{DATA}"))),
    ]
}

fn read_request(dir: String) -> impl Strategy<Value = ReadFileRequest> {
    (
        domain(),
        read_path(dir),
        absurd_u64(),
        absurd_u64(),
        chunk_size(),
    )
        .prop_map(
            |(domain, path, offset, length, chunk_size)| ReadFileRequest {
                domain,
                path,
                offset,
                length,
                chunk_size,
            },
        )
}

#[test]
fn read_file_answers_cleanly_to_odd_paths_offsets_and_chunk_sizes() {
    let bed = Bed::start();
    let dir = bed.dir();
    let content: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(format!("{dir}/{DATA}"), &content).unwrap();
    std::fs::write(format!("{dir}/{EMPTY}"), b"").unwrap();
    bed.check("ReadFile", read_request(dir.clone()), |req| {
        let mut c = bed.client();
        let mut s = match bed.block("ReadFile", c.read_file(req.clone()))? {
            Err(st) => return clean("ReadFile", &req, &st, &[]),
            Ok(s) => s.into_inner(),
        };
        let mut data = Vec::new();
        let last = loop {
            match bed.block("ReadFile stream", s.message())? {
                Ok(Some(chunk)) => {
                    prop_assert_eq!(
                        chunk.offset,
                        req.offset.wrapping_add(data.len() as u64),
                        "chunk offset"
                    );
                    data.extend_from_slice(&chunk.data);
                    if chunk.eof {
                        break chunk;
                    }
                }
                Ok(None) => {
                    return Err(TestCaseError::fail(format!(
                        "ReadFile stream ended without eof or an error: {}",
                        short(&req)
                    )));
                }
                Err(st) => return clean("ReadFile (stream)", &req, &st, &[]),
            }
        };
        prop_assert!(
            bed.block("ReadFile end", s.message())?
                .is_ok_and(|m| m.is_none()),
            "messages after eof"
        );
        prop_assert_eq!(last.total_bytes, data.len() as u64);
        seen(
            "ReadFile",
            if data.is_empty() {
                "OK, empty"
            } else {
                "OK, data"
            },
        );
        prop_assert_eq!(last.sha256, Sha256::digest(&data).to_vec());
        if req.length > 0 {
            prop_assert!(data.len() as u64 <= req.length, "read past the length");
        }
        // The files we made: exactly the bytes asked for.
        let path = normalize_path(&req.path);
        let ours = if path == format!("{dir}/{DATA}") {
            Some(&content[..])
        } else if path == format!("{dir}/{EMPTY}") {
            Some(&[][..])
        } else {
            None
        };
        if let Some(file) = ours {
            let from = usize::try_from(req.offset).map_or(file.len(), |o| o.min(file.len()));
            let mut want = &file[from..];
            if req.length > 0 {
                want =
                    &want[..usize::try_from(req.length).map_or(want.len(), |l| l.min(want.len()))];
            }
            prop_assert!(
                data == want,
                "read {} bytes, expected {} (offset {}, length {})",
                data.len(),
                want.len(),
                req.offset,
                req.length
            );
        }
        Ok(())
    });
}
