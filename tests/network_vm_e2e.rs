//! Network changes that need a kernel of their own: a VLAN bridge (the seed's one bridge per
//! guest VLAN on a second NIC, no address on the host, ageing time 0) on a QEMU VM of the lab,
//! applied with the real `netplan apply` (the VM has udev) under the network guard.
//! One VM for the binary; skipped loudly without root or QEMU, and with KVMFORGE_LAB_VMS=0.

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
    let pb = dir.join("vlan.yaml");
    std::fs::write(&pb, playbook).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["-l", "q1", "--connect-timeout", "10", "-v"])
        .args(args)
        .output()
        .unwrap()
}

const VLAN_BRIDGE: &str = "- hosts: all
  gather_facts: false
  tasks:
    - name: a bridge for guests on VLAN 223 of the second NIC
      netplan_bridge:
        name: br223
        interfaces: [{vlan: 223, link: lan1}]
        parameters: {ageing_time: 0}
      verify: ip link show br223
      rollback_timeout: 90
";

#[test]
fn vlan_bridge_with_netplan_apply_on_a_vm() {
    let Some(lab) = lab::Lab::up_with("e2e-netvm", 0, None, &[lab::Vm::default()]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = run(&lab, dir.path(), VLAN_BRIDGE, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("run: netplan apply"),
        "the real netplan apply path: {t}"
    );
    assert!(t.contains("guard: rollback disarmed"), "{t}");
    let links = String::from_utf8_lossy(
        &lab.ssh("q1", "ip -d link show lan1.223; ip -d link show br223")
            .stdout,
    )
    .into_owned();
    assert!(links.contains("vlan protocol 802.1Q id 223"), "{links}");
    assert!(links.contains("master br223"), "{links}");
    assert!(links.contains("ageing_time 0"), "{links}");
    // Nothing to do the second time.
    let out = run(&lab, dir.path(), VLAN_BRIDGE, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}
