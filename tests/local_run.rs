//! End-to-end runs of the `kvmforge` binary with the local connection against temporary
//! directories: files really change, re-runs change nothing, drift is found and corrected.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(playbook: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(
            dir.path().join("inventory.yaml"),
            format!(
                "all:\n  vars:\n    root: {}\n  hosts:\n    localhost:\n      connection: local\n",
                root.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("site.yaml"), playbook).unwrap();
        Site { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("root").join(rel)
    }

    fn file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    fn run(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .arg("run")
            .arg(self.dir.path().join("site.yaml"))
            .arg("-i")
            .arg(self.dir.path().join("inventory.yaml"))
            .args(extra)
            .output()
            .unwrap()
    }

    fn write_extra(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

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

const CONVERGE: &str = r#"
- name: converge
  hosts: localhost
  vars:
    greeting: hello
  tasks:
    - name: plain file
      copy:
        dest: "{{ root }}/etc/app.conf"
        content: "greeting={{ greeting }} it's \"quoted\" $HOME\n"
        mode: "0640"
    - name: second file
      copy:
        dest: "{{ root }}/etc/other.conf"
        content: "x=1\n"
      notify: marker
  handlers:
    - name: marker
      copy:
        dest: "{{ root }}/handler-ran"
        content: "yes\n"
"#;

#[test]
fn converges_then_changes_nothing_then_finds_and_fixes_drift() {
    let site = Site::new(CONVERGE);
    let first = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    assert_eq!(
        site.file("etc/app.conf").as_deref(),
        Some("greeting=hello it's \"quoted\" $HOME\n")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(site.path("etc/app.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(site.file("handler-ran").as_deref(), Some("yes\n"));

    // Nothing to do: exit 0 even with --detailed-exitcode, and the handler is not notified.
    std::fs::remove_file(site.path("handler-ran")).unwrap();
    let second = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    assert!(site.file("handler-ran").is_none());

    // Drift: check mode reports it (exit 8) and touches nothing.
    std::fs::write(site.path("etc/app.conf"), "tampered\n").unwrap();
    let check = site.run(&["--check", "--diff", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("-tampered"),
        "{}",
        text(&check)
    );
    assert_eq!(site.file("etc/app.conf").as_deref(), Some("tampered\n"));
    assert!(
        site.file("handler-ran").is_none(),
        "handlers do not run in check mode without changes"
    );

    // A normal run corrects it, the next one is clean again.
    let fix = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&fix), 8, "{}", text(&fix));
    assert!(site
        .file("etc/app.conf")
        .unwrap()
        .starts_with("greeting=hello"));
    assert_eq!(
        std::fs::metadata(site.path("etc/app.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert_eq!(code(&site.run(&["--detailed-exitcode"])), 0);
}

#[test]
fn check_mode_on_a_fresh_host_changes_nothing() {
    let site = Site::new(CONVERGE);
    let check = site.run(&["--check", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    assert!(!site.path("etc").exists());
}

#[test]
fn undefined_variable_is_reported_before_anything_is_touched() {
    let site = Site::new(
        r#"
- hosts: localhost
  tasks:
    - name: would run first
      copy: { dest: "{{ root }}/first", content: "a" }
    - name: uses a typo
      copy: { dest: "{{ root }}/second", content: "{{ greting }}" }
"#,
    );
    let out = site.run(&[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`greting`"), "{err}");
    assert!(err.contains("uses a typo"), "{err}");
    assert!(err.contains("localhost"), "{err}");
    assert!(
        !site.path("first").exists(),
        "validation must happen before any change"
    );
}

#[test]
fn yaml_and_module_errors_name_file_line_column() {
    let site = Site::new("- hosts: localhost\n  tasks:\n    - name: x\n      copy:\n        dest: /x\n        mdoe: \"0644\"\n");
    let out = site.run(&[]);
    assert_eq!(code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "site.yaml:6:9: module `copy`: unknown parameter `mdoe` (did you mean `mode`?)"
        ),
        "{err}"
    );

    let site = Site::new("- hosts: localhost\n  tasks:\n    - copy: {dest: /x\n");
    let out = site.run(&[]);
    assert_eq!(code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("site.yaml:"), "{err}");
}

#[test]
fn json_output_is_one_object_per_line_and_counts_round_trips() {
    let site = Site::new(CONVERGE);
    assert_eq!(code(&site.run(&[])), 0);
    let out = site.run(&["--output", "json", "--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events[0]["event"], "play");
    let results: Vec<_> = events.iter().filter(|e| e["event"] == "result").collect();
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|r| r["status"] == "ok" && r["host"] == "localhost"));
    let recap = events.last().unwrap();
    assert_eq!(recap["event"], "recap");
    assert_eq!(recap["exit_code"], 0);
    // Facts and every task's observations in one invocation: nothing changed, one round trip.
    assert_eq!(recap["hosts"]["localhost"]["invocations"], 1, "{recap}");
    assert_eq!(recap["hosts"]["localhost"]["ok"], 2);
}

#[test]
fn failures_exit_2_and_ignore_errors_continues() {
    let site = Site::new(
        r#"
- hosts: localhost
  tasks:
    - name: cannot write under a file
      copy: { dest: "{{ root }}/blocker/x", content: "a" }
      ignore_errors: true
    - name: after the ignored failure
      copy: { dest: "{{ root }}/after", content: "a" }
    - name: fails for real
      copy: { dest: "{{ root }}/blocker/y", content: "a" }
    - name: never reached
      copy: { dest: "{{ root }}/never", content: "a" }
"#,
    );
    std::fs::write(site.path("blocker"), "a file, not a directory").unwrap();
    let out = site.run(&[]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(site.path("after").exists());
    assert!(!site.path("never").exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed (ignored)"), "{stdout}");
}

#[test]
fn registered_results_when_and_loops() {
    let site = Site::new(
        r#"
- hosts: localhost
  vars:
    names: [a, b, c]
  tasks:
    - name: one file per item
      copy: { dest: "{{ root }}/{{ item }}", content: "{{ item }}\n" }
      loop: "{{ names }}"
      register: made
    - name: only when something changed
      copy: { dest: "{{ root }}/summary", content: "changed={{ made.changed }} n={{len made.results}}\n" }
      when: "{{ made.changed }}"
    - name: skipped by condition
      copy: { dest: "{{ root }}/skipped", content: "x" }
      when: eq inventory_hostname "elsewhere"
"#,
    );
    let out = site.run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for n in ["a", "b", "c"] {
        assert_eq!(site.file(n).as_deref(), Some(format!("{n}\n").as_str()));
    }
    assert_eq!(site.file("summary").as_deref(), Some("changed=true n=3\n"));
    assert!(!site.path("skipped").exists());
    // Second run: the loop changes nothing, so the summary task is skipped and keeps its content.
    let out = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(site.file("summary").as_deref(), Some("changed=true n=3\n"));
}

/// Validation renders every task once and the run reuses that rendering only when nothing it
/// used can still change: a variable that a later `register` replaces, or one whose template
/// waits for facts, must be rendered again when the task runs.
#[test]
fn renderings_reused_only_when_final() {
    let site = Site::new(
        r#"
- hosts: localhost
  vars:
    out: from the play
    kernel_line: "kernel={{ facts.kernel }}"
    fixed: plain
  tasks:
    - name: fixed content
      copy: { dest: "{{ root }}/fixed", content: "{{ fixed }}\n" }
    - name: replace a variable with a result
      command: echo from the command
      register: out
      changed_when: false
    - name: the registered value
      copy: { dest: "{{ root }}/out", content: "{{ out.stdout }}\n" }
    - name: a variable waiting for facts
      copy: { dest: "{{ root }}/kernel", content: "{{ kernel_line }}\n" }
      changed_when: "{{ eq facts.kernel facts.kernel }}"
"#,
    );
    let out = site.run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let uname = Command::new("uname").arg("-r").output().unwrap();
    let kernel = String::from_utf8_lossy(&uname.stdout).trim().to_string();
    assert_eq!(site.file("fixed").as_deref(), Some("plain\n"));
    assert_eq!(site.file("out").as_deref(), Some("from the command\n"));
    assert_eq!(
        site.file("kernel"),
        Some(format!("kernel={kernel}\n")),
        "{}",
        text(&out)
    );
}

#[test]
fn magic_variables_in_arguments_and_template_files() {
    let site = Site::new(
        r#"
- hosts: localhost
  tasks:
    - name: from arguments
      copy: { dest: "{{ root }}/args", content: "{{ inventory_hostname }} {{ join groups.all \",\" }}\n" }
- hosts: localhost
  tasks:
    - name: from a template file only
      template: { src: hosts.j2, dest: "{{ root }}/tpl" }
"#,
    );
    site.write_extra(
        "templates/hosts.j2",
        "{{#each groups.all}}[{{this}}]{{/each}}\n",
    );
    let out = site.run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(site.file("args").as_deref(), Some("localhost localhost\n"));
    assert_eq!(site.file("tpl").as_deref(), Some("[localhost]\n"));
}

#[test]
fn extra_vars_win_and_tags_select() {
    let site = Site::new(
        r#"
- hosts: localhost
  vars:
    v: play
  tasks:
    - name: tagged
      copy: { dest: "{{ root }}/tagged", content: "{{ v }}\n" }
      tags: [net]
    - name: untagged
      copy: { dest: "{{ root }}/untagged", content: "x\n" }
"#,
    );
    site.write_extra("extra.yaml", "v: from-file\n");
    let extra = format!("@{}", site.dir.path().join("extra.yaml").display());
    let out = site.run(&["-t", "net", "-e", &extra]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(site.file("tagged").as_deref(), Some("from-file\n"));
    assert!(!site.path("untagged").exists());
    let out = site.run(&["--skip-tags", "net", "-e", "v=cli"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(site.path("untagged").exists());
    assert_eq!(site.file("tagged").as_deref(), Some("from-file\n"));
}

#[test]
fn validate_and_inventory_commands() {
    let site = Site::new(CONVERGE);
    let bin = env!("CARGO_BIN_EXE_kvmforge");
    let out = Command::new(bin)
        .args(["validate"])
        .arg(site.dir.path().join("site.yaml"))
        .arg("-i")
        .arg(site.dir.path().join("inventory.yaml"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!site.path("etc").exists());
    let out = Command::new(bin)
        .args(["inventory", "-i"])
        .arg(site.dir.path().join("inventory.yaml"))
        .args(["--host", "localhost"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["connection"]["type"], "local");
    assert_eq!(
        v["vars"]["root"],
        site.path("").to_str().unwrap().trim_end_matches('/')
    );
    let out = Command::new(bin).args(["doc", "coppy"]).output().unwrap();
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `copy`"));
    let _ = Path::new("");
}

const GENERIC: &str = r#"
- name: generic modules
  hosts: localhost
  vars:
    proxy: "http://192.168.121.101:3128"
  tasks:
    - name: pool directory
      file: { path: "{{ root }}/pool/images", state: directory, mode: "0711" }
    - name: proxy lines
      lineinfile:
        path: "{{ root }}/environment"
        regexp: "^{{ item.key }}="
        line: "{{ item.key }}=\"{{ item.value }}\""
        create: true
      loop:
        - { key: http_proxy, value: "{{ proxy }}" }
        - { key: https_proxy, value: "{{ proxy }}" }
        - { key: no_proxy, value: "localhost,127.0.0.1" }
    - name: managed block
      blockinfile:
        path: "{{ root }}/fstab"
        create: true
        block: |
          hugetlbfs /dev/hugepages-1G hugetlbfs pagesize=1G 0 0
          hugetlbfs /dev/hugepages-2M hugetlbfs pagesize=2M 0 0
    - name: rendered template
      template: { src: netplan.yaml.hbs, dest: "{{ root }}/netplan/01-br0.yaml", mode: "0600" }
    - name: once only
      shell: "echo ran >> {{ root }}/once.log && touch {{ root }}/once.done"
      args: {}
"#;

fn generic_site() -> Site {
    let pb = GENERIC.replace(
        "      args: {}\n",
        "",
    )
    .replace(
        "      shell: \"echo ran >> {{ root }}/once.log && touch {{ root }}/once.done\"\n",
        "      shell:\n        cmd: \"echo ran >> {{ root }}/once.log && touch {{ root }}/once.done\"\n        creates: \"{{ root }}/once.done\"\n",
    );
    let site = Site::new(&pb);
    site.write_extra(
        "templates/netplan.yaml.hbs",
        "network:\n  bridges:\n    br0:\n      interfaces: [{{ facts.default_interface }}]\n      # {{ inventory_hostname }}\n",
    );
    site
}

#[test]
fn generic_modules_converge_and_cost_one_round_trip_when_clean() {
    let site = generic_site();
    let first = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    let env = site.file("environment").unwrap();
    assert_eq!(
        env,
        "http_proxy=\"http://192.168.121.101:3128\"\nhttps_proxy=\"http://192.168.121.101:3128\"\nno_proxy=\"localhost,127.0.0.1\"\n"
    );
    let fstab = site.file("fstab").unwrap();
    assert!(
        fstab.starts_with("# BEGIN KVMFORGE MANAGED BLOCK\nhugetlbfs /dev/hugepages-1G"),
        "{fstab}"
    );
    assert!(site
        .file("netplan/01-br0.yaml")
        .unwrap()
        .contains("# localhost\n"));
    assert_eq!(site.file("once.log").as_deref(), Some("ran\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(site.path("pool/images"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o711
    );

    // Clean re-run: nothing changes, the command does not run again, one round trip in all.
    let second = site.run(&["--detailed-exitcode", "--output", "json"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    assert_eq!(site.file("once.log").as_deref(), Some("ran\n"));
    let recap: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&second.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recap["hosts"]["localhost"]["invocations"], 1, "{recap}");

    // Drift in one line and in the block: found in check mode, fixed, no duplicates.
    std::fs::write(
        site.path("environment"),
        "https_proxy=\"http://old:3128\"\nPATH=/usr/bin\n",
    )
    .unwrap();
    std::fs::write(
        site.path("fstab"),
        format!(
            "/dev/sda1 / ext4 defaults 0 1\n{}",
            fstab.replace("2M 0 0", "2M 0 1")
        ),
    )
    .unwrap();
    assert_eq!(code(&site.run(&["--check", "--detailed-exitcode"])), 8);
    assert!(site.file("environment").unwrap().contains("old"));
    assert_eq!(code(&site.run(&["--detailed-exitcode"])), 8);
    assert_eq!(
        site.file("environment").unwrap(),
        "https_proxy=\"http://192.168.121.101:3128\"\nPATH=/usr/bin\nhttp_proxy=\"http://192.168.121.101:3128\"\nno_proxy=\"localhost,127.0.0.1\"\n"
    );
    let fixed = site.file("fstab").unwrap();
    assert!(fixed.starts_with("/dev/sda1 / ext4"), "{fixed}");
    assert_eq!(
        fixed.matches("BEGIN KVMFORGE MANAGED BLOCK").count(),
        1,
        "{fixed}"
    );
    assert!(fixed.contains("pagesize=2M 0 0"));
    assert_eq!(code(&site.run(&["--detailed-exitcode"])), 0);
}

#[test]
fn commands_register_and_handlers_run_once() {
    let site = Site::new(
        r#"
- hosts: localhost
  gather_facts: false
  tasks:
    - name: read a value
      command: echo "it's 42"
      register: out
      changed_when: false
    - name: use it
      copy: { dest: "{{ root }}/value", content: "{{ out.stdout }} rc={{ out.rc }}\n" }
      notify: [count]
    - name: also notifies
      copy: { dest: "{{ root }}/other", content: "x\n" }
      notify: count
    - name: a failing command is reported, then ignored
      shell: "echo oops >&2; exit 3"
      register: bad
      failed_when: "ne bad.rc 3"
  handlers:
    - name: count
      shell: "echo handler >> {{ root }}/handler.log"
"#,
    );
    let out = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert_eq!(site.file("value").as_deref(), Some("it's 42 rc=0\n"));
    assert_eq!(
        site.file("handler.log").as_deref(),
        Some("handler\n"),
        "a handler runs once"
    );
    // Second run: the copy tasks are unchanged, so the handler is not notified again. The shell
    // task runs every time (it has no creates/removes) and counts as changed.
    let out = site.run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(site.file("handler.log").as_deref(), Some("handler\n"));
    // In check mode commands are not run.
    let out = site.run(&["--check"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not run in check mode"),
        "{}",
        text(&out)
    );
}

#[test]
fn no_log_hides_values() {
    let site = Site::new(
        r#"
- hosts: localhost
  tasks:
    - name: secret file
      copy: { dest: "{{ root }}/secret", content: "password=hunter2\n" }
      no_log: true
"#,
    );
    let out = site.run(&["--diff", "-v"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let all = text(&out);
    assert!(!all.contains("hunter2"), "{all}");
    assert!(all.contains("censored"), "{all}");
    let out = site.run(&["--diff", "--output", "json"]);
    assert!(!text(&out).contains("hunter2"));
}

#[test]
fn ctrl_c_lets_the_task_in_flight_finish_and_starts_nothing_new() {
    let site = Site::new(
        r#"
- hosts: localhost
  gather_facts: false
  tasks:
    - name: slow
      shell: "sleep 1.5 && echo finished > {{ root }}/slow"
    - name: never started
      copy: { dest: "{{ root }}/next", content: "x\n" }
"#,
    );
    let child = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(site.dir.path().join("site.yaml"))
        .arg("-i")
        .arg(site.dir.path().join("inventory.yaml"))
        .args(["--output", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    assert_eq!(
        site.file("slow").as_deref(),
        Some("finished\n"),
        "the task in flight completes"
    );
    assert!(!site.path("next").exists(), "no new task after Ctrl-C");
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "recap");
    assert_eq!(last["interrupted"], true);
}

/// `hostvars`: other hosts' inventory variables, and the facts and registered results of plays
/// that have finished; `hostvars_of` lists one variable of a whole group.
#[test]
fn hostvars_carry_inventory_variables_and_earlier_plays_results() {
    let site = Site::new(
        r#"
- hosts: all
  gather_facts: false
  tasks:
    - command: echo "hello from {{ inventory_hostname }}"
      register: greet
- hosts: localhost
  gather_facts: false
  tasks:
    - copy:
        dest: "{{ root }}/peers"
        content: "{{hostvars_of 'kvm' 'overlay_ip'}}|{{ hostvars.k2.greet.stdout }}\n"
"#,
    );
    let root = site.path("");
    std::fs::write(
        site.dir.path().join("inventory.yaml"),
        format!(
            "all:\n  vars:\n    root: {}\n    connection: local\n  hosts:\n    localhost:\n  children:\n    kvm:\n      hosts:\n        k1: {{overlay_ip: 172.22.0.11}}\n        k2: {{overlay_ip: 172.22.0.12}}\n",
            root.display()
        ),
    )
    .unwrap();
    let out = site.run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        site.file("peers").as_deref(),
        Some("172.22.0.11 172.22.0.12|hello from k2\n")
    );
    // Validation still refuses a variable no host will ever have.
    std::fs::write(
        site.dir.path().join("site.yaml"),
        "- hosts: localhost\n  tasks:\n    - copy: { dest: \"{{ root }}/x\", content: \"{{ hostvars.k2.nope }}\" }\n",
    )
    .unwrap();
    let out = site.run(&[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("hostvars.k2.nope"), "{}", text(&out));
}

const LIBVIRT_CONFIG: &str = r#"
- name: qemu.conf
  hosts: localhost
  tasks:
    - name: QEMU user, security driver and huge pages
      libvirt_config:
        file: "{{ root }}/etc/libvirt/qemu.conf"
        settings:
          user: okd
          group: okd
          security_driver: none
          hugetlbfs_mount: [/dev/hugepages, /dev/hugepages1G]
      register: qemu_conf
      notify: daemon
  handlers:
    - name: daemon
      copy:
        dest: "{{ root }}/daemon"
        content: "{{ qemu_conf.path }}\n"
"#;

#[test]
fn libvirt_config_edits_the_real_qemu_conf_in_place_once() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new(LIBVIRT_CONFIG);
    let real = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/facts/libvirt_conf/qemu.conf"),
    )
    .unwrap();
    site.write_extra("root/etc/libvirt/qemu.conf", &real);
    let conf = site.path("etc/libvirt/qemu.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();

    let check = site.run(&["--check", "--diff", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("-#user = \"libvirt-qemu\"") && out.contains("+user = \"okd\""),
        "{}",
        text(&check)
    );
    assert_eq!(site.file("etc/libvirt/qemu.conf").as_deref(), Some(&*real));

    let first = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    let after = site.file("etc/libvirt/qemu.conf").unwrap();
    assert_eq!(after.lines().count(), real.lines().count());
    assert!(after.contains("\n#\nhugetlbfs_mount = [ \"/dev/hugepages\", \"/dev/hugepages1G\" ]\n"));
    assert!(after.contains("\nsecurity_driver = \"none\"\n"));
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(site.file("daemon").is_some(), "the task's notify ran");

    let second = site.run(&["--detailed-exitcode"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
}
