//! The documentation of the shipped policies says what `policies/` holds: the plugin
//! list and the number of cases in docs/policies.md and README.md follow the files.
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
