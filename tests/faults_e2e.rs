//! Faults end to end: the `kvmforge` binary against lab hosts that lose sshd, their network,
//! their power or their disk space in the middle of a run, two runs at once, and a search for
//! planted secrets in everything a run shows. Needs root; skipped loudly otherwise. The README's
//! "Reliability" table cites these tests by name.

#[path = "support/lab.rs"]
mod lab;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    /// A working directory with an inventory for `hosts` of the lab, reached as `user`, with a
    /// private copy of the lab's known_hosts.
    fn new(lab: &lab::Lab, hosts: &[&str], user: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&lab.known_hosts, dir.path().join("known_hosts")).unwrap();
        let mut inv = format!(
            "all:\n  vars:\n    user: {user}\n    key: {}\n    known_hosts: {}\n  hosts:\n",
            lab.key.display(),
            dir.path().join("known_hosts").display()
        );
        for h in hosts {
            inv.push_str(&format!("    {h}:\n      host: {}\n", lab.addr(h)));
        }
        std::fs::write(dir.path().join("inventory.yaml"), inv).unwrap();
        Run { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self, playbook: &str, args: &[&str]) -> Command {
        let name = format!("site-{}.yaml", playbook.len());
        std::fs::write(self.path(&name), playbook).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvmforge"));
        c.arg("run")
            .arg(self.path(&name))
            .arg("-i")
            .arg(self.path("inventory.yaml"))
            .args(["--connect-timeout", "5"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn kvmforge(&self, playbook: &str, args: &[&str]) -> Output {
        self.command(playbook, args).output().unwrap()
    }

    fn spawn(&self, playbook: &str, args: &[&str]) -> Child {
        self.command(playbook, args).spawn().unwrap()
    }
}

use lab::{exit_code as code, output_text as text};

fn events(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
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

fn result_of(o: &Output, host: &str, task: &str) -> Value {
    events(o)
        .into_iter()
        .find(|e| e["event"] == "result" && e["host"] == host && e["task"] == task)
        .unwrap_or_else(|| panic!("no result of {task} on {host}: {}", text(o)))
}

/// Run a command inside the host (no ssh needed).
fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.exec(host, cmd);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `cmd` on the host prints something (up to `limit`).
fn wait_for(lab: &lab::Lab, host: &str, cmd: &str, limit: Duration) {
    let start = Instant::now();
    while on(lab, host, cmd).trim().is_empty() {
        assert!(start.elapsed() < limit, "{host}: `{cmd}` never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Temporary files of kvmforge's writes under `dir` on the host.
fn leftovers(lab: &lab::Lab, host: &str, dir: &str) -> String {
    on(lab, host, &format!("find {dir} -name '.kvmforge.*'"))
}

const SSHD_PLAY: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: first
      copy: { dest: /etc/kf-fault/a, content: "new a {{ inventory_hostname }}\n" }
    - name: slow
      command: sleep 5
    - name: second
      copy: { dest: /etc/kf-fault/b, content: "new b {{ inventory_hostname }}\n" }
"#;

/// sshd (listener and sessions) killed on one host while it runs a slow command between two
/// writes: that host is reported unreachable, the other finishes, every file on it has its old
/// or its new content, no temporary file is left, and the next run converges.
#[test]
fn sshd_killed_mid_apply() {
    let Some(lab) = lab::Lab::up("e2e-fault-sshd", 2, None) else {
        return;
    };
    let run = Run::new(&lab, &["h1", "h2"], "root");
    for h in ["h1", "h2"] {
        on(
            &lab,
            h,
            "mkdir -p /etc/kf-fault && echo 'old a' > /etc/kf-fault/a && echo 'old b' > /etc/kf-fault/b",
        );
    }
    let child = run.spawn(SSHD_PLAY, &["--output", "json"]);
    wait_for(&lab, "h1", "pgrep -x sleep", Duration::from_secs(30));
    on(&lab, "h1", "pkill -KILL -x sshd; true");
    let out = child.wait_with_output().unwrap();
    assert!([4, 6].contains(&code(&out)), "{}", text(&out));
    let r = recap(&out);
    assert_eq!(r["hosts"]["h1"]["unreachable"], 1, "{r}");
    assert_eq!(r["hosts"]["h2"]["failed"], 0, "{r}");
    assert_eq!(r["hosts"]["h2"]["unreachable"], 0, "{r}");
    assert_eq!(on(&lab, "h2", "cat /etc/kf-fault/b"), "new b h2\n");
    // The orphaned script on h1 ends when its output has nowhere to go.
    std::thread::sleep(Duration::from_secs(6));
    let a = on(&lab, "h1", "cat /etc/kf-fault/a");
    let b = on(&lab, "h1", "cat /etc/kf-fault/b");
    assert!(a == "old a\n" || a == "new a h1\n", "a: {a:?}");
    assert!(b == "old b\n" || b == "new b h1\n", "b: {b:?}");
    assert_eq!(leftovers(&lab, "h1", "/etc/kf-fault"), "");
    lab.start_sshd("h1");
    let out = run.kvmforge(SSHD_PLAY, &["--output", "json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        on(&lab, "h1", "cat /etc/kf-fault/a /etc/kf-fault/b"),
        "new a h1\nnew b h1\n"
    );
}

/// A full file system (a 64 KiB tmpfs over the target directory, filled) and a read-only one (a
/// read-only bind mount): the write fails with the system's reason, the old file stays, no
/// temporary file is left, the host stops there (exit 2).
#[test]
fn full_and_read_only_file_systems() {
    let Some(lab) = lab::Lab::up("e2e-fault-fs", 1, None) else {
        return;
    };
    let run = Run::new(&lab, &["h1"], "root");
    let setup = "mkdir -p /srv/full /srv/ro && mount -t tmpfs -o size=64k tmpfs /srv/full && \
         echo old > /srv/full/f && (dd if=/dev/zero of=/srv/full/filler bs=4k 2>/dev/null; true) && \
         echo old > /srv/ro/f && mount --bind /srv/ro /srv/ro && mount -o remount,bind,ro /srv/ro && \
         echo mounted";
    assert_eq!(on(&lab, "h1", setup).trim(), "mounted");
    let play = |dest: &str| {
        format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: write\n      copy: {{ dest: {dest}, content: \"new content\\n\" }}\n    - name: after\n      copy: {{ dest: /srv/after, content: \"x\\n\" }}\n"
        )
    };
    for (dest, reason) in [
        ("/srv/full/f", "No space left on device"),
        ("/srv/ro/f", "Read-only file system"),
    ] {
        let out = run.kvmforge(&play(dest), &["--output", "json"]);
        assert_eq!(code(&out), 2, "{}", text(&out));
        let w = result_of(&out, "h1", "write");
        assert_eq!(w["status"], "failed", "{w}");
        assert!(w["msg"].as_str().unwrap().contains(reason), "{w}");
        assert_eq!(on(&lab, "h1", &format!("cat {dest}")), "old\n");
        let dir = dest.rsplit_once('/').unwrap().0;
        assert_eq!(leftovers(&lab, "h1", dir), "");
        assert_eq!(on(&lab, "h1", "cat /srv/after 2>/dev/null"), "");
    }
    on(&lab, "h1", "umount /srv/full; umount /srv/ro");
}

const LOCK_PLAY: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: "{{ who }} works"
      shell: "echo {{ who }}-start >> /tmp/kf-order; sleep 3; echo {{ who }}-end >> /tmp/kf-order"
"#;

/// Two runs against one host at once: the second waits for the first one's changes, says so
/// (naming the holder), and they never interleave; a run that observed before the other's
/// changes observes again once it has the lock; a guarded network change keeps the lock until
/// it is rolled back; with a short `--lock-timeout` it gives up clearly and changes nothing. A
/// run that changes nothing takes no lock and stays at one invocation.
#[test]
fn two_runs_at_once_take_turns() {
    let Some(lab) = lab::Lab::up("e2e-fault-lock", 1, None) else {
        return;
    };
    let run = Run::new(&lab, &["h1"], "root");
    on(&lab, "h1", "rm -f /tmp/kf-order");
    let first = run.spawn(LOCK_PLAY, &["-e", "who=A"]);
    let first_pid = first.id();
    wait_for(
        &lab,
        "h1",
        "cat /tmp/kf-order 2>/dev/null",
        Duration::from_secs(30),
    );
    let started = Instant::now();
    let second = run.kvmforge(LOCK_PLAY, &["-e", "who=B"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "waiting for another kvmforge run on h1 (pid {first_pid} on "
        )) && stderr.contains(", since "),
        "{stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let first = first.wait_with_output().unwrap();
    assert_eq!(code(&first), 0, "{}", text(&first));
    assert_eq!(
        on(&lab, "h1", "cat /tmp/kf-order"),
        "A-start\nA-end\nB-start\nB-end\n"
    );

    // Between its observation and its apply: the second run observes before the first one
    // writes, waits for the lock, observes again under it, and finds nothing left to do.
    on(&lab, "h1", "rm -f /tmp/kf-order /tmp/kf-shared");
    let slow_then_write = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: slow\n      shell: \"echo A-start >> /tmp/kf-order; sleep 4; echo A-end >> /tmp/kf-order\"\n    - name: shared\n      copy: { dest: /tmp/kf-shared, content: \"same\\n\" }\n";
    let write_only = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: shared\n      copy: { dest: /tmp/kf-shared, content: \"same\\n\" }\n";
    let first = run.spawn(slow_then_write, &[]);
    wait_for(
        &lab,
        "h1",
        "cat /tmp/kf-order 2>/dev/null",
        Duration::from_secs(30),
    );
    let second = run.kvmforge(write_only, &["--output", "json"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("waiting for another kvmforge run on h1"),
        "{}",
        text(&second)
    );
    let shared = result_of(&second, "h1", "shared");
    assert_eq!(
        shared["status"], "ok",
        "observed again under the lock: {shared}"
    );
    assert_eq!(code(&first.wait_with_output().unwrap()), 0);
    assert_eq!(on(&lab, "h1", "cat /tmp/kf-order"), "A-start\nA-end\n");
    assert_eq!(on(&lab, "h1", "cat /tmp/kf-shared"), "same\n");

    // A guarded network change holds the lock until it is settled, though the controller
    // confirms over new connections: here its check fails, so it is rolled back, and a run
    // started meanwhile waits for all of that.
    let (nic, addr) = lab.nic("h1");
    let guarded = format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: bridge over the only NIC\n      \
         netplan_bridge:\n        name: br0\n        interfaces: [{nic}]\n        addresses: [{addr}]\n        \
         take_over: true\n      rollback_timeout: 15\n      verify: \"false\"\n"
    );
    on(&lab, "h1", "rm -f /tmp/kf-order");
    let first = run.spawn(&guarded, &[]);
    wait_for(
        &lab,
        "h1",
        "ls /var/lib/kvmforge/guard/*/armed 2>/dev/null",
        Duration::from_secs(60),
    );
    let during = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: during the guard\n      shell: \"if ls /var/lib/kvmforge/guard/*/armed >/dev/null 2>&1 && ! ls /var/lib/kvmforge/guard/*/rolled-back >/dev/null 2>&1; then echo B-during-guard; else echo B-after-guard; fi >> /tmp/kf-order\"\n";
    let second = run.kvmforge(during, &[]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("waiting for another kvmforge run on h1"),
        "{}",
        text(&second)
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(code(&first), 2, "{}", text(&first));
    assert!(text(&first).contains("rolled back;"), "{}", text(&first));
    assert_eq!(on(&lab, "h1", "cat /tmp/kf-order"), "B-after-guard\n");

    // Giving up: a failure naming the holder, nothing done.
    let first = run.spawn(LOCK_PLAY, &["-e", "who=C"]);
    wait_for(
        &lab,
        "h1",
        "grep C-start /tmp/kf-order",
        Duration::from_secs(30),
    );
    let out = run.kvmforge(
        LOCK_PLAY,
        &["-e", "who=D", "--lock-timeout", "1", "--output", "json"],
    );
    assert_eq!(code(&out), 2, "{}", text(&out));
    let d = result_of(&out, "h1", "{{ who }} works");
    let msg = d["msg"].as_str().unwrap();
    assert!(
        msg.contains("another kvmforge run holds the host lock (pid")
            && msg.contains("gave up waiting after 1 s"),
        "{d}"
    );
    assert_eq!(code(&first.wait_with_output().unwrap()), 0);
    assert!(!on(&lab, "h1", "cat /tmp/kf-order").contains("D-start"));

    // The drift check that finds nothing: one invocation, no lock taken.
    let noop = "- hosts: all\n  gather_facts: false\n  tasks:\n    - copy: { dest: /etc/kf-noop, content: \"x\\n\" }\n";
    assert_eq!(code(&run.kvmforge(noop, &[])), 0);
    let out = run.kvmforge(noop, &["--output", "json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        recap(&out)["hosts"]["h1"]["invocations"],
        1,
        "{}",
        text(&out)
    );
}

/// A host whose network is cut while it is being observed: the per-invocation timeout fires,
/// the host is unreachable with that reason, the other host finishes and the run ends.
#[test]
fn network_cut_during_observation() {
    let Some(lab) = lab::Lab::up("e2e-fault-net", 2, None) else {
        return;
    };
    let run = Run::new(&lab, &["h1", "h2"], "root");
    // Play 1 connects to both hosts; h2 then sleeps while h1 waits for play 2, whose first
    // observation on h1 meets the cut network.
    let play = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: connect
      copy: { dest: /etc/kf-net-1, content: "x\n" }
    - name: h2 sleeps
      command: sleep 4
      when: eq inventory_hostname "h2"
- hosts: all
  gather_facts: false
  tasks:
    - name: observe
      copy: { dest: /etc/kf-net-2, content: "y\n" }
"#;
    let started = Instant::now();
    let child = run.spawn(play, &["--output", "json", "--timeout", "6"]);
    wait_for(&lab, "h2", "pgrep -x sleep", Duration::from_secs(30));
    lab.unplug("h1");
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    lab.plug("h1");
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(took < Duration::from_secs(40), "took {took:?}");
    let r = result_of(&out, "h1", "observe");
    assert_eq!(r["status"], "unreachable", "{r}");
    assert!(
        r["msg"]
            .as_str()
            .unwrap()
            .contains("timed out after 6 s (--timeout 6); raise the limit with --timeout SECONDS"),
        "{r}"
    );
    assert_eq!(result_of(&out, "h2", "observe")["status"], "changed");
}

/// Ctrl-C while four hosts run a slow command: the commands in flight finish, nothing new
/// starts on any host, no temporary file is left, exit 130 with the recap.
#[test]
fn ctrl_c_on_many_hosts() {
    let Some(lab) = lab::Lab::up("e2e-fault-int", 4, None) else {
        return;
    };
    let hosts = ["h1", "h2", "h3", "h4"];
    let run = Run::new(&lab, &hosts, "root");
    let play = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: slow
      shell: "sleep 3 && echo finished > /etc/kf-slow"
    - name: never started
      copy: { dest: /etc/kf-next, content: "x\n" }
"#;
    let child = run.spawn(play, &["--output", "json"]);
    for h in hosts {
        wait_for(&lab, h, "pgrep -x sleep", Duration::from_secs(30));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    assert_eq!(recap(&out)["interrupted"], true);
    std::thread::sleep(Duration::from_secs(3));
    for h in hosts {
        assert_eq!(on(&lab, h, "cat /etc/kf-slow"), "finished\n", "{h}");
        assert_eq!(on(&lab, h, "cat /etc/kf-next 2>/dev/null"), "", "{h}");
        assert_eq!(leftovers(&lab, h, "/etc"), "", "{h}");
    }
}

const SECRET_VAR: &str = "NoLogS3cret-4711";
const SECRET_TEMPLATE: &str = "TplS3cret-0815";

const SECRETS_PLAY: &str = r#"
- hosts: all
  become: true
  vars:
    db_password: NoLogS3cret-4711
    api_token: TplS3cret-0815
  tasks:
    - name: database password
      copy: { dest: /etc/kf-secret, content: "password={{ db_password }}\n", mode: "0600" }
      no_log: true
    - name: application config from a template
      template: { src: app.conf, dest: /etc/kf-app.conf, mode: "0600" }
      no_log: true
    - name: slow enough to be seen in the process lists
      command: sleep 2
    - name: a failure that would print the secret
      shell: "echo {{ db_password }} >&2; exit 3"
      no_log: true
      ignore_errors: true
"#;

/// Everything visible while a run goes on: the controller's and the target's process lists,
/// sampled until the run ends.
fn watch_processes(lab: &lab::Lab, child: &mut Child) -> String {
    let mut seen = String::new();
    while child.try_wait().unwrap().is_none() {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        seen.push_str(&String::from_utf8_lossy(&ps.stdout));
        seen.push_str(&on(lab, "h1", "ps -eo args"));
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// Planted secrets (a `no_log` variable, a secret rendered by a template, the sudo password
/// given with -K and with --become-password-file) appear in no output of a run: human and JSON,
/// -v/-vv, --diff, check mode, failure messages, the recap, the controller's and the target's
/// process lists during the run, the target's journal.
#[test]
fn secrets_stay_out_of_every_output() {
    let Some(lab) = lab::Lab::up("e2e-fault-secrets", 1, None) else {
        return;
    };
    let run = Run::new(&lab, &["h1"], "kf");
    std::fs::create_dir_all(run.path("templates")).unwrap();
    std::fs::write(run.path("templates/app.conf"), "token={{ api_token }}\n").unwrap();
    let secrets = [SECRET_VAR, SECRET_TEMPLATE, lab::KF_PASSWORD];
    let check = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows {s}:\n{text}");
        }
    };

    // -K: the password typed on stdin; human output, -vv, --diff.
    let mut child = run
        .command(SECRETS_PLAY, &["-K", "-vv", "--diff"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", lab::KF_PASSWORD).unwrap();
    }
    let seen = watch_processes(&lab, &mut child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("censored"), "{}", text(&out));
    assert!(
        seen.contains("sleep 2"),
        "the process lists were sampled during the run"
    );
    check("-K -vv --diff", &text(&out));
    check("the process lists during the run", &seen);
    assert_eq!(
        on(&lab, "h1", "cat /etc/kf-secret /etc/kf-app.conf"),
        format!("password={SECRET_VAR}\ntoken={SECRET_TEMPLATE}\n")
    );

    // --become-password-file, JSON, -v, --diff, after drift: the diffs of the secret files.
    on(
        &lab,
        "h1",
        "echo drift > /etc/kf-secret; echo drift > /etc/kf-app.conf",
    );
    let pw = run.path("become-password");
    std::fs::write(&pw, format!("{}\n", lab::KF_PASSWORD)).unwrap();
    let pw = pw.to_str().unwrap();
    let out = run.kvmforge(
        SECRETS_PLAY,
        &[
            "--become-password-file",
            pw,
            "--check",
            "--diff",
            "--output",
            "json",
            "-v",
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    check("check mode, JSON, --diff", &text(&out));
    let mut child = run.spawn(
        SECRETS_PLAY,
        &[
            "--become-password-file",
            pw,
            "--diff",
            "--output",
            "json",
            "-vv",
        ],
    );
    let seen = watch_processes(&lab, &mut child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    check("--become-password-file, JSON, -vv, --diff", &text(&out));
    check("the process lists during the run", &seen);
    let failure = result_of(&out, "h1", "a failure that would print the secret");
    assert_eq!(failure["status"], "failed", "{failure}");

    // A wrong password: the failure does not repeat it.
    std::fs::write(run.path("wrong"), "Wr0ngPassw0rd-99\n").unwrap();
    let out = run.kvmforge(
        SECRETS_PLAY,
        &[
            "--become-password-file",
            run.path("wrong").to_str().unwrap(),
            "-vv",
        ],
    );
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains("Wr0ngPassw0rd-99"), "{}", text(&out));

    // The target's journal (sshd, sudo, and whatever else logged during the runs).
    let journal = on(
        &lab,
        "h1",
        "journalctl --no-pager -o cat 2>/dev/null; cat /var/log/auth.log 2>/dev/null",
    );
    assert!(
        journal.contains("sudo") || journal.contains("sshd"),
        "journal: {journal}"
    );
    check("the target's journal", &journal);
}

/// On a VM (its own kernel and disk): the host powered off in the middle of a play ends the run
/// at the per-invocation timeout, with the host unreachable and the reason; and the power lost
/// the moment a run that wrote 50 files ends (QEMU killed, booted again) leaves every file with
/// its new content, none empty or truncated.
#[test]
fn vm_power_off_mid_play_and_power_loss_after_a_run() {
    // A kill is a power cut: no orderly shutdown first.
    std::env::set_var("KVMFORGE_LAB_KILL_GRACE", "0");
    let Some(lab) = lab::Lab::up_with("e2e-fault-vm", 1, None, &[lab::Vm::default()]) else {
        return;
    };
    let run = Run::new(&lab, &["h1", "q1"], "root");

    let play = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: slow
      shell: "touch /tmp/kf-slow-started && sleep 25"
    - name: after
      copy: { dest: /etc/kf-after, content: "x\n" }
"#;
    lab.ssh("q1", "rm -f /tmp/kf-slow-started");
    let child = run.spawn(play, &["--output", "json", "--timeout", "40"]);
    wait_for(
        &lab,
        "q1",
        "test -e /tmp/kf-slow-started && echo started",
        Duration::from_secs(120),
    );
    let killed = Instant::now();
    lab.kill("q1");
    let out = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        took < Duration::from_secs(60),
        "took {took:?} after the power cut"
    );
    let r = result_of(&out, "q1", "slow");
    assert_eq!(r["status"], "unreachable", "{r}");
    assert!(
        r["msg"].as_str().unwrap().contains(
            "timed out after 40 s (--timeout 40); raise the limit with --timeout SECONDS"
        ),
        "{r}"
    );
    let after = result_of(&out, "h1", "after");
    assert!(
        ["ok", "changed"].contains(&after["status"].as_str().unwrap()),
        "{after}"
    );
    lab.start("q1");

    // Fifty files, half of them replacing older ones; the power goes the moment the run ends.
    let items: Vec<String> = (1..=50).map(|i| format!("f{i:02}")).collect();
    lab.ssh(
        "q1",
        "mkdir -p /etc/kf-power && for i in $(seq -w 1 25); do echo old > /etc/kf-power/f$i; done && sync",
    );
    let play = format!(
        "- hosts: q1\n  gather_facts: false\n  tasks:\n    - name: many files\n      copy:\n        dest: \"/etc/kf-power/{{{{ item }}}}\"\n        content: \"{{{{ item }}}} {}\\n\"\n      loop: [{}]\n",
        "new content ".repeat(80),
        items.join(", ")
    );
    let out = run.kvmforge(&play, &["--output", "json"]);
    lab.kill("q1");
    assert_eq!(code(&out), 0, "{}", text(&out));
    lab.start("q1");
    let got = String::from_utf8_lossy(
        &lab.ssh(
            "q1",
            "cd /etc/kf-power && for f in f*; do printf '%s:' $f; cat $f; done",
        )
        .stdout,
    )
    .into_owned();
    for i in &items {
        let want = format!("{i}:{i} {}\n", "new content ".repeat(80));
        assert!(got.contains(&want), "{i} lost its new content:\n{got}");
    }
    assert_eq!(
        String::from_utf8_lossy(
            &lab.ssh("q1", "find /etc/kf-power -name '.kvmforge.*'")
                .stdout
        ),
        ""
    );
}
