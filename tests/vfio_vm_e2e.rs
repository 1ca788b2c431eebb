//! `vfio_bind` end to end on a lab VM booting from NVMe, with two more NVMe drives of the same
//! vendor:device (each in its own IOMMU group) and an NVMe drive and an e1000 NIC behind one
//! pci-bridge (one IOMMU group): binding by id is refused because the boot drive matches, the
//! two spares go to vfio-pci by address live and stay there across a reboot, a group is only
//! taken whole, the NIC of the SSH session is refused, and `state: absent` gives the drives back
//! to nvme and removes every file.
//!
//! One VM for the whole binary (a boot under emulation costs minutes). Skipped (loudly) without
//! root or QEMU, and with KVMFORGE_LAB_VMS=0.

#[path = "support/lab.rs"]
mod lab;

use lab::describe;
use std::process::Command;

fn ok(lab: &lab::Lab, cmd: &str) -> String {
    let out = lab.ssh("q1", cmd);
    assert!(out.status.success(), "q1: `{cmd}`: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run one `vfio_bind` task on q1 with `--detailed-exitcode`: (exit code, output).
fn vfio_bind(lab: &lab::Lab, args: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("vfio.yaml");
    std::fs::write(
        &playbook,
        format!(
            "- hosts: q1\n  gather_facts: false\n  tasks:\n    - name: vfio\n      vfio_bind: {args}\n"
        ),
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&playbook)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["-l", "q1", "--detailed-exitcode", "--connect-timeout", "10"])
        .output()
        .expect("run kvmforge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("vfio_bind {args}: {:?}\n{text}", t0.elapsed());
    (out.status.code().unwrap_or(-1), text)
}

fn driver(lab: &lab::Lab, addr: &str) -> String {
    ok(
        lab,
        &format!("basename \"$(readlink /sys/bus/pci/devices/{addr}/driver)\""),
    )
}

fn group(lab: &lab::Lab, addr: &str) -> String {
    ok(
        lab,
        &format!("basename \"$(readlink /sys/bus/pci/devices/{addr}/iommu_group)\""),
    )
}

const FILES: &str =
    "/etc/udev/rules.d/61-kvmforge-vfio-*.rules /etc/modprobe.d/kvmforge-vfio.conf \
    /etc/modules-load.d/kvmforge-vfio.conf /usr/local/sbin/kvmforge-vfio-override \
    /etc/initramfs-tools/hooks/kvmforge-vfio";

#[test]
fn vfio_bind_on_a_vm_booting_from_nvme() {
    let vm = lab::Vm {
        nvme: 2,
        bridged_nvme: 1,
        bridged_e1000: 1,
        root_on_nvme: true,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let Some(lab) = lab::Lab::up_with("e2e-vfio", 0, None, &[vm]) else {
        return;
    };
    eprintln!("lab up in {:?}", t0.elapsed());

    let root = lab.nvme_by_serial("q1", "kfroot");
    let spares = [
        lab.nvme_by_serial("q1", "kfspare0"),
        lab.nvme_by_serial("q1", "kfspare1"),
    ];
    let bridged = lab.nvme_by_serial("q1", "kfspare2");
    let id = ok(
        &lab,
        &format!(
            "d=/sys/bus/pci/devices/{root}; echo $(cat $d/vendor):$(cat $d/device) | sed 's/0x//g'"
        ),
    );
    assert_eq!(id, "1b36:0010");
    assert!(ok(&lab, "findmnt -n -o SOURCE /").starts_with("/dev/nvme"));
    for s in &spares {
        assert_eq!(driver(&lab, s), "nvme");
    }

    // by id: the boot drive matches, so nothing happens
    let (rc, out) = vfio_bind(&lab, &format!("{{devices: [\"{id}\"]}}"));
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains(&format!("{root} ({id}, nvme) holds / (")) && out.contains("root file system"),
        "{out}"
    );
    assert_eq!(driver(&lab, &spares[0]), "nvme");
    assert_eq!(ok(&lab, &format!("ls {FILES} 2>/dev/null | wc -l")), "0");

    // the two spares by address: live, and persisted
    let two = format!("{{devices: [\"{}\", \"{}\"]}}", spares[0], spares[1]);
    let (rc, out) = vfio_bind(&lab, &two);
    assert_eq!(rc, 8, "{out}");
    for s in &spares {
        assert_eq!(driver(&lab, s), "vfio-pci", "{s}");
        ok(&lab, &format!("test -c /dev/vfio/{}", group(&lab, s)));
    }
    assert_eq!(driver(&lab, &root), "nvme");
    let (rc, out) = vfio_bind(&lab, &two);
    assert_eq!(rc, 0, "second run changed something: {out}");

    // an NVMe drive and a NIC behind one bridge share a group: one alone is refused
    let nic = ok(&lab, "for n in /sys/class/net/*; do [ \"$(cat $n/device/vendor 2>/dev/null)\" = 0x8086 ] && basename \"$(readlink -f $n/device)\"; done; true");
    assert!(nic.contains(':'), "no e1000: {nic:?}");
    assert_eq!(group(&lab, &nic), group(&lab, &bridged));
    let (rc, out) = vfio_bind(&lab, &format!("{{devices: [\"{bridged}\"]}}"));
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains(&format!("but {nic} (8086:100e, e1000) is not requested")),
        "{out}"
    );
    assert_eq!(driver(&lab, &bridged), "nvme");

    // the NIC carrying this SSH session
    let lan0 = ok(
        &lab,
        "basename \"$(readlink -f /sys/class/net/lan0/device/..)\"",
    );
    let (rc, out) = vfio_bind(&lab, &format!("{{devices: [\"{lan0}\"]}}"));
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains(&format!(
            "{lan0} (1af4:1000, virtio-pci) carries this SSH session"
        )),
        "{out}"
    );

    // at boot the drives go to vfio-pci before nvme takes them (nvme is in the initramfs)
    let t1 = std::time::Instant::now();
    lab.reboot("q1");
    eprintln!("q1 rebooted in {:?}", t1.elapsed());
    for s in &spares {
        assert_eq!(driver(&lab, s), "vfio-pci", "{s} after the reboot");
    }
    assert_eq!(driver(&lab, &root), "nvme");
    let (rc, out) = vfio_bind(&lab, &two);
    assert_eq!(rc, 0, "changed after the reboot: {out}");

    // and back to nvme, every file gone
    let back = format!(
        "{{devices: [\"{}\", \"{}\"], state: absent}}",
        spares[0], spares[1]
    );
    let (rc, out) = vfio_bind(&lab, &back);
    assert_eq!(rc, 8, "{out}");
    for s in &spares {
        assert_eq!(driver(&lab, s), "nvme", "{s}");
    }
    assert_eq!(ok(&lab, &format!("ls {FILES} 2>/dev/null | wc -l")), "0");
    assert_eq!(
        ok(
            &lab,
            "lsinitramfs /boot/initrd.img-$(uname -r) | grep -c kvmforge-vfio; true"
        ),
        "0"
    );
    let (rc, out) = vfio_bind(&lab, &back);
    assert_eq!(rc, 0, "{out}");
    eprintln!("done in {:?}", t0.elapsed());
}
