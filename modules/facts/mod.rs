//! Typed facts: every reading of a host that modules share, one file per family (see
//! [`crate::module::fact`]). Each parser is tested against fixtures of real hosts' output in
//! `tests/facts/`.

pub mod accounts;
pub mod block;
pub mod bridge;
pub mod grub;
pub mod hugepages;
pub mod ip;
pub mod kmod;
pub mod libvirt;
pub mod libvirt_volume;
pub mod netdev;
pub mod netplan;
pub mod networkmanager;
pub mod packages;
pub mod pci;
pub mod ssh;
pub mod storage;
pub mod systemd;
pub mod vfio;
pub mod virt;

/// What a command probe prints when run on this machine (tests that check a probe against a
/// real shell and the tools this machine has).
#[cfg(test)]
pub fn run_here(probe: &crate::module::Probe) -> crate::module::Observation {
    use crate::module::{CommandOutput, Observation, Probe};
    let Probe::Command(cmd) = probe else {
        panic!("not a command probe: {probe:?}")
    };
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    Observation::Command(CommandOutput {
        rc: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A fixture from `tests/facts/` (tests).
#[cfg(test)]
pub fn fixture_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/facts")
        .join(path)
}

#[cfg(test)]
pub fn fixture(path: &str) -> String {
    let p = fixture_path(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
