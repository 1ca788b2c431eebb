//! End to end over real SSH: the `kvmforge` binary against Debian hosts booted as
//! systemd-nspawn containers by `tests/lab/lab.sh`. Needs root; skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    /// A working directory with an inventory for `hosts` of the lab, reached as `user`, with a
    /// private copy of the lab's known_hosts (so recording keys never touches the user's own).
    fn new(lab: &lab::Lab, hosts: &[&str], user: &str, extra_host_vars: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&lab.known_hosts, dir.path().join("known_hosts")).unwrap();
        let mut inv = format!(
            "all:\n  vars:\n    user: {user}\n    key: {}\n    known_hosts: {}\n  hosts:\n",
            lab.key.display(),
            dir.path().join("known_hosts").display()
        );
        for h in hosts {
            inv.push_str(&format!("    {h}:\n      host: {}\n", lab.addr(h)));
            if lab.behind_jump(h) {
                inv.push_str(&format!(
                    "      jump: root@{}\n      ssh_config: {}\n",
                    lab.jump.as_deref().unwrap(),
                    lab.ssh_config.display()
                ));
            }
            inv.push_str(extra_host_vars);
        }
        std::fs::write(dir.path().join("inventory.yaml"), inv).unwrap();
        Run { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn add_host(&self, name: &str, vars: &str) {
        let p = self.path("inventory.yaml");
        let mut inv = std::fs::read_to_string(&p).unwrap();
        inv.push_str(&format!("    {name}:\n{vars}"));
        std::fs::write(p, inv).unwrap();
    }

    fn kvmforge(&self, playbook: &str, args: &[&str]) -> Output {
        std::fs::write(self.path("site.yaml"), playbook).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .arg("run")
            .arg(self.path("site.yaml"))
            .arg("-i")
            .arg(self.path("inventory.yaml"))
            .args(["--connect-timeout", "5"])
            .args(args)
            .output()
            .unwrap()
    }
}

use lab::{exit_code as code, output_text as text};

fn events(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn recap(o: &Output) -> Value {
    events(o)
        .into_iter()
        .rev()
        .find(|e| e["event"] == "recap")
        .unwrap_or_else(|| panic!("no recap: {}", text(o)))
}

fn remote(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const FLEET: &str = r#"
- name: kvm fleet
  hosts: all
  tasks:
    - name: proxy for apt
      copy:
        dest: /etc/apt/apt.conf.d/90proxy
        content: "Acquire::http::Proxy \"http://10.0.0.1:3128\";\n"
    - name: proxy environment
      lineinfile: { path: /etc/environment, regexp: "^http_proxy=", line: "http_proxy=http://10.0.0.1:3128" }
    - name: bridge netfilter off
      sysctl_bridge: {}
    - name: host marker
      copy: { dest: /etc/kvmforge-host, content: "{{ inventory_hostname }}\n" }
    - name: pool directory
      file: { path: /var/lib/libvirt/images, state: directory, mode: "0711" }
    - name: sshd stays up
      service: { name: ssh, state: started, enabled: true }
    - name: routing for the VM network (Debian only)
      sysctl: { name: net.ipv4.ip_forward, value: "1", sysctl_file: /etc/sysctl.d/90-kvm.conf }
      when: eq facts.os_family "Debian"
"#;

#[test]
fn fleet_over_ssh() {
    let Some(lab) = lab::Lab::up("e2e-fleet", 10, Some(1)) else {
        return;
    };
    let fronts: Vec<String> = (1..=10).map(|i| format!("h{i}")).collect();
    let mut names: Vec<&str> = fronts.iter().map(String::as_str).collect();
    names.push("v1");
    let run = Run::new(&lab, &names, "root", "");

    // One host first: it changes; the others are untouched.
    let one = run.kvmforge(FLEET, &["-l", "h1", "--detailed-exitcode"]);
    assert_eq!(code(&one), 8, "{}", text(&one));
    assert_eq!(remote(&lab, "h1", "cat /etc/kvmforge-host"), "h1\n");
    assert_eq!(remote(&lab, "h2", "cat /etc/kvmforge-host 2>/dev/null"), "");

    // All eleven (v1 through the jump host): h1 is already done, the rest change.
    let all = run.kvmforge(FLEET, &["--output", "json", "--detailed-exitcode"]);
    assert_eq!(code(&all), 8, "{}", text(&all));
    let r = recap(&all);
    assert_eq!(r["hosts"]["h1"]["changed"], 0, "{r}");
    for h in &names[1..] {
        assert!(r["hosts"][h]["changed"].as_u64().unwrap() > 0, "{h}: {r}");
        assert_eq!(r["hosts"][h]["failed"], 0, "{h}: {r}");
        // Seven tasks, six of them changing: changes travel together with observations. One
        // invocation of these is the channel that holds the host lock and observes again
        // under it before the first change.
        assert!(
            r["hosts"][h]["invocations"].as_u64().unwrap() <= 5,
            "{h}: {r}"
        );
    }
    assert_eq!(remote(&lab, "v1", "cat /etc/kvmforge-host"), "v1\n");
    assert_eq!(
        remote(&lab, "h7", "stat -c %a /var/lib/libvirt/images"),
        "711\n"
    );
    assert_eq!(
        remote(
            &lab,
            "h7",
            "cat /proc/sys/net/bridge/bridge-nf-call-iptables"
        ),
        "0\n"
    );

    // Nothing left to do: exit 0, and about one remote invocation per host.
    let again = run.kvmforge(FLEET, &["--output", "json", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    let r = recap(&again);
    for h in &names {
        assert_eq!(r["hosts"][h]["changed"], 0, "{h}: {r}");
        assert_eq!(
            r["hosts"][h]["invocations"], 1,
            "{h}: one round trip when clean: {r}"
        );
    }

    // Drift on one host: check mode reports only that host and changes nothing; a run fixes it.
    lab.ssh("h5", "echo tampered > /etc/kvmforge-host");
    let check = run.kvmforge(
        FLEET,
        &["--check", "--output", "json", "--detailed-exitcode"],
    );
    assert_eq!(code(&check), 8, "{}", text(&check));
    let r = recap(&check);
    for h in &names {
        let expect = if *h == "h5" { 1 } else { 0 };
        assert_eq!(r["hosts"][h]["changed"], expect, "{h}: {r}");
    }
    assert_eq!(remote(&lab, "h5", "cat /etc/kvmforge-host"), "tampered\n");
    assert_eq!(code(&run.kvmforge(FLEET, &["--detailed-exitcode"])), 8);
    assert_eq!(remote(&lab, "h5", "cat /etc/kvmforge-host"), "h5\n");

    // A task failing on one host stops that host only.
    let failing = r#"
- hosts: all
  tasks:
    - name: breaks on h3
      shell: "test {{ inventory_hostname }} != h3"
    - name: after
      copy: { dest: /etc/kvmforge-after, content: "x\n" }
"#;
    let out = run.kvmforge(failing, &[]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_eq!(remote(&lab, "h4", "cat /etc/kvmforge-after"), "x\n");
    assert_eq!(
        remote(&lab, "h3", "cat /etc/kvmforge-after 2>/dev/null"),
        ""
    );

    // serial: batches of 4 finish in order.
    let rolling = r#"
- hosts: all
  serial: 4
  tasks:
    - name: rolling
      copy: { dest: /etc/kvmforge-rolling, content: "{{ inventory_hostname }}\n" }
    - name: second step
      copy: { dest: /etc/kvmforge-rolling2, content: "x\n" }
"#;
    let out = run.kvmforge(rolling, &["--output", "json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let order: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "result")
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order.len(), names.len() * 2);
    let batch_of = |h: &str| names.iter().position(|n| *n == h).unwrap() / 4;
    for w in order.windows(2) {
        assert!(
            batch_of(&w[0]) <= batch_of(&w[1]),
            "batches out of order: {order:?}"
        );
    }

    // Unreachable hosts: sshd stopped on h9, nothing at all at a spare address. The others finish.
    lab.stop_sshd("h9");
    let spare = {
        let a = lab.addr("h1");
        format!("{}.250", a.rsplit_once('.').unwrap().0)
    };
    run.add_host("ghost", &format!("      host: {spare}\n"));
    let out = run.kvmforge(FLEET, &["--output", "json"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let r = recap(&out);
    assert_eq!(r["hosts"]["h9"]["unreachable"], 1, "{r}");
    assert_eq!(r["hosts"]["ghost"]["unreachable"], 1, "{r}");
    assert_eq!(r["hosts"]["h8"]["unreachable"], 0, "{r}");
    assert_eq!(r["hosts"]["h8"]["ok"], 7, "{r}");
    let h9 = events(&out)
        .into_iter()
        .find(|e| e["host"] == "h9" && e["status"] == "unreachable")
        .unwrap();
    assert!(h9["msg"].as_str().unwrap().contains("refused"), "{h9}");
    lab.start_sshd("h9");

    // A changed host key is refused, naming the host and the fix.
    lab.rekey("h10");
    let out = run.kvmforge(FLEET, &["-l", "h10:h2"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("host key of") && all.contains("CHANGED"),
        "{all}"
    );
    assert!(
        all.contains(&format!("ssh-keygen -R {}", lab.addr("h10"))),
        "{all}"
    );
    assert!(all.contains("ok: [h2]"), "{all}");

    // The hosts of a later play are connected to while the first play runs: v1's login
    // (through the jump host) is accepted before h1's three-second play has ended.
    let plays = r#"
- name: first
  hosts: h1
  tasks:
    - command: sleep 3
    - shell: date +%s.%N > /tmp/first-play-end
- name: second
  hosts: v1
  tasks:
    - command: "true"
"#;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let out = run.kvmforge(plays, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let end: f64 = remote(&lab, "h1", "cat /tmp/first-play-end")
        .trim()
        .parse()
        .unwrap();
    let log = remote(
        &lab,
        "v1",
        &format!(
            "journalctl -q -o short-unix --since=@{} | grep 'Accepted publickey'",
            t0 as u64
        ),
    );
    let logins: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .filter(|t| *t >= t0)
        .collect();
    assert!(
        logins.first().is_some_and(|t| *t < end),
        "v1 logins {logins:?}, first play ended at {end}: {log}"
    );
}

#[test]
fn become_through_sudo() {
    let Some(lab) = lab::Lab::up("e2e-become", 1, None) else {
        return;
    };
    let playbook = r#"
- hosts: all
  become: true
  tasks:
    - name: root-owned file
      copy: { dest: /etc/kvmforge-become, content: "by {{ facts.user }}\n", mode: "0600" }
"#;
    // kfnopw: sudo without a password.
    let run = Run::new(&lab, &["h1"], "kfnopw", "");
    let out = run.kvmforge(playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        remote(&lab, "h1", "stat -c '%U %a' /etc/kvmforge-become"),
        "root 600\n"
    );
    assert_eq!(
        remote(&lab, "h1", "cat /etc/kvmforge-become"),
        "by kfnopw\n"
    );

    // A password given for a user whose sudo needs none is not used, and never shown.
    lab.ssh("h1", "rm -f /etc/kvmforge-become");
    let pw_nopw = run.path("pw-unneeded");
    std::fs::write(&pw_nopw, "unneeded-secret\n").unwrap();
    // Were the password line ever run as a command on the host, this would record it.
    lab.ssh(
        "h1",
        "printf '#!/bin/sh\\ntouch /tmp/kf-password-ran\\n' > /usr/local/bin/unneeded-secret && \
         chmod 755 /usr/local/bin/unneeded-secret && rm -f /tmp/kf-password-ran",
    );
    let out = run.kvmforge(
        playbook,
        &["--become-password-file", pw_nopw.to_str().unwrap(), "-v"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains("unneeded-secret"), "{}", text(&out));
    assert!(
        !lab.exec("h1", "test -e /tmp/kf-password-ran")
            .status
            .success(),
        "the sudo password was run as a command on the host"
    );
    assert_eq!(
        remote(&lab, "h1", "cat /etc/kvmforge-become"),
        "by kfnopw\n"
    );

    // kf: sudo wants a password. Without one: a clear failure.
    lab.ssh("h1", "rm -f /etc/kvmforge-become");
    let run = Run::new(&lab, &["h1"], "kf", "");
    let out = run.kvmforge(playbook, &[]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("become failed"), "{}", text(&out));

    // The inventory's own sudo password (Ansible's `ansible_become_password`) works and is
    // never shown, not even by `kvmforge inventory`.
    lab.ssh("h1", "rm -f /etc/kvmforge-become");
    let with_pw = Run::new(
        &lab,
        &["h1"],
        "kf",
        &format!("      ansible_become_password: \"{}\"\n", lab::KF_PASSWORD),
    );
    let out = with_pw.kvmforge(playbook, &["-v", "--diff"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains(lab::KF_PASSWORD), "{}", text(&out));
    assert_eq!(remote(&lab, "h1", "cat /etc/kvmforge-become"), "by kf\n");
    let shown = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .args(["inventory", "-i"])
        .arg(with_pw.path("inventory.yaml"))
        .args(["--host", "h1"])
        .output()
        .unwrap();
    assert_eq!(code(&shown), 0, "{}", text(&shown));
    assert!(!text(&shown).contains(lab::KF_PASSWORD), "{}", text(&shown));
    assert!(text(&shown).contains("<hidden>"), "{}", text(&shown));

    // A wrong password fails without showing it.
    lab.ssh("h1", "rm -f /etc/kvmforge-become");
    let pw = run.path("pw");
    std::fs::write(&pw, "wrong-secret\n").unwrap();
    let out = run.kvmforge(
        playbook,
        &["--become-password-file", pw.to_str().unwrap(), "-v"],
    );
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains("wrong-secret"), "{}", text(&out));

    // The right one works, and never appears in output either.
    std::fs::write(&pw, format!("{}\n", lab::KF_PASSWORD)).unwrap();
    let out = run.kvmforge(
        playbook,
        &[
            "--become-password-file",
            pw.to_str().unwrap(),
            "-v",
            "--diff",
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains(lab::KF_PASSWORD), "{}", text(&out));
    assert_eq!(
        remote(&lab, "h1", "stat -c '%U %a' /etc/kvmforge-become"),
        "root 600\n"
    );

    // Without become, the same user cannot write there: the task fails, the host stays intact.
    let plain = playbook.replace("  become: true\n", "");
    let out = run.kvmforge(&plain, &[]);
    assert_eq!(code(&out), 2, "{}", text(&out));
}

/// An inventory written for Ansible, as Ansible users have them: INI, legacy `ansible_ssh_*`
/// names, and a host behind a jump host reached only through the `ProxyCommand` in
/// `ansible_ssh_common_args` (no kvmforge-specific variable anywhere).
#[test]
fn ansible_ini_inventory_with_legacy_names_and_proxy_command() {
    let Some(lab) = lab::Lab::up("e2e-ansinv", 1, Some(1)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::copy(&lab.known_hosts, &kh).unwrap();
    let (key, kh) = (lab.key.display().to_string(), kh.display().to_string());
    let common =
        format!("-o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes");
    let inv = format!(
        "# written for Ansible\n\
         [front]\n\
         h1 ansible_ssh_host={h1} ansible_ssh_user=root\n\
         \n\
         [behind]\n\
         v1 ansible_ssh_host={v1}\n\
         \n\
         [all:vars]\n\
         ansible_ssh_private_key_file={key}\n\
         ansible_ssh_common_args='{common}'\n\
         \n\
         [behind:vars]\n\
         ansible_user=root\n\
         ansible_ssh_common_args='{common} -o ProxyCommand=\"ssh -F /dev/null -i {key} {common} -W %h:%p root@{jump}\"'\n",
        h1 = lab.addr("h1"),
        v1 = lab.addr("v1"),
        jump = lab.jump.as_deref().unwrap(),
    );
    let inv_path = dir.path().join("hosts");
    std::fs::write(&inv_path, inv).unwrap();
    let shown = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .args(["inventory", "-i"])
        .arg(&inv_path)
        .output()
        .unwrap();
    assert_eq!(code(&shown), 0, "{}", text(&shown));
    assert!(
        text(&shown).contains("\"format\": \"ini\""),
        "{}",
        text(&shown)
    );

    let playbook = dir.path().join("site.yaml");
    std::fs::write(
        &playbook,
        "- hosts: all\n  tasks:\n    - copy: { dest: /etc/kvmforge-ini, content: \"{{ inventory_hostname }}\\n\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&playbook)
        .arg("-i")
        .arg(&inv_path)
        .args(["--connect-timeout", "5"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(remote(&lab, "h1", "cat /etc/kvmforge-ini"), "h1\n");
    assert_eq!(remote(&lab, "v1", "cat /etc/kvmforge-ini"), "v1\n");
}
