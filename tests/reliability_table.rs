//! The README's "Reliability" table names the tests that try each fault and bad input: every
//! test it names exists, and every test of the fault and bad-input files is in it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rows of the README's "Reliability" table.
fn table() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("\n## Reliability\n")
        .expect("README has a Reliability section");
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1)
        .map(String::from)
        .collect()
}

/// `a::b::name` in backticks in the test column (the second).
fn cited(row: &str) -> Vec<String> {
    let cells: Vec<&str> = row.split(" | ").collect();
    assert!(cells.len() >= 3, "a row without a test column: {row}");
    cells[1]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Where a cited test lives: `FILE::name` is `tests/FILE.rs`; `a::b::tests::name` is a unit test
/// in `src/a/b.rs` (or `src/a/b/mod.rs`, or `modules/...`).
fn file_of(path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = path.split("::").collect();
    let (modules, _) = parts.split_at(parts.len() - 1);
    if modules.len() == 1 {
        let p = root().join("tests").join(format!("{}.rs", modules[0]));
        if p.exists() {
            return Some(p);
        }
    }
    let modules: Vec<&str> = modules.iter().copied().filter(|m| *m != "tests").collect();
    let rel = modules.join("/");
    [
        format!("src/{rel}.rs"),
        format!("src/{rel}/mod.rs"),
        format!("{rel}.rs"),
        format!("{rel}/mod.rs"),
    ]
    .into_iter()
    .map(|p| root().join(p))
    .find(|p| p.exists())
}

fn has_test(file: &Path, name: &str) -> bool {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        l.trim_start().starts_with(&format!("fn {name}("))
            && lines[..i]
                .iter()
                .rev()
                .take(4)
                .any(|p| p.trim() == "#[test]")
    })
}

#[test]
fn every_test_the_table_names_exists() {
    let rows = table();
    assert!(rows.len() >= 10, "{rows:?}");
    for row in &rows {
        let tests = cited(row);
        assert!(!tests.is_empty(), "a row names no test: {row}");
        for t in tests {
            let file = file_of(&t).unwrap_or_else(|| panic!("`{t}`: no such test file"));
            let name = t.rsplit("::").next().unwrap();
            assert!(
                has_test(&file, name),
                "`{t}`: no #[test] fn {name} in {}",
                file.display()
            );
        }
    }
}

#[test]
fn every_fault_and_bad_input_test_is_in_the_table() {
    let cited: Vec<String> = table().iter().flat_map(|r| cited(r)).collect();
    for file in ["faults_e2e", "bad_input", "parsers_proptest"] {
        let text = std::fs::read_to_string(root().join(format!("tests/{file}.rs"))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let Some(rest) = l.trim_start().strip_prefix("fn ") else {
                continue;
            };
            let name = rest.split('(').next().unwrap();
            let is_test = lines[..i]
                .iter()
                .rev()
                .take(4)
                .any(|p| p.trim() == "#[test]")
                || text.contains("proptest!") && l.starts_with("    fn ");
            if is_test {
                let full = format!("{file}::{name}");
                assert!(
                    cited.contains(&full),
                    "`{full}` is not in the README's table"
                );
            }
        }
    }
}
