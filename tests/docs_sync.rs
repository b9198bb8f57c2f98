//! The documentation of the shipped policies says what `policies/` holds: the plugin
//! list and the number of cases in docs/policies.md and README.md follow the files, and
//! docs/api.md lists every error reason with its gRPC code.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn plugins() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rhai").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn cases() -> usize {
    let text = std::fs::read_to_string(root().join("policies/cases.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    table["case"].as_array().unwrap().len()
}

const NUMBERS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

#[test]
fn policies_md_lists_every_shipped_plugin_and_the_case_count() {
    let doc = std::fs::read_to_string(root().join("docs/policies.md")).unwrap();
    let start = doc.find("## The shipped plugins").unwrap();
    let end = start + doc[start..].find("\n## ").unwrap();
    let section = &doc[start..end];
    let documented: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
        .map(str::to_owned)
        .collect();
    assert_eq!(documented, plugins(), "plugin headings in docs/policies.md");
    let n = plugins().len();
    let count = format!(
        "holds {} plugins",
        NUMBERS.get(n).copied().unwrap_or("many")
    );
    assert!(
        section.contains(&count),
        "docs/policies.md should say {count:?}"
    );
    let c = format!("({} cases", cases());
    assert!(section.contains(&c), "docs/policies.md should say {c:?}");
}

#[test]
fn readme_states_the_case_count() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let c = format!("# {} request → decision cases", cases());
    assert!(readme.contains(&c), "README.md should say {c:?}");
}

/// A gRPC code as the docs spell it (`InvalidArgument` → `INVALID_ARGUMENT`).
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn api_md_lists_every_error_reason_with_its_code() {
    use ocloudview_atp::server::reason::Reason;
    let doc = std::fs::read_to_string(root().join("docs/api.md")).unwrap();
    let start = doc.find("\n## Error reasons").unwrap() + 1;
    let end = start + doc[start..].find("\n## ").unwrap();
    let rows: Vec<(String, String)> = doc[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_owned(), cells[2].to_owned())
        })
        .collect();
    let want: Vec<(String, String)> = Reason::ALL
        .iter()
        .map(|r| {
            let code = if *r == Reason::GuestError {
                "by the agent's text".to_owned()
            } else {
                format!("`{}`", code_name(r.code()))
            };
            (format!("`{}`", r.as_str()), code)
        })
        .collect();
    assert_eq!(rows, want, "docs/api.md ## Error reasons: reason | code");
}
