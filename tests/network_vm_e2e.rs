//! Network changes that need a kernel of their own: a VLAN bridge (the seed's one bridge per
//! guest VLAN on a second NIC, no address on the host, ageing time 0) on a QEMU VM of the lab,
//! applied with the real `netplan apply` (the VM has udev) under the network guard, then the
//! same shape with nm_bridge once NetworkManager manages the NIC.
//! One VM for the binary; skipped loudly without root or QEMU, and with KVMFORGE_LAB_VMS=0.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};

use lab::{exit_code as code, output_text as text};

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

    // Removed again: the bridge and its VLAN device go, lan1 stays.
    let absent = "- hosts: all\n  gather_facts: false\n  tasks:\n    - netplan_bridge: { name: br223, state: absent }\n";
    let out = run(&lab, dir.path(), absent, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    let gone = lab.ssh("q1", "ip link show br223 || ip link show lan1.223");
    assert!(!gone.status.success(), "{}", text(&gone));
    assert!(lab.ssh("q1", "ip link show lan1").status.success());

    // The same shape with NetworkManager: hand lan1 from networkd to NetworkManager (netplan's
    // udev rules mark it unmanaged for NetworkManager once `netplan apply` ran: override that),
    // then a bridge on another VLAN of it.
    let setup = lab.ssh(
        "q1",
        "printf '[Match]\\nName=lan1\\n\\n[Link]\\nUnmanaged=yes\\n' > /etc/systemd/network/05-lan1-unmanaged.network && \
         networkctl reload && ip addr flush dev lan1 && \
         sed -i 's/^unmanaged-devices=.*/unmanaged-devices=interface-name:lan0/' /etc/NetworkManager/conf.d/90-kvmforge-lab.conf && \
         systemctl restart NetworkManager && sleep 2 && \
         nmcli device set lan1 managed yes && \
         for i in $(seq 100); do nmcli -t -f DEVICE,STATE device | grep -q '^lan1:disconnected$' && exit 0; sleep 0.3; done; \
         nmcli -t device; exit 1",
    );
    assert!(setup.status.success(), "{}", text(&setup));
    let nm = VLAN_BRIDGE
        .replace("netplan_bridge", "nm_bridge")
        .replace("223", "2368");
    let out = run(&lab, dir.path(), &nm, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert!(
        text(&out).contains("guard: rollback disarmed"),
        "{}",
        text(&out)
    );
    let links = String::from_utf8_lossy(
        &lab.ssh("q1", "ip -d link show lan1.2368; ip -d link show br2368")
            .stdout,
    )
    .into_owned();
    assert!(links.contains("vlan protocol 802.1Q id 2368"), "{links}");
    assert!(links.contains("master br2368"), "{links}");
    assert!(links.contains("ageing_time 0"), "{links}");
    let out = run(&lab, dir.path(), &nm, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}
