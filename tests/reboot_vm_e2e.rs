//! Reboots for real: a kernel argument added with grub_cmdline on a QEMU VM host, the `reboot`
//! task rebooting it because of that, the run waiting and carrying on with the next task on the
//! new boot, the argument verified in /proc/cmdline; a second run reboots nothing; a host that
//! does not come back in time fails clearly while another host finishes its tasks.
//! Needs root and QEMU; skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};

use lab::{exit_code as code, output_text as text};

fn run(lab: &lab::Lab, dir: &std::path::Path, playbook: &str) -> Output {
    let pb = dir.join("reboot.yaml");
    std::fs::write(&pb, playbook).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["--connect-timeout", "10", "--detailed-exitcode", "-v"])
        .output()
        .unwrap()
}

fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(out.status.success(), "{host}: `{cmd}`: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const PLAY: &str = "- hosts: all
  gather_facts: false
  tasks:
    - name: a kernel argument on the VM
      grub_cmdline: { args: [kvmforge_lab_mark=1] }
      when: eq inventory_hostname \"q1\"
    - name: reboot the VM if that needs it, and check the argument is in use
      reboot: { verify_cmdline: [kvmforge_lab_mark=1], reboot_timeout: 600 }
      when: eq inventory_hostname \"q1\"
    - name: reboot the container only if it needs it
      reboot: {}
      when: eq inventory_hostname \"h1\"
    - name: the run goes on after the reboot
      shell: cat /proc/sys/kernel/random/boot_id > /var/tmp/after-reboot
";

#[test]
fn reboot_waits_for_the_new_boot_and_goes_on() {
    let Some(lab) = lab::Lab::up_with("e2e-reboot", 1, None, &[lab::Vm::default()]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let boot0 = on(&lab, "q1", "cat /proc/sys/kernel/random/boot_id");
    let h1_boot = on(&lab, "h1", "cat /proc/sys/kernel/random/boot_id");

    let out = run(&lab, dir.path(), PLAY);
    assert_eq!(code(&out), 8, "{}", text(&out));
    let boot1 = on(&lab, "q1", "cat /proc/sys/kernel/random/boot_id");
    assert_ne!(boot1, boot0, "q1 did not reboot: {}", text(&out));
    assert!(on(&lab, "q1", "cat /proc/cmdline").contains("kvmforge_lab_mark=1"));
    // The task after the reboot ran on the new boot.
    assert_eq!(on(&lab, "q1", "cat /var/tmp/after-reboot"), boot1);
    // h1 needed no reboot and got none.
    assert_eq!(
        on(&lab, "h1", "cat /proc/sys/kernel/random/boot_id"),
        h1_boot
    );
    assert!(text(&out).contains("no reboot required"), "{}", text(&out));

    // Nothing is required any more: no reboot (the shell task always reports changed).
    let out = run(&lab, dir.path(), PLAY);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert_eq!(
        on(&lab, "q1", "cat /proc/sys/kernel/random/boot_id"),
        boot1,
        "{}",
        text(&out)
    );

    // A host that does not come back in time (a VM boot takes far longer than 10 s here): the
    // task fails saying so, the other host finishes its tasks.
    on(&lab, "h1", "rm -f /var/tmp/after-reboot");
    let slow = "- hosts: all
  gather_facts: false
  tasks:
    - reboot: { when_required: false, reboot_timeout: 10 }
      when: eq inventory_hostname \"q1\"
    - shell: echo done > /var/tmp/after-reboot
";
    let t0 = std::time::Instant::now();
    let out = run(&lab, dir.path(), slow);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(t0.elapsed().as_secs() < 60, "took {:?}", t0.elapsed());
    assert!(
        text(&out).contains("did not come back within 10 s"),
        "{}",
        text(&out)
    );
    assert_eq!(on(&lab, "h1", "cat /var/tmp/after-reboot"), "done");
}
