//! WriteFile: odd headers and message orders inside the agent's directory; no staging
//! entry is left behind.

use std::{
    collections::BTreeSet,
    fmt::Debug,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use ocloudview_atp::{
    pb::{WriteFileHeader, WriteFileRequest, WriteMode, write_file_request::Msg},
    policy::request::normalize_path,
};
use proptest::{collection::vec, prelude::*, sample::select};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::{bed::*, generators::*};

/// A file and a directory the write property may target.
const EXISTING: &str = "existing";
pub(crate) const SUBDIR: &str = "subdir";

#[derive(Debug, Clone, Copy)]
enum Order {
    /// Header, then data.
    Normal,
    /// No messages at all.
    Empty,
    /// Data first.
    DataFirst,
    /// Header, data, header again.
    HeaderTwice,
}

#[derive(Debug, Clone, Copy)]
enum Checksum {
    None,
    Right,
    Wrong,
    Length(usize),
}

#[derive(Debug, Clone)]
struct WriteCase {
    header: WriteFileHeader,
    checksum: Checksum,
    data: Vec<u8>,
    piece: usize,
    order: Order,
}

fn write_path(dir: String) -> impl Strategy<Value = String> {
    let existing = select(vec![EXISTING, SUBDIR, "", "state"]);
    prop_oneof![
        3 => existing.prop_map({
            let dir = dir.clone();
            move |name| format!("{dir}/{name}")
        }),
        8 => under(dir.clone()),
        1 => segment().prop_map(|s| format!("{NOWHERE}/{s}")),
        1 => segment().prop_map(|s| format!("relative/{s}")),
        1 => Just(String::new()),
        1 => with_nul(Just(format!("{dir}/{EXISTING}"))),
    ]
}

fn write_case(dir: String) -> impl Strategy<Value = WriteCase> {
    let mode = prop_oneof![
        12 => 0i32..=3,
        1 => Just(4i32),
        1 => Just(-1i32),
        1 => any::<i32>(),
    ];
    let permissions = prop_oneof![
        16 => Just(None),
        1 => Just(Some(0o644u32)),
        1 => Just(Some(0u32)),
        1 => Just(Some(0o7777u32)),
        1 => Just(Some(0o10000u32)),
        1 => Just(Some(u32::MAX)),
        1 => any::<u32>().prop_map(Some),
    ];
    let checksum = prop_oneof![
        6 => Just(Checksum::None),
        3 => Just(Checksum::Right),
        1 => Just(Checksum::Wrong),
        1 => select(vec![1usize, 31, 33, 64]).prop_map(Checksum::Length),
    ];
    let data = prop_oneof![
        2 => Just(Vec::new()),
        4 => vec(any::<u8>(), 0..512),
        1 => (1usize..=200_000).prop_map(|n| vec![b'w'; n]),
    ];
    let order = prop_oneof![
        20 => Just(Order::Normal),
        1 => Just(Order::Empty),
        1 => Just(Order::DataFirst),
        1 => Just(Order::HeaderTwice),
    ];
    (
        (
            domain(),
            write_path(dir),
            mode,
            permissions,
            prop::option::of(any::<bool>()),
        ),
        checksum,
        data,
        1usize..=70_000,
        order,
    )
        .prop_map(
            |((domain, path, mode, permissions, atomic), checksum, data, piece, order)| WriteCase {
                header: WriteFileHeader {
                    domain,
                    path,
                    mode,
                    permissions,
                    atomic,
                    expected_sha256: Vec::new(),
                },
                checksum,
                data,
                piece,
                order,
            },
        )
}

impl WriteCase {
    fn messages(&self) -> Vec<WriteFileRequest> {
        let mut header = self.header.clone();
        header.expected_sha256 = match self.checksum {
            Checksum::None => Vec::new(),
            Checksum::Right => Sha256::digest(&self.data).to_vec(),
            Checksum::Wrong => Sha256::digest(b"something else").to_vec(),
            Checksum::Length(n) => vec![0xab; n],
        };
        let header = WriteFileRequest {
            msg: Some(Msg::Header(header)),
        };
        let data = self.data.chunks(self.piece).map(|c| WriteFileRequest {
            msg: Some(Msg::Data(c.to_vec())),
        });
        match self.order {
            Order::Normal => std::iter::once(header).chain(data).collect(),
            Order::Empty => Vec::new(),
            Order::DataFirst => {
                let first = WriteFileRequest {
                    msg: Some(Msg::Data(b"first".to_vec())),
                };
                [first, header].into_iter().chain(data).collect()
            }
            Order::HeaderTwice => {
                let again = header.clone();
                std::iter::once(header)
                    .chain(data)
                    .chain(std::iter::once(again))
                    .collect()
            }
        }
    }
}

/// Staging directories of writes (`.atp-<32 hex>`, and the older temp files
/// `.atp-<32 hex>.tmp`) anywhere under `dir`.
pub(crate) fn temp_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_prefix(".atp-")
                .map(|n| n.strip_suffix(".tmp").unwrap_or(n));
            if id.is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())) {
                out.insert(p);
            }
        }
    }
    out
}

#[test]
fn write_file_answers_cleanly_to_odd_headers_and_streams() {
    let bed = Bed::start();
    let dir = bed.dir();
    std::fs::create_dir(format!("{dir}/{SUBDIR}")).unwrap();
    bed.check("WriteFile", write_case(dir.clone()), |case| {
        // A fresh existing file per case, so that TRUNCATE/EXCLUSIVE/APPEND see one.
        let existing = format!("{dir}/{EXISTING}");
        std::fs::write(&existing, b"before\n").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = bed.client();
        let res = bed.block(
            "WriteFile",
            c.write_file(tokio_stream::iter(case.messages())),
        )?;
        let leftovers = temp_files(Path::new(&dir));
        for p in &leftovers {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
        }
        prop_assert!(
            leftovers.is_empty(),
            "temp files left behind: {:?} (answer {:?})",
            leftovers,
            res.as_ref().map(|r| r.get_ref().bytes_written)
        );
        let resp = match res {
            // ALREADY_EXISTS is the documented answer of EXCLUSIVE on an existing file.
            Err(st) => return clean("WriteFile", &case, &st, &[Code::AlreadyExists]),
            Ok(r) => r.into_inner(),
        };
        seen("WriteFile", "OK");
        // OK means: the normalised path is now a regular file holding the data.
        prop_assert_eq!(resp.bytes_written, case.data.len() as u64);
        prop_assert_eq!(&resp.sha256, &Sha256::digest(&case.data).to_vec());
        let path = normalize_path(&case.header.path);
        prop_assert!(
            path.starts_with(&dir),
            "wrote outside the agent dir: {}",
            path
        );
        let meta = std::fs::metadata(&path);
        prop_assert!(
            meta.as_ref().is_ok_and(std::fs::Metadata::is_file),
            "WriteFile answered OK but {:?} is not a regular file ({:?})",
            path,
            meta.map(|m| m.file_type())
        );
        let now = std::fs::read(&path).unwrap();
        if case.header.mode == WriteMode::Append as i32 {
            prop_assert!(now.ends_with(&case.data), "append lost the data");
        } else {
            prop_assert!(
                now == case.data,
                "file holds {} bytes, sent {}",
                now.len(),
                case.data.len()
            );
        }
        // `permissions` apply to a file the write creates or replaces atomically; an
        // existing file written in place (APPEND, atomic = false) keeps its mode.
        let in_place =
            case.header.mode == WriteMode::Append as i32 || case.header.atomic == Some(false);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        if path == existing && in_place {
            prop_assert_eq!(
                mode,
                0o644,
                "an existing file written in place keeps its mode"
            );
        } else if let Some(p) = case.header.permissions {
            prop_assert_eq!(mode, p, "permissions");
        }
        if path != existing {
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    });
}
