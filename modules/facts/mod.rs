//! Typed facts: every reading of a host that modules share, one file per family (see
//! [`crate::module::fact`]). Each parser is tested against fixtures of real hosts' output in
//! `tests/facts/`.

pub mod accounts;
pub mod bridge;
pub mod ip;
pub mod libvirt;
pub mod packages;
pub mod pci;
pub mod systemd;

/// A fixture from `tests/facts/` (tests).
#[cfg(test)]
pub fn fixture(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/facts")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
