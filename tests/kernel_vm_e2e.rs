//! Kernel features on a lab QEMU VM (its own kernel, grub, reboots) and a container next to it:
//! huge pages reserved at runtime and read back, hugetlbfs mounted and given to libvirt, 1G
//! pages planned as kernel arguments and applied by a real reboot, too many pages refused; the
//! container told it cannot change the kernel; kvm_check's verdict on both.
//! One VM for the binary; skipped loudly without root or QEMU, and with KVMFORGE_LAB_VMS=0.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};

use lab::{exit_code as code, output_text as text};

fn run(lab: &lab::Lab, dir: &std::path::Path, host: &str, playbook: &str) -> Output {
    let pb = dir.join("kernel.yaml");
    std::fs::write(&pb, playbook).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args([
            "-l",
            host,
            "--connect-timeout",
            "10",
            "-v",
            "--detailed-exitcode",
        ])
        .output()
        .unwrap()
}

fn sh(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(out.status.success(), "{host}: {cmd}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const HUGEPAGES: &str = "- hosts: all
  gather_facts: false
  tasks:
    - name: huge pages for guests
      hugepages:
        pages:
          - {size: 2M, count: 64}
          - {size: 1G, count: 1}
      register: hp
      notify: restart libvirt
  handlers:
    - name: restart libvirt
      service: { name: libvirtd, state: restarted }
";

const KVM_CHECK: &str = "- hosts: all
  gather_facts: false
  tasks:
    - kvm_check: {}
      register: kvm
    - command: \"echo nested={{ kvm.nested }} flag={{ kvm.cpu_flag }}\"
      changed_when: false
";

#[test]
fn hugepages_and_kvm_check_on_a_vm_and_a_container() {
    let vm = lab::Vm {
        // 3 GiB: q35 puts the RAM above 2 GiB at 4 GiB, a whole free 1G-aligned gigabyte for
        // the boot-time 1G page (with 2 GiB every aligned gigabyte holds the kernel or firmware
        // tables, and the kernel reserves none).
        mem_mb: 4096,
        ..Default::default()
    };
    let Some(lab) = lab::Lab::up_with("e2e-kernel", 1, None, &[vm]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // kvm_check: the VM under TCG `-cpu max` shows AMD-V and only warnings; the container fails
    // virt-host-validate's hardware check unless it is ignored.
    let out = run(&lab, dir.path(), "q1", KVM_CHECK);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("nested=true flag=svm"),
        "{}",
        text(&out)
    );
    let out = run(&lab, dir.path(), "h1", KVM_CHECK);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("FAIL for") && text(&out).contains("for hardware virtualization"),
        "{}",
        text(&out)
    );
    let ignoring = KVM_CHECK.replace(
        "kvm_check: {}",
        "kvm_check: {ignore: [hardware virtualization]}",
    );
    let out = run(&lab, dir.path(), "h1", &ignoring);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // The container: the kernel is not its own.
    let out = run(&lab, dir.path(), "h1", HUGEPAGES);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("this host is a container (systemd-nspawn)"),
        "{}",
        text(&out)
    );

    // The VM: 2M pages now, 1G pages at boot.
    let out = run(&lab, dir.path(), "q1", HUGEPAGES);
    assert_eq!(code(&out), 8, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("reboot_required") || t.contains("reboot needed"),
        "{t}"
    );
    assert!(t.contains("restart libvirt"), "the handler ran: {t}");
    assert_eq!(
        sh(
            &lab,
            "q1",
            "cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
        ),
        "64"
    );
    assert!(sh(&lab, "q1", "grep HugePages_Total /proc/meminfo").ends_with(" 64"));
    let fstab = sh(&lab, "q1", "cat /etc/fstab");
    assert!(
        fstab.contains("hugetlbfs /dev/hugepages hugetlbfs pagesize=2M 0 0"),
        "{fstab}"
    );
    assert!(
        fstab.contains("hugetlbfs /dev/hugepages1G hugetlbfs pagesize=1G 0 0"),
        "{fstab}"
    );
    let mounts = sh(&lab, "q1", "grep hugetlbfs /proc/mounts");
    assert!(
        mounts.contains("/dev/hugepages1G hugetlbfs rw,relatime,pagesize=1024M")
            || mounts.contains("/dev/hugepages1G hugetlbfs rw,relatime,pagesize=1G"),
        "{mounts}"
    );
    let qemu = sh(&lab, "q1", "grep '^hugetlbfs_mount' /etc/libvirt/qemu.conf");
    assert_eq!(
        qemu,
        "hugetlbfs_mount = [ \"/dev/hugepages\", \"/dev/hugepages1G\" ]"
    );
    let grub = sh(&lab, "q1", "cat /etc/default/grub.d/96-kvmforge-hugepages.cfg; grep -c 'hugepagesz=1G hugepages=1' /boot/grub/grub.cfg");
    assert!(grub.contains("hugepagesz=1G hugepages=1"), "{grub}");
    assert_eq!(
        sh(
            &lab,
            "q1",
            "cat /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"
        ),
        "0",
        "1G pages wait for the reboot"
    );

    // The reboot applies the kernel arguments; the 2M pages come back from tmpfiles.
    lab.reboot("q1");
    let cmdline = sh(&lab, "q1", "cat /proc/cmdline");
    assert!(cmdline.contains("hugepagesz=1G hugepages=1"), "{cmdline}");
    let one_g = sh(
        &lab,
        "q1",
        "cat /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
    );
    assert_eq!(
        sh(
            &lab,
            "q1",
            "cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
        ),
        "64",
        "the 2M pages come back from tmpfiles.d"
    );
    assert!(sh(&lab, "q1", "grep hugetlbfs /proc/mounts").contains("/dev/hugepages1G"));
    // 4 GiB: above the 4 GiB line a gigabyte stays free of the kernel's early allocations
    // (which take the top of memory), so the boot-time page can be reserved.
    let log = sh(
        &lab,
        "q1",
        "dmesg | grep -i -e hugetlb -e 'huge page' || true",
    );
    assert_eq!(
        one_g, "1",
        "the 1G page was not reserved at boot; kernel log:\n{log}"
    );
    let out = run(&lab, dir.path(), "q1", HUGEPAGES);
    assert_eq!(code(&out), 0, "second run: {}", text(&out));

    // Far too many: refused with the numbers, nothing written.
    let greedy = HUGEPAGES.replace("count: 64", "count: 4000");
    let out = run(&lab, dir.path(), "q1", &greedy);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("refusing to reserve 4000 x 2M (8000 MiB)"),
        "{t}"
    );
    assert!(t.contains("more than max_percent 90%"), "{t}");
    assert_eq!(
        sh(
            &lab,
            "q1",
            "cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
        ),
        "64"
    );
}
