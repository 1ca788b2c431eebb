//! Network changes over real SSH against lab hosts whose NIC is configured by netplan, as on an
//! Ubuntu server: a bridge over the only NIC (the one carrying SSH) converges and the host stays
//! reachable; a bridge with an address the controller cannot reach is rolled back by the host
//! itself, directly and through a jump host. Needs root; skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run the binary with a playbook against one host of the lab's own inventory.
fn kvmforge(
    lab: &lab::Lab,
    dir: &std::path::Path,
    host: &str,
    playbook: &str,
    args: &[&str],
) -> Output {
    let pb = dir.join(format!("{host}.yaml"));
    std::fs::write(&pb, playbook).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["-l", host, "--connect-timeout", "5", "-v"])
        .args(args)
        .output()
        .unwrap()
}

/// Run a command on a host without ssh (works whatever its network looks like).
fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    String::from_utf8_lossy(&lab.exec(host, cmd).stdout).into_owned()
}

/// The host's NIC on the lab network and its address with prefix.
fn nic(lab: &lab::Lab, host: &str) -> (String, String) {
    let addr = lab.addr(host).to_string();
    let line = on(
        lab,
        host,
        &format!(
            "ip -o -4 addr show | awk '$4 ~ /^{}\\// {{print $2, $4}}'",
            addr.replace('.', "\\.")
        ),
    );
    let mut f = line.split_whitespace();
    let (n, a) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
    assert!(!n.is_empty(), "no NIC with {addr} on {host}: {line}");
    (n.to_string(), a.to_string())
}

fn bridge_play(nic: &str, address: &str, extra: &str) -> String {
    format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: bridge over the only NIC\n      \
         netplan_bridge:\n        name: br0\n        interfaces: [{nic}]\n        addresses: [{address}]\n        \
         take_over: true\n{extra}"
    )
}

/// Every netplan file with its checksum.
fn netplan_files(lab: &lab::Lab, host: &str) -> String {
    on(lab, host, "cd /etc/netplan && sha256sum *.yaml")
}

/// A bridge whose address the controller cannot reach: the host rolls it back by itself.
fn rolled_back(lab: &lab::Lab, dir: &std::path::Path, host: &str) {
    let (nic, _) = nic(lab, host);
    let before = netplan_files(lab, host);
    let started = std::time::Instant::now();
    let out = kvmforge(
        lab,
        dir,
        host,
        &bridge_play(&nic, "10.99.0.5/24", "      rollback_timeout: 15\n"),
        &[],
    );
    assert_eq!(code(&out), 2, "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("rolled back"), "{t}");
    assert!(t.contains("guard: not confirmed"), "{t}");
    // The host answers at its old address again, well within the timeout plus a margin.
    assert!(
        started.elapsed().as_secs() < 15 + 60,
        "took {:?}",
        started.elapsed()
    );
    let ssh = lab.ssh(host, "ip -4 -o addr show");
    assert!(ssh.status.success(), "{}", text(&ssh));
    assert_eq!(
        netplan_files(lab, host),
        before,
        "netplan files differ after the rollback"
    );
    assert!(
        !lab.exec(host, "ip link show br0").status.success(),
        "br0 is still there after the rollback"
    );
    assert_eq!(
        on(lab, host, "ls /var/lib/kvmforge/guard 2>/dev/null | wc -l").trim(),
        "0"
    );
}

#[test]
fn netplan_bridge_over_the_ssh_nic_confirmed_or_rolled_back() {
    let Some(lab) = lab::Lab::up("e2e-net", 1, Some(1)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // Wrong address: not confirmed, rolled back, directly and through the jump host.
    rolled_back(&lab, dir.path(), "h1");
    rolled_back(&lab, dir.path(), "v1");

    // The same address on a bridge over the NIC: converges, the host stays reachable.
    let (nic, addr) = nic(&lab, "h1");
    let play = bridge_play(&nic, &addr, "");
    let out = kvmforge(&lab, dir.path(), "h1", &play, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert!(
        text(&out).contains("guard: rollback disarmed"),
        "{}",
        text(&out)
    );
    let shown = String::from_utf8_lossy(
        &lab.ssh("h1", "ip -4 -o addr show br0; ip -o link show master br0")
            .stdout,
    )
    .into_owned();
    assert!(shown.contains(&addr), "{shown}");
    assert!(shown.contains(&format!(" {nic}")), "{shown}");
    // Second run: nothing to do.
    let out = kvmforge(&lab, dir.path(), "h1", &play, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // A hand-made change is drift in check mode.
    on(&lab, "h1", "ip link set br0 type bridge stp_state 1");
    let out = kvmforge(
        &lab,
        dir.path(),
        "h1",
        &play,
        &["--check", "--detailed-exitcode"],
    );
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert!(text(&out).contains("rollback armed"), "{}", text(&out));
}
