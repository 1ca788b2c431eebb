//! Smoke test of the test lab (tests/lab/lab.sh): boots two front hosts, a
//! jump host and one host on the VM network, and talks to them over real ssh.
//! Skipped (loudly) when not root.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Stdio};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn describe(o: &std::process::Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

#[test]
fn lab_smoke() {
    let Some(lab) = lab::Lab::up("smoke", 2, Some(1)) else {
        return;
    };
    let names: Vec<&str> = lab.hosts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["h1", "h2", "jump", "v1"]);

    // every host answers with its own name over real ssh (v1 through the jump host)
    for (name, _) in &lab.hosts {
        let out = lab.ssh(name, "hostname");
        assert!(out.status.success(), "ssh {name}: {}", describe(&out));
        assert_eq!(stdout(&out), *name);
    }

    // v1 with plain `ssh -J`, using the lab's ssh_config for both hops
    let jump = lab.jump.clone().expect("lab has a jump host");
    let out = Command::new("ssh")
        .arg("-F")
        .arg(&lab.ssh_config)
        .arg("-J")
        .arg(format!("root@{jump}"))
        .arg(format!("root@{}", lab.addr("v1")))
        .arg("hostname")
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    assert!(out.status.success(), "ssh -J: {}", describe(&out));
    assert_eq!(stdout(&out), "v1");

    // ... but v1 is not reachable from the controller directly
    let out = Command::new("ssh")
        .args(lab.ssh_opts())
        .args(["-o", "ConnectTimeout=3"])
        .arg(format!("root@{}", lab.addr("v1")))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    assert!(
        !out.status.success(),
        "v1 must not be reachable directly: {}",
        describe(&out)
    );

    // libvirt runs in the hosts: a dir pool and a qcow2 volume, and a NAT network with its
    // dnsmasq (no guest, no /dev/kvm needed)
    let out = lab.ssh(
        "h1",
        "set -e; v='virsh -q -c qemu:///system'; mkdir -p /var/lib/kvmforge-smoke; \
         $v pool-define-as smoke dir --target /var/lib/kvmforge-smoke >/dev/null; $v pool-start smoke >/dev/null; \
         $v vol-create-as smoke a.qcow2 64M --format qcow2 >/dev/null; $v net-start default >/dev/null; \
         $v vol-list smoke; $v net-list; pgrep -c dnsmasq",
    );
    assert!(out.status.success(), "libvirt: {}", describe(&out));
    let got = stdout(&out);
    assert!(
        got.contains("a.qcow2") && got.contains("default") && got.contains("active"),
        "{got}"
    );

    // exec without ssh; users and their sudo rules
    let out = lab.exec("h2", "hostname && id -u");
    assert!(out.status.success(), "exec: {}", describe(&out));
    assert_eq!(stdout(&out), "h2\n0");
    let out = lab.ssh_as("kfnopw", "h1", "sudo -n id -u");
    assert_eq!(stdout(&out), "0", "kfnopw sudo: {}", describe(&out));
    let out = lab.ssh_as("kf", "h1", "sudo -n true");
    assert!(!out.status.success(), "kf must need a password for sudo");
    let out = lab.ssh_as(
        "kf",
        "h1",
        &format!("echo {} | sudo -S -p '' id -u", lab::KF_PASSWORD),
    );
    assert_eq!(
        stdout(&out),
        "0",
        "kf sudo with password: {}",
        describe(&out)
    );

    // inventory names every host
    let inv = std::fs::read_to_string(&lab.inventory).expect("inventory");
    for (name, addr) in &lab.hosts {
        assert!(
            inv.contains(&format!("    {name}:\n      ansible_host: {addr}\n")),
            "{name} in inventory"
        );
    }
    // hosts behind the jump host are reached the way Ansible reaches them: a ProxyCommand
    assert!(inv.contains(&format!("-W %h:%p root@{jump}")));

    // failure helpers: sshd stopped, changed host key
    lab.stop_sshd("h2");
    let out = lab.ssh("h2", "true");
    assert!(!out.status.success(), "h2 without sshd answered");
    lab.start_sshd("h2");
    assert!(
        lab.ssh("h2", "true").status.success(),
        "h2 after start-sshd"
    );
    let line = lab.rekey("h2");
    assert!(
        line.starts_with(&format!("{} ssh-ed25519 ", lab.addr("h2"))),
        "rekey printed {line:?}"
    );
    let out = lab.ssh("h2", "true");
    assert!(!out.status.success(), "changed host key must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        describe(&out)
    );

    let dir = lab.dir.clone();
    drop(lab);
    assert!(!dir.exists(), "lab dir removed on drop");
}
