//! libvirt as code over real SSH against a lab host running a real libvirtd: setup-kvm.sh's
//! default NAT network and its isolated wsfbr0, a dir pool with three qcow2 volumes from a loop,
//! qemu.conf settings; a second run changes nothing; a DHCP host is added live; a network
//! edited by hand is drift in check mode and is corrected; a volume is never shrunk; a pool
//! removed keeps its files. Needs root; skipped loudly otherwise.

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

fn run(lab: &lab::Lab, dir: &std::path::Path, playbook: &str, args: &[&str]) -> Output {
    let pb = dir.join("libvirt.yaml");
    std::fs::write(&pb, playbook).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["-l", "h1", "--connect-timeout", "5"])
        .args(args)
        .output()
        .unwrap()
}

fn on(lab: &lab::Lab, cmd: &str) -> String {
    let out = lab.ssh("h1", cmd);
    assert!(out.status.success(), "`{cmd}`: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const HEAD: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n";

const SETUP: &str = "    - name: the default NAT network (setup-kvm.sh)
      libvirt_network:
        name: default
        forward: nat
        bridge: virbr0
        address: 192.168.122.1
        prefix: 24
        dhcp_start: 192.168.122.2
        dhcp_end: 192.168.122.254
    - name: the isolated overlay network
      libvirt_network: { name: wsfbr0, forward: none, bridge: wsfbr0, stp: true, mtu: 1450 }
    - name: the images pool
      libvirt_pool:
        name: images
        type: dir
        target: /var/lib/kvmforge-images
        permissions: { mode: \"0711\" }
    - name: a disk per node
      libvirt_volume: { pool: images, name: \"{{ item }}.qcow2\", capacity: 1G }
      loop: [bootstrap, master-0, master-1]
    - name: qemu runs as root
      libvirt_config:
        settings: { user: root, group: root }
";

#[test]
fn networks_pools_volumes_and_config_on_a_real_libvirtd() {
    let Some(lab) = lab::Lab::up("e2e-libvirt", 1, None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = format!("{HEAD}{SETUP}");
    let out = run(&lab, dir.path(), &setup, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));

    let v = "virsh -q -c qemu:///system";
    let nets = on(&lab, &format!("{v} net-list --all"));
    assert!(
        nets.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == ["default", "active", "yes", "yes"]
        ),
        "{nets}"
    );
    assert!(nets.contains("wsfbr0"), "{nets}");
    assert!(on(&lab, "pgrep -a dnsmasq").contains("default.conf"));
    let wsf = on(&lab, "ip -d link show wsfbr0");
    assert!(
        wsf.contains("mtu 1450") && wsf.contains("stp_state 1"),
        "{wsf}"
    );
    let vols = on(&lab, &format!("{v} vol-list images"));
    for n in ["bootstrap", "master-0", "master-1"] {
        assert!(vols.contains(&format!("{n}.qcow2")), "{vols}");
    }
    assert_eq!(
        on(&lab, "stat -c %a /var/lib/kvmforge-images").trim(),
        "711"
    );
    let conf = on(&lab, "grep -E '^(user|group) =' /etc/libvirt/qemu.conf");
    assert_eq!(conf, "user = \"root\"\ngroup = \"root\"\n");

    // Nothing to do the second time.
    let out = run(&lab, dir.path(), &setup, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // A fixed lease added: changed live, the network's bridge is not recreated.
    let ifindex = on(&lab, "cat /sys/class/net/virbr0/ifindex");
    let lease = setup.replace(
        "        dhcp_end: 192.168.122.254\n",
        "        dhcp_end: 192.168.122.254\n        hosts: [{mac: \"52:54:00:00:00:10\", name: bootstrap, ip: 192.168.122.10}]\n",
    );
    let out = run(&lab, dir.path(), &lease, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert_eq!(on(&lab, "cat /sys/class/net/virbr0/ifindex"), ifindex);
    assert!(on(&lab, &format!("{v} net-dumpxml default")).contains("192.168.122.10"));

    // Drift: the isolated network edited by hand (its MTU) is found in check mode...
    on(
        &lab,
        &format!("{v} net-dumpxml --inactive wsfbr0 | sed \"s/mtu size='1450'/mtu size='1400'/\" > /tmp/wsf.xml && {v} net-define /tmp/wsf.xml >/dev/null && {v} net-destroy wsfbr0 >/dev/null && {v} net-start wsfbr0 >/dev/null"),
    );
    let out = run(
        &lab,
        dir.path(),
        &lease,
        &["--check", "--detailed-exitcode"],
    );
    assert_eq!(code(&out), 8, "{}", text(&out));
    // ... and corrected in the definition.
    let out = run(&lab, dir.path(), &lease, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(on(&lab, &format!("{v} net-dumpxml --inactive wsfbr0")).contains("1450"));

    // A volume is never shrunk.
    let shrink = format!(
        "{HEAD}    - libvirt_volume: {{ pool: images, name: bootstrap.qcow2, capacity: 512M }}\n"
    );
    let out = run(&lab, dir.path(), &shrink, &[]);
    assert_eq!(code(&out), 2, "{}", text(&out));

    // The pool removed: undefined, its directory and files kept.
    let absent = format!("{HEAD}    - libvirt_pool: {{ name: images, state: absent }}\n");
    let out = run(&lab, dir.path(), &absent, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert!(!on(&lab, &format!("{v} pool-list --all")).contains("images"));
    assert!(on(&lab, "ls /var/lib/kvmforge-images").contains("bootstrap.qcow2"));
}
