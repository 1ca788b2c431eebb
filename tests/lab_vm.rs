//! Smoke test of the lab's VM side: one QEMU VM and one container in the same
//! lab, both reached through the `kvmforge` binary; the VM reboots in place,
//! hands its spare NVMe drive to vfio-pci and back, and gets an 802.1Q VLAN.
//! These are the kernel and device features containers cannot provide.
//!
//! One VM for the whole binary: a boot under emulation costs about a minute
//! of both cores, so every check shares it.  Skipped (loudly) without root or
//! QEMU, and with KVMFORGE_LAB_VMS=0.

#[path = "support/lab.rs"]
mod lab;

use lab::describe;
use serde_json::Value;
use std::process::Command;

fn ok(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(
        out.status.success(),
        "{host}: `{cmd}`: {}\n--- {host} console (tail) ---\n{}",
        describe(&out),
        tail(&lab.console(host), 30)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Each host's boot id, read by a `command` task that kvmforge runs over ssh
/// against the lab's own generated inventory.
fn boot_ids_through_kvmforge(lab: &lab::Lab, hosts: &str) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("boot-id.yaml");
    std::fs::write(
        &playbook,
        r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: read the boot id
      command: cat /proc/sys/kernel/random/boot_id
      register: bid
      changed_when: false
    - name: report it
      command: "echo boot_id={{ bid.stdout }}"
      changed_when: false
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&playbook)
        .arg("-i")
        .arg(&lab.inventory)
        .args([
            "-l",
            hosts,
            "--output",
            "json",
            "--host-key-checking",
            "strict",
        ])
        .args(["--connect-timeout", "10"])
        .output()
        .expect("run kvmforge");
    assert!(out.status.success(), "kvmforge: {}", describe(&out));
    let mut ids = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let e: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if e["event"] != "result" || e["task"] != "report it" {
            continue;
        }
        assert_eq!(e["status"], "ok", "{e}");
        let cmd = e["commands"][0].as_str().unwrap_or_default();
        let id = cmd
            .split("boot_id=")
            .nth(1)
            .unwrap_or_else(|| panic!("no boot id in {e}"))
            .trim()
            .to_string();
        assert_eq!(id.len(), 36, "boot id {id:?} in {e}");
        ids.push((e["host"].as_str().unwrap().to_string(), id));
    }
    ids.sort();
    ids
}

fn driver(lab: &lab::Lab, host: &str, addr: &str) -> String {
    ok(
        lab,
        host,
        &format!("basename \"$(readlink /sys/bus/pci/devices/{addr}/driver)\""),
    )
}

#[test]
fn vm_and_container_in_one_lab() {
    let vm = lab::Vm {
        nvme: 1,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let Some(lab) = lab::Lab::up_with("vm-smoke", 1, None, &[vm]) else {
        return;
    };
    eprintln!("lab with q1 and h1 up in {:?}", t0.elapsed());
    assert_eq!(lab.vms(), ["q1"]);
    assert!(lab.is_vm("q1") && !lab.is_vm("h1"));

    // addressed the same way: hostnames, users, keys, known_hosts, inventory
    for host in ["h1", "q1"] {
        assert_eq!(ok(&lab, host, "hostname"), host);
        let out = lab.ssh_as("kfnopw", host, "sudo -n id -u");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "{host}: {}",
            describe(&out)
        );
    }
    let inv = std::fs::read_to_string(&lab.inventory).unwrap();
    assert!(inv.contains(&format!(
        "    q1:\n      ansible_host: {}\n",
        lab.addr("q1")
    )));
    // a VM has its own kernel, booted through grub with the image's arguments
    let cmdline = ok(&lab, "q1", "cat /proc/cmdline");
    assert!(cmdline.contains("intel_iommu=on"), "{cmdline}");
    assert!(
        cmdline.contains("BOOT_IMAGE="),
        "not booted by grub: {cmdline}"
    );
    assert_ne!(
        ok(&lab, "q1", "uname -v"),
        ok(&lab, "h1", "uname -v"),
        "the VM runs the controller's kernel?"
    );

    // both hosts through kvmforge; the VM reboots in place with a new boot id
    let before = boot_ids_through_kvmforge(&lab, "h1:q1");
    assert_eq!(
        before.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["h1", "q1"]
    );
    // kernel arguments go through /etc/default/grub and update-grub, as on a real host
    ok(
        &lab,
        "q1",
        "sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT=\"kvmforge_lab_mark=1\"/' \
         /etc/default/grub && update-grub 2>&1",
    );
    let t0 = std::time::Instant::now();
    let reported = lab.reboot("q1");
    eprintln!("q1 rebooted in {:?}", t0.elapsed());
    let cmdline = ok(&lab, "q1", "cat /proc/cmdline");
    assert!(
        cmdline.contains("kvmforge_lab_mark=1") && cmdline.contains("intel_iommu=on"),
        "/etc/default/grub did not reach the kernel: {cmdline}"
    );
    let after = boot_ids_through_kvmforge(&lab, "h1:q1");
    assert_eq!(after[0], before[0], "the container did not reboot");
    assert_ne!(after[1].1, before[1].1, "q1 has a new boot id");
    assert_eq!(after[1].1, reported);

    // the spare NVMe drive to vfio-pci and back, live
    let addr = lab.nvme_by_serial("q1", "kfspare0");
    assert_eq!(driver(&lab, "q1", &addr), "nvme");
    let group = ok(
        &lab,
        "q1",
        &format!("basename \"$(readlink /sys/bus/pci/devices/{addr}/iommu_group)\""),
    );
    assert!(
        group.parse::<u32>().is_ok(),
        "no IOMMU group for {addr}: {group:?}"
    );
    let sys = format!("/sys/bus/pci/devices/{addr}");
    ok(
        &lab,
        "q1",
        &format!(
            "modprobe vfio-pci && echo vfio-pci > {sys}/driver_override && \
             echo {addr} > {sys}/driver/unbind && echo {addr} > /sys/bus/pci/drivers_probe"
        ),
    );
    assert_eq!(driver(&lab, "q1", &addr), "vfio-pci");
    ok(
        &lab,
        "q1",
        &format!("test -e /dev/vfio/{group} && ls /sys/kernel/iommu_groups/{group}/devices"),
    );
    ok(
        &lab,
        "q1",
        &format!(
            "echo > {sys}/driver_override && echo {addr} > {sys}/driver/unbind && \
             echo {addr} > /sys/bus/pci/drivers_probe"
        ),
    );
    assert_eq!(driver(&lab, "q1", &addr), "nvme");

    // an 802.1Q VLAN on the VM's lab NIC (containers' kernels have no 8021q)
    ok(
        &lab,
        "q1",
        "modprobe 8021q && ip link add link lan1 name lan1.42 type vlan id 42 && ip link set lan1.42 up",
    );
    let link = ok(&lab, "q1", "ip -d link show lan1.42");
    assert!(
        link.contains("vlan protocol 802.1Q id 42"),
        "no VLAN link: {link}"
    );

    let dir = lab.dir.clone();
    drop(lab);
    assert!(!dir.exists(), "lab dir removed on drop");
}
