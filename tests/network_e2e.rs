//! Network changes over real SSH against lab hosts whose NIC is configured by netplan, as on an
//! Ubuntu server: a bridge over the only NIC (the one carrying SSH) converges and the host stays
//! reachable; a bridge with an address the controller cannot reach is rolled back by the host
//! itself, directly, through a jump host, as a sudo user, on two hosts at once; and the same
//! with nm_bridge on a host whose NIC NetworkManager manages. Needs root; skipped loudly
//! otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};

use lab::{exit_code as code, output_text as text};

/// Run the binary with a playbook against hosts of the lab's own inventory.
fn kvmforge(
    lab: &lab::Lab,
    dir: &std::path::Path,
    hosts: &str,
    playbook: &str,
    args: &[&str],
) -> Output {
    kvmforge_with(&lab.inventory, dir, hosts, playbook, args)
}

fn kvmforge_with(
    inventory: &std::path::Path,
    dir: &std::path::Path,
    hosts: &str,
    playbook: &str,
    args: &[&str],
) -> Output {
    let pb = dir.join(format!("{}.yaml", hosts.replace(':', "-")));
    std::fs::write(&pb, playbook).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(inventory)
        .args(["-l", hosts, "--connect-timeout", "5", "-v"])
        .args(args)
        .output()
        .unwrap()
}

/// Run a command on a host without ssh (works whatever its network looks like).
fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    String::from_utf8_lossy(&lab.exec(host, cmd).stdout).into_owned()
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

/// Bridges whose address the controller cannot reach, on `hosts` at once: each host rolls its
/// own back. `become` runs the play as another user through sudo, with the password given.
fn rolled_back(lab: &lab::Lab, dir: &std::path::Path, hosts: &[&str], become_as: Option<&str>) {
    let before: Vec<String> = hosts.iter().map(|h| netplan_files(lab, h)).collect();
    let nics: Vec<String> = hosts.iter().map(|h| lab.nic(h).0).collect();
    assert!(
        nics.iter().all(|n| n == &nics[0]),
        "hosts differ in NIC names: {nics:?}"
    );
    let mut play = bridge_play(&nics[0], "10.99.0.5/24", "      rollback_timeout: 15\n");
    let mut args: Vec<String> = Vec::new();
    let mut inventory = lab.inventory.clone();
    if let Some(user) = become_as {
        // The lab's inventory, logging in as `user` instead of root.
        inventory = dir.join(format!("inventory-{user}.yaml"));
        let text = std::fs::read_to_string(&lab.inventory).unwrap();
        assert!(text.contains("ansible_user: root"), "{text}");
        std::fs::write(
            &inventory,
            text.replace("ansible_user: root", &format!("ansible_user: {user}")),
        )
        .unwrap();
        play = play.replace(
            "  gather_facts: false\n",
            "  gather_facts: false\n  become: true\n",
        );
        let pw = dir.join("pw");
        std::fs::write(&pw, format!("{}\n", lab::KF_PASSWORD)).unwrap();
        args.push("--become-password-file".into());
        args.push(pw.display().to_string());
    }
    let started = std::time::Instant::now();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kvmforge_with(&inventory, dir, &hosts.join(":"), &play, &args);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let t = text(&out);
    if let Some(user) = become_as {
        // It really logged in as that user.
        assert!(!t.contains("needs root"), "{t}");
        let who = lab.ssh_as(user, hosts[0], "id -un");
        assert_eq!(
            String::from_utf8_lossy(&who.stdout).trim(),
            user,
            "{}",
            text(&who)
        );
    }
    assert!(!t.contains(lab::KF_PASSWORD), "{t}");
    for h in hosts {
        assert!(t.contains(&format!("failed: [{h}]")), "{t}");
    }
    assert_eq!(t.matches("rolled back;").count(), hosts.len(), "{t}");
    assert!(t.contains("guard: not confirmed"), "{t}");
    // Back at the old address well within the timeout plus a margin, all of them.
    assert!(
        started.elapsed().as_secs() < 15 + 60,
        "took {:?}",
        started.elapsed()
    );
    for (h, before) in hosts.iter().zip(before) {
        let ssh = lab.ssh(h, "ip -4 -o addr show");
        assert!(ssh.status.success(), "{h}: {}", text(&ssh));
        assert_eq!(
            netplan_files(lab, h),
            before,
            "{h}: netplan files differ after the rollback"
        );
        assert!(
            !lab.exec(h, "ip link show br0").status.success(),
            "{h}: br0 is still there after the rollback"
        );
        assert_eq!(
            on(lab, h, "ls /var/lib/kvmforge/guard 2>/dev/null | wc -l").trim(),
            "0"
        );
    }
}

#[test]
fn netplan_bridge_over_the_ssh_nic_confirmed_or_rolled_back() {
    let Some(lab) = lab::Lab::up("e2e-net", 2, Some(1)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // Wrong address: not confirmed, rolled back — on two hosts at once (each its own timer),
    // and through the jump host as a user whose sudo needs a password.
    rolled_back(&lab, dir.path(), &["h1", "h2"], None);
    rolled_back(&lab, dir.path(), &["v1"], Some("kf"));

    // The same address on a bridge over the NIC: converges, the host stays reachable.
    let (nic, addr) = lab.nic("h1");
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

/// Turn a lab host into a NetworkManager host: its NIC in a NetworkManager profile with the
/// same address (done without ssh, since the NIC changes hands).
fn make_networkmanager_host(lab: &lab::Lab, host: &str) -> String {
    let (nic, addr) = lab.nic(host);
    let out = lab.exec(
        host,
        &format!(
            "printf '[connection]\\nid=lab\\ntype=ethernet\\ninterface-name={nic}\\n\\n[ipv4]\\nmethod=manual\\naddress1={addr}\\n\\n[ipv6]\\nmethod=disabled\\n' \
               > /etc/NetworkManager/system-connections/lab.nmconnection && \
             chmod 600 /etc/NetworkManager/system-connections/lab.nmconnection && \
             rm -f /etc/netplan/10-lab.yaml && netplan generate && networkctl reload && \
             systemctl start NetworkManager && \
             for i in $(seq 50); do nmcli -t -f NAME,DEVICE connection show --active | grep -q '^lab:{nic}$' && exit 0; sleep 0.2; done; exit 1"
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    nic
}

fn nm_play(nic: &str, address: &str, extra: &str) -> String {
    format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: bridge over the only NIC\n      \
         nm_bridge:\n        name: br0\n        interfaces: [{nic}]\n        addresses: [{address}]\n{extra}"
    )
}

#[test]
fn nm_bridge_on_a_networkmanager_host_confirmed_or_rolled_back() {
    let Some(lab) = lab::Lab::up("e2e-nm", 1, None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nic = make_networkmanager_host(&lab, "h1");
    let profiles = || {
        on(
            &lab,
            "h1",
            "cd /etc/NetworkManager/system-connections && sha256sum *",
        )
    };
    let before = profiles();

    // Wrong address: rolled back by the host; the profiles are the originals, "lab" is active
    // on the NIC again, br0 is gone.
    let out = kvmforge(
        &lab,
        dir.path(),
        "h1",
        &nm_play(&nic, "10.99.0.5/24", "      rollback_timeout: 15\n"),
        &[],
    );
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("rolled back;"), "{}", text(&out));
    assert_eq!(profiles(), before);
    let active = String::from_utf8_lossy(
        &lab.ssh("h1", "nmcli -t -f NAME,DEVICE connection show --active")
            .stdout,
    )
    .into_owned();
    assert!(active.contains(&format!("lab:{nic}")), "{active}");
    assert!(
        !lab.exec("h1", "ip link show br0").status.success(),
        "br0 is still there"
    );

    // The host's own address on a bridge over its NIC: confirmed; then nothing to do.
    let addr = lab.addr("h1").to_string();
    let play = nm_play(&nic, &format!("{addr}/24"), "");
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
    assert!(
        shown.contains(&addr) && shown.contains(&format!(" {nic}")),
        "{shown}"
    );
    let out = kvmforge(&lab, dir.path(), "h1", &play, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// A change that moves the host to another address is confirmed at the new one
/// (`confirm_address`), and the rest of the play runs there.
#[test]
fn a_change_that_moves_the_address_is_confirmed_at_the_new_one() {
    let Some(lab) = lab::Lab::up("e2e-move", 1, None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (nic, _) = lab.nic("h1");
    let old = lab.addr("h1").to_string();
    let new = {
        let mut parts: Vec<&str> = old.split('.').collect();
        parts[3] = "21";
        parts.join(".")
    };
    // The host keeps its key: known_hosts learns the new address from the old line.
    let kh = std::fs::read_to_string(&lab.known_hosts).unwrap();
    let line = kh
        .lines()
        .find(|l| l.starts_with(&format!("{old} ")))
        .unwrap_or_else(|| panic!("{old} not in known_hosts: {kh}"))
        .replacen(&old, &new, 1);
    std::fs::write(&lab.known_hosts, format!("{kh}{line}\n")).unwrap();

    let play = format!(
        "{}      confirm_address: {new}\n    - name: where am I\n      command: ip -4 -o addr show br0\n      register: here\n",
        bridge_play(&nic, &format!("{new}/24"), "")
    );
    let out = kvmforge(&lab, dir.path(), "h1", &play, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!("guard: confirmed over a new connection to {new}")),
        "{t}"
    );
    assert!(t.contains("changed: [h1] where am I"), "{t}");
    let shown = on(&lab, "h1", "ip -4 -o addr show br0");
    assert!(shown.contains(&format!("{new}/24")), "{shown}");
}
