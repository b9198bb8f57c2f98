//! WriteFile and names: every legal file name is taken, and a directory is never replaced.

use std::path::Path;

use ocloudview_atp::pb::{WriteFileHeader, WriteFileRequest, write_file_request::Msg};
use proptest::{collection::vec, prelude::*, sample::select, test_runner::TestCaseError};
use tonic::Code;

use crate::{
    bed::*,
    generators::*,
    write::{SUBDIR, temp_files},
};

/// A legal file name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`, and no Unicode
/// noncharacter (which the agent's JSON parser refuses); often close to 255 bytes.
fn legal_name() -> impl Strategy<Value = String> {
    let ok = |c: &char| {
        let u = u32::from(*c);
        *c != '/' && *c != '\0' && !(0xFDD0..=0xFDEF).contains(&u) && (u & 0xFFFE) != 0xFFFE
    };
    let chars = vec(odd_char().prop_filter("legal in a name", ok), 1..=255);
    prop_oneof![
        chars.prop_map(String::from_iter),
        (1usize..=255).prop_map(|n| "n".repeat(n)),
        (200usize..=255).prop_map(|n| "n".repeat(n)),
    ]
    .prop_map(|s| {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    })
    .prop_filter("a name is never . or ..", |s| s != "." && s != "..")
}

#[test]
fn write_file_takes_every_legal_file_name() {
    let bed = Bed::start();
    let dir = bed.dir();
    let case = (
        legal_name(),
        prop::option::of(any::<bool>()),
        vec(any::<u8>(), 0..64),
    );
    bed.check("Legal names", case, |(name, atomic, data)| {
        let path = format!("{dir}/{name}");
        let header = WriteFileHeader {
            domain: "host".into(),
            path: path.clone(),
            atomic,
            ..Default::default()
        };
        let msgs = vec![
            WriteFileRequest {
                msg: Some(Msg::Header(header)),
            },
            WriteFileRequest {
                msg: Some(Msg::Data(data.clone())),
            },
        ];
        let mut c = bed.client();
        let res = bed.block("WriteFile", c.write_file(tokio_stream::iter(msgs)))?;
        let written = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        match res {
            Ok(_) => seen("Legal names", "OK"),
            Err(st) => {
                seen("Legal names", &format!("{:?}", st.code()));
                return Err(TestCaseError::fail(format!(
                    "a {}-byte name was refused: {:?} ({}), atomic {atomic:?}",
                    name.len(),
                    st.code(),
                    short(&st.message())
                )));
            }
        }
        prop_assert!(
            written.is_ok_and(|w| w == data),
            "the file does not hold the data"
        );
        Ok(())
    });
}

#[test]
fn write_file_never_replaces_a_directory() {
    let bed = Bed::start();
    let dir = bed.dir();
    std::fs::create_dir(format!("{dir}/{SUBDIR}")).unwrap();
    let case = (
        select(vec!["", SUBDIR, "state"]),
        select(vec!["", "/", "/."]),
        0i32..=3,
        prop::option::of(any::<bool>()),
        vec(any::<u8>(), 0..64),
    );
    bed.check("Directories", case, |(name, tail, mode, atomic, data)| {
        let path = format!("{dir}/{name}{tail}");
        let header = WriteFileHeader {
            domain: "host".into(),
            path: path.clone(),
            mode,
            atomic,
            ..Default::default()
        };
        let msgs = vec![
            WriteFileRequest {
                msg: Some(Msg::Header(header.clone())),
            },
            WriteFileRequest {
                msg: Some(Msg::Data(data)),
            },
        ];
        let mut c = bed.client();
        let res = bed.block("WriteFile", c.write_file(tokio_stream::iter(msgs)))?;
        let leftovers = temp_files(Path::new(&dir));
        for p in &leftovers {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
        }
        let answer = match &res {
            Ok(r) => format!("OK ({} bytes)", r.get_ref().bytes_written),
            Err(st) => format!("{:?}", st.code()),
        };
        seen("Directories", answer.split(' ').next().unwrap_or_default());
        prop_assert!(
            res.is_err(),
            "WriteFile to the directory {} answered {}; files left: {:?}",
            path,
            answer,
            leftovers
        );
        prop_assert!(
            leftovers.is_empty(),
            "temp files left behind: {:?}",
            leftovers
        );
        if let Err(st) = &res {
            clean("Directories", &header, st, &[Code::AlreadyExists])?;
        }
        Ok(())
    });
}
