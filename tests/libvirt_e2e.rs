//! libvirt as code over real SSH against a lab host running a real libvirtd: setup-kvm.sh's
//! default NAT network and its isolated wsfbr0, a dir pool with three qcow2 volumes from a loop,
//! qemu.conf settings; a second run changes nothing; a DHCP host is added live; a network
//! edited by hand is drift in check mode and is corrected; a volume is never shrunk; a pool
//! removed keeps its files. Needs root; skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};

use lab::{exit_code as code, output_text as text};

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
    - name: qemu runs as root, without a security driver
      libvirt_config:
        settings: { user: root, group: root, security_driver: none }
      notify: restart libvirt
    - name: guests on the host bridge br0
      libvirt_network: { name: host-bridge, forward: bridge, bridge: br0 }
  handlers:
    - name: restart libvirt
      service: { name: libvirtd, state: restarted }
";

#[test]
fn networks_pools_volumes_and_config_on_a_real_libvirtd() {
    let Some(lab) = lab::Lab::up("e2e-libvirt", 1, None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The host bridge a bridged network attaches guests to (netplan_bridge or nm_bridge makes it
    // on a real host).
    on(&lab, "ip link add br0 type bridge && ip link set br0 up");
    let qemu_conf = on(&lab, "cat /etc/libvirt/qemu.conf");
    let libvirtd_pid = || on(&lab, "systemctl show -p MainPID --value libvirtd");
    let pid0 = libvirtd_pid();
    let setup = format!("{HEAD}{SETUP}");
    let out = run(&lab, dir.path(), &setup, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    // qemu.conf changed: libvirtd restarted once by the handler.
    let pid1 = libvirtd_pid();
    assert_ne!(pid1, pid0, "libvirtd was not restarted");

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
    let conf = on(
        &lab,
        "grep -E '^(user|group|security_driver) =' /etc/libvirt/qemu.conf",
    );
    let mut conf: Vec<&str> = conf.lines().collect();
    conf.sort();
    assert_eq!(
        conf,
        [
            "group = \"root\"",
            "security_driver = \"none\"",
            "user = \"root\""
        ]
    );
    // Set in place of their commented defaults: every other line is kept.
    let after = on(&lab, "cat /etc/libvirt/qemu.conf");
    let changed: Vec<(&str, &str)> = qemu_conf
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(qemu_conf.lines().count(), after.lines().count());
    assert_eq!(changed.len(), 3, "{changed:?}");
    assert!(
        changed.iter().all(|(a, _)| a.starts_with('#')),
        "{changed:?}"
    );
    // The bridged network names the host's bridge and makes none of its own.
    let hb = on(&lab, &format!("{v} net-dumpxml host-bridge"));
    assert!(
        hb.contains("<forward mode='bridge'/>") && hb.contains("<bridge name='br0'/>"),
        "{hb}"
    );
    assert!(nets.contains("host-bridge"), "{nets}");

    // Nothing to do the second time, and libvirtd is left alone. Each network and the pool are
    // read by one `virsh` (no domain runs; the pool's three volumes take one more): counted by a
    // `virsh` that logs its starts, first in the PATH kvmforge's scripts set.
    on(
        &lab,
        "printf '%s\\n' '#!/bin/sh' 'echo x >> /tmp/virsh-starts' 'exec /usr/bin/virsh \"$@\"' \
         > /usr/local/sbin/virsh && chmod 755 /usr/local/sbin/virsh && rm -f /tmp/virsh-starts",
    );
    let out = run(&lab, dir.path(), &setup, &["--detailed-exitcode"]);
    let starts = on(
        &lab,
        "cat /tmp/virsh-starts; rm -f /usr/local/sbin/virsh /tmp/virsh-starts",
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(libvirtd_pid(), pid1);
    assert_eq!(starts.lines().count(), 3 + 2, "{starts}");

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

    // The default network routed instead of NATed: a new definition the running network takes
    // only when restarted, which cuts its guests off, so it stays pending...
    let routed = lease.replace("        forward: nat\n", "        forward: route\n");
    let live_forward = || {
        let xml = on(&lab, &format!("{v} net-dumpxml default"));
        xml.split("<forward mode='")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or_default()
            .to_string()
    };
    for expected in [8, 0] {
        let out = run(
            &lab,
            dir.path(),
            &routed,
            &["--detailed-exitcode", "--output", "json"],
        );
        assert_eq!(code(&out), expected, "{}", text(&out));
        let pending = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.contains("\"event\":\"result\"") && l.contains("restart pending: network default")
            })
            .count();
        assert_eq!(pending, 1, "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("no running guest is attached"),
            "{}",
            text(&out)
        );
        assert_eq!(live_forward(), "nat");
    }
    assert!(
        on(&lab, &format!("{v} net-dumpxml --inactive default")).contains("<forward mode='route'")
    );
    // ... until restart: true applies it.
    let restart = routed.replace(
        "        forward: route\n",
        "        forward: route\n        restart: true\n",
    );
    let out = run(&lab, dir.path(), &restart, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert_eq!(live_forward(), "route");
    let out = run(&lab, dir.path(), &restart, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// The block device of the VM's spare NVMe drive with this serial.
fn spare_disk(lab: &lab::Lab, host: &str, serial: &str) -> String {
    let out = lab.ssh(
        host,
        &format!("lsblk -dno NAME,SERIAL | awk '$2 == \"{serial}\" {{ print \"/dev/\" $1 }}'"),
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        dev.starts_with("/dev/"),
        "no disk with serial {serial}: {}",
        text(&out)
    );
    dev
}

/// seed 004's LVM pool on a VM's spare disk: built as a new volume group, left alone the second
/// time; a disk that carries a file system is refused unless overwrite is asked for; removing the
/// pool keeps the volume group.
#[test]
fn logical_pool_on_a_spare_disk() {
    let vm = lab::Vm {
        nvme: 2,
        ..Default::default()
    };
    let Some(lab) = lab::Lab::up_with("e2e-libvirt-lvm", 0, None, &[vm]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let blank = spare_disk(&lab, "q1", "kfspare0");
    let used = spare_disk(&lab, "q1", "kfspare1");
    let q1 = |cmd: &str| {
        let out = lab.ssh("q1", cmd);
        assert!(out.status.success(), "`{cmd}`: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    q1(&format!("mkfs.ext4 -q -L precious {used}"));
    let play = |name: &str, dev: &str, extra: &str| {
        let pb = dir.path().join("lvm.yaml");
        std::fs::write(
            &pb,
            format!(
                "{HEAD}    - libvirt_pool: {{ name: {name}, type: logical, source_device: {dev}{extra} }}\n"
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .arg("run")
            .arg(&pb)
            .arg("-i")
            .arg(&lab.inventory)
            .args(["-l", "q1", "--connect-timeout", "10", "--detailed-exitcode"])
            .output()
            .unwrap()
    };

    let out = play("vg_kvm", &blank, "");
    assert_eq!(code(&out), 8, "{}", text(&out));
    let vgs = q1("vgs --noheadings -o vg_name,pv_name");
    assert!(vgs.contains("vg_kvm") && vgs.contains(&blank), "{vgs}");
    assert!(q1("virsh -q -c qemu:///system pool-list").contains("vg_kvm"));
    let out = play("vg_kvm", &blank, "");
    assert_eq!(code(&out), 0, "{}", text(&out));

    // The disk with a file system: refused, naming what it carries, and left as it was.
    let out = play("vg_other", &used, "");
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{used} already carries a file system (ext4)")),
        "{}",
        text(&out)
    );
    assert_eq!(
        q1(&format!("blkid -o value -s LABEL {used}")).trim(),
        "precious"
    );
    // Refused before anything ran: not defined, no volume group.
    assert!(!q1("virsh -q -c qemu:///system pool-list --all").contains("vg_other"));
    assert!(!q1("vgs --noheadings -o vg_name").contains("vg_other"));

    // Removed: undefined, the volume group kept.
    let out = play("vg_kvm", &blank, ", state: absent");
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert!(!q1("virsh -q -c qemu:///system pool-list --all").contains("vg_kvm"));
    assert!(q1("vgs --noheadings -o vg_name").contains("vg_kvm"));
}
