//! SSH tunnels on a jump host, end to end over real SSH against lab hosts with real systemd and
//! sshd: one playbook makes a jump-host port per host behind it (`ssh_tunnel`, as the seed's
//! `ssh -fNL '*:12105:192.168.121.105:22' root@192.168.121.105`), and authorizes each tunnel's
//! generated key on its host (`authorized_key`, the key taken from the jump host's registered
//! result through `hostvars`). From this machine, each port then lands on its host's sshd;
//! a tunnel whose ssh dies is brought back by systemd; a second run changes nothing; and
//! `state: absent` closes the port. Needs root; skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab::{exit_code as code, output_text as text};

fn kvmforge(lab: &lab::Lab, playbook: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(playbook)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["--connect-timeout", "5", "-v", "--detailed-exitcode"])
        .args(args)
        .output()
        .unwrap()
}

/// Run `cmd` on a host as root over the lab's own ssh, returning its stdout.
fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ssh -p PORT root@JUMP hostname` from this machine: through the tunnel, to the host whose
/// key the lab's known_hosts holds for `behind` (so landing anywhere else fails).
fn through(lab: &lab::Lab, port: u16, behind: &str) -> Output {
    let jump = lab.jump.as_deref().expect("the lab has a jump host");
    Command::new("ssh")
        .args(lab.ssh_opts())
        .args(["-o", "ConnectTimeout=3"])
        .arg("-o")
        .arg(format!("HostKeyAlias={}", lab.addr(behind)))
        .args(["-p", &port.to_string(), &format!("root@{jump}"), "hostname"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Poll `through` until it prints `want`, for up to `secs` seconds: how long it took.
fn lands_on(lab: &lab::Lab, port: u16, behind: &str, want: &str, secs: u64) -> Duration {
    let start = Instant::now();
    loop {
        let out = through(lab, port, behind);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == want {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!(
                "port {port} of the jump host does not reach {behind} after {secs} s: {}\njump's journal:\n{}",
                text(&out),
                on(
                    lab,
                    "jump",
                    "journalctl -u 'kvmforge-tunnel-*' --no-pager -n 30"
                )
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn playbook(lab: &lab::Lab, state: &str) -> String {
    let (v1, v2) = (lab.addr("v1"), lab.addr("v2"));
    let mut pb = format!(
        r#"- name: the jump host keeps a port per host behind it
  hosts: jump
  gather_facts: false
  tasks:
    - name: jump-host port 12105 reaches v1's sshd
      ssh_tunnel:
        name: v1
        listen: "*:12105"
        target: "{v1}:22"
        via: "root@{v1}"
        restart_sec: 2
        state: {state}
      register: tunnel_v1
    - name: jump-host port 12106 reaches v2's sshd
      ssh_tunnel:
        name: v2
        listen: "*:12106"
        target: "{v2}:22"
        via: "root@{v2}"
        restart_sec: 2
        state: {state}
      register: tunnel_v2
"#
    );
    if state == "present" {
        pb += &format!(
            r#"- name: each host lets its tunnel forward to its own sshd, and do nothing else
  hosts: vm
  gather_facts: false
  tasks:
    - name: v1 authorizes its tunnel
      when: eq inventory_hostname "v1"
      authorized_key:
        user: root
        key: "{{{{ hostvars.jump.tunnel_v1.public_key }}}}"
        key_options: 'restrict,port-forwarding,permitopen="{v1}:22"'
    - name: v2 authorizes its tunnel
      when: eq inventory_hostname "v2"
      authorized_key:
        user: root
        key: "{{{{ hostvars.jump.tunnel_v2.public_key }}}}"
        key_options: 'restrict,port-forwarding,permitopen="{v2}:22"'
"#
        );
    }
    pb
}

#[test]
fn tunnels_on_the_jump_host_reach_the_hosts_behind_it() {
    let started = Instant::now();
    let Some(lab) = lab::Lab::up("e2e-tunnel", 0, Some(2)) else {
        return;
    };
    eprintln!("lab up in {:?}", started.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("tunnels.yaml");
    std::fs::write(&site, playbook(&lab, "present")).unwrap();
    let (name1, name2) = (on(&lab, "v1", "hostname"), on(&lab, "v2", "hostname"));
    assert!(!name1.is_empty() && name1 != name2, "{name1} {name2}");
    // Nothing listens yet.
    assert!(!through(&lab, 12105, "v1").status.success());

    // Check mode on fresh hosts: the tunnels would be made, but their keys do not exist yet,
    // so the tasks that authorize them cannot be checked: skipped, saying why. Nothing changes.
    let check = kvmforge(&lab, &site, &["--check"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    let out = text(&check);
    assert!(
        out.matches("cannot be checked before earlier changes are made")
            .count()
            >= 2
            && out.contains("hostvars.jump.tunnel_v1.public_key"),
        "{out}"
    );
    assert_eq!(
        on(
            &lab,
            "jump",
            "if [ -e /etc/systemd/system/kvmforge-tunnel-v1.service ] || [ -e /etc/kvmforge/tunnels/v1 ]; \
             then echo changed; else echo untouched; fi"
        ),
        "untouched"
    );

    // First run: everything changes, on the jump host and on both hosts behind it.
    let t = Instant::now();
    let first = kvmforge(&lab, &site, &[]);
    eprintln!("first run in {:?}", t.elapsed());
    assert_eq!(code(&first), 8, "{}", text(&first));
    let out = text(&first);
    assert!(out.contains("generate the tunnel's key"), "{out}");
    assert!(
        !out.contains("PRIVATE KEY"),
        "a private key in the output: {out}"
    );
    assert!(
        !on(&lab, "jump", "ps -eo args").contains("PRIVATE"),
        "a private key on a command line"
    );

    // Each port lands on its own host, whose host key the client checks.
    let took = lands_on(&lab, 12105, "v1", &name1, 30);
    eprintln!("port 12105 reaches v1 after {took:?}");
    lands_on(&lab, 12106, "v2", &name2, 30);

    // On the jump host: the key is private, the far end's host key pinned, the unit enabled.
    assert_eq!(
        on(
            &lab,
            "jump",
            "stat -c %a /etc/kvmforge/tunnels/v1/id_ed25519"
        ),
        "600"
    );
    let pinned = on(&lab, "jump", "cat /etc/kvmforge/tunnels/v1/known_hosts");
    let v1_key = on(
        &lab,
        "v1",
        "cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub",
    );
    assert!(
        !v1_key.is_empty() && pinned.contains(&v1_key),
        "v1's host key is not pinned: {pinned}"
    );
    assert_eq!(
        on(
            &lab,
            "jump",
            "systemctl is-enabled kvmforge-tunnel-v1.service"
        ),
        "enabled"
    );
    // On v1: the tunnel's key with its restrictions, after the lab's own key, which is kept.
    let keys = on(&lab, "v1", "cat /root/.ssh/authorized_keys");
    let public = on(
        &lab,
        "jump",
        "cut -d' ' -f2 /etc/kvmforge/tunnels/v1/id_ed25519.pub",
    );
    let line = keys
        .lines()
        .find(|l| l.contains(&public))
        .unwrap_or_else(|| panic!("the tunnel's key is not authorized on v1: {keys}"));
    assert!(
        line.starts_with(&format!(
            "restrict,port-forwarding,permitopen=\"{}:22\" ssh-ed25519 ",
            lab.addr("v1")
        )),
        "{line}"
    );
    assert!(
        keys.lines().count() >= 2,
        "the lab's key was dropped: {keys}"
    );

    // The tunnel's ssh dies: systemd brings it back after RestartSec (2 s), the port works.
    let pid = |u: &str| {
        on(
            &lab,
            "jump",
            &format!("systemctl show -p MainPID --value {u}"),
        )
    };
    let restarts = || {
        on(
            &lab,
            "jump",
            "systemctl show -p NRestarts --value kvmforge-tunnel-v1.service",
        )
        .parse::<u32>()
        .expect("NRestarts")
    };
    // (Restarts before: the tunnel retried while its key was not authorized yet.)
    let restarts_before = restarts();
    let before = pid("kvmforge-tunnel-v1.service");
    assert!(
        before != "0" && !before.is_empty(),
        "no main process: {before}"
    );
    on(&lab, "jump", &format!("kill -9 {before}"));
    let t = Instant::now();
    let after = loop {
        let now = pid("kvmforge-tunnel-v1.service");
        if now != "0" && now != before {
            break now;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the tunnel was not restarted within 15 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let back = lands_on(&lab, 12105, "v1", &name1, 20);
    eprintln!(
        "tunnel restarted; port 12105 back {:?} after the kill",
        t.elapsed().max(back)
    );
    assert_eq!(restarts(), restarts_before + 1);

    // Second run, and a check run: nothing to do.
    let t = Instant::now();
    let second = kvmforge(&lab, &site, &[]);
    eprintln!("second run in {:?}", t.elapsed());
    assert_eq!(code(&second), 0, "{}", text(&second));
    let check = kvmforge(&lab, &site, &["--check"]);
    assert_eq!(code(&check), 0, "{}", text(&check));
    // The runs did not restart a tunnel they did not change.
    assert_eq!(restarts(), restarts_before + 1);
    assert_eq!(pid("kvmforge-tunnel-v1.service"), after);

    // Removed: the units are gone and the ports closed.
    let gone = dir.path().join("gone.yaml");
    std::fs::write(&gone, playbook(&lab, "absent")).unwrap();
    let removed = kvmforge(&lab, &gone, &[]);
    assert_eq!(code(&removed), 8, "{}", text(&removed));
    assert_eq!(
        on(
            &lab,
            "jump",
            "ls /etc/systemd/system/kvmforge-tunnel-* /etc/kvmforge/tunnels/v1 2>&1 | grep -c 'No such file'"
        ),
        "2"
    );
    assert_eq!(
        on(
            &lab,
            "jump",
            "systemctl show -p LoadState --value kvmforge-tunnel-v1.service"
        ),
        "not-found"
    );
    let listening = on(&lab, "jump", "ss -Hltn");
    assert!(
        !listening.contains(":12105") && !listening.contains(":12106"),
        "{listening}"
    );
    assert!(!through(&lab, 12105, "v1").status.success());
    let again = kvmforge(&lab, &gone, &[]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    eprintln!("whole test in {:?}", started.elapsed());
}
