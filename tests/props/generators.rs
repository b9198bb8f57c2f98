//! Generators shared by the properties: odd characters and strings, path segments and
//! paths that stay inside a directory, guest names, absurd sizes.

use proptest::{collection::vec, prelude::*, sample::select};

/// Characters that break naive code: newlines, quotes, shell and format metacharacters,
/// '=', combining marks, bidi overrides, BOM, noncharacters, emoji. NUL comes only from
/// [`with_nul`], where a generator asks for it.
pub(crate) fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        2 => proptest::char::range('a', 'z'),
        2 => select(vec![
            '\n', '\r', '\t', '\u{1b}', '\u{7f}', '\\', '=', '"', '\'', '$', '`', '*',
            '?', '%', ' ', '-', ':', ';', '&', '|', '\u{85}', '\u{a0}', '\u{fffd}', '\u{202e}',
            '\u{feff}', '\u{301}', '\u{200b}', '\u{fdd0}', '\u{10ffff}', 'é', 'ß', '€', '💥',
        ]),
    ]
}

pub(crate) fn odd_string(max: usize) -> impl Strategy<Value = String> {
    vec(odd_char(), 0..=max).prop_map(String::from_iter)
}

/// One path segment: no `/`, never `.` or `..`; sometimes around NAME_MAX (255 bytes).
pub(crate) fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => odd_string(20).prop_map(|s| s.replace('/', "_")),
        1 => (240usize..=300).prop_map(|n| "n".repeat(n)),
        1 => (60usize..=80).prop_map(|n| "é".repeat(n) + "💥".repeat(n / 4).as_str()),
    ]
    .prop_filter("a segment is never . or ..", |s| s != "." && s != "..")
}

/// `dir` plus segments joined by odd but harmless separators (`//`, `/./`, `/x/../`),
/// sometimes with a trailing `/` or `/.`: it stays inside `dir` after normalisation.
pub(crate) fn under(dir: String) -> impl Strategy<Value = String> {
    let sep = select(vec!["/", "/", "/", "//", "/./", "/zz/../"]);
    (
        vec((sep, segment()), 1..=3),
        select(vec!["", "", "", "/", "/."]),
    )
        .prop_map(move |(parts, tail)| {
            let mut p = dir.clone();
            for (s, seg) in parts {
                p.push_str(s);
                p.push_str(&seg);
            }
            p.push_str(tail);
            p
        })
}

/// Inserts NUL at a random character position.
pub(crate) fn with_nul(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (s, any::<prop::sample::Index>()).prop_map(|(s, i)| {
        let at = s
            .char_indices()
            .map(|(b, _)| b)
            .nth(i.index(s.chars().count() + 1))
            .unwrap_or(s.len());
        let mut s = s;
        s.insert(at, '\0');
        s
    })
}

/// The guest name: mostly the real one, so that requests get past resolution.
pub(crate) fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => Just("host".to_owned()),
        1 => Just(String::new()),
        1 => odd_string(24),
        1 => with_nul(Just("host".to_owned())),
        1 => odd_string(8).prop_map(|s| format!("host/{s}")),
        1 => odd_string(8).prop_map(|s| format!("{s}/host")),
        1 => (1usize..=100_000).prop_map(|n| "h".repeat(n)),
    ]
}

pub(crate) fn absurd_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => Just(0u64),
        6 => 0u64..=1024,
        1 => Just(1u64 << 40),
        1 => Just(i64::MAX as u64),
        1 => Just(i64::MAX as u64 + 1),
        1 => Just(u64::MAX - 1),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

pub(crate) fn chunk_size() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1u32),
        2u32..=64,
        Just(1u32 << 20),
        Just(u32::MAX),
        any::<u32>(),
    ]
}
