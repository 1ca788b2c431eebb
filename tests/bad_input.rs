//! Input kvmforge does not understand is refused before any host is contacted: exit 1, the
//! file:line:column where there is one, and a did-you-mean for values with a fixed set of
//! choices. The README's "Reliability" table cites these tests by name.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(playbook: &str, inventory: &str, inventory_name: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.yaml"), playbook).unwrap();
        // 192.0.2.0/24 is TEST-NET-1: nothing answers there, so contacting it would hang for
        // the connect timeout.
        std::fs::write(dir.path().join(inventory_name), inventory).unwrap();
        Case { dir }
    }

    fn kvmforge(&self, sub: &str, inventory_name: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .current_dir(self.dir.path())
            .arg(sub)
            .arg("site.yaml")
            .args(["-i", inventory_name])
            .args(args)
            .output()
            .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const GOOD_PLAY: &str = "- hosts: all\n  tasks:\n    - copy: { dest: /tmp/x, content: \"x\\n\" }\n";
const GOOD_INVENTORY: &str = "all:\n  hosts:\n    h1:\n      host: 192.0.2.1\n";

/// Each bad playbook or inventory value: exit 1 from both `validate` and `run`, quickly (no
/// host contacted), naming the place and the value meant.
#[test]
fn bad_values_are_refused_before_any_host_is_contacted() {
    let task = |t: &str| format!("- hosts: all\n  tasks:\n    - {t}\n");
    let cases: Vec<(String, String, &str, Vec<&str>)> = vec![
        (
            "- hosts: all\n  become: yse\n  tasks: []\n".into(),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec![
                "site.yaml:1:3",
                "`become` must be true or false",
                "did you mean `yes`?",
            ],
        ),
        (
            "- hosts: all\n  gather_facts: flase\n  tasks: []\n".into(),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec!["site.yaml:1:3", "did you mean `false`?"],
        ),
        (
            "- hosts: all\n  serial: abc\n  tasks: []\n".into(),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec![
                "site.yaml:1:3",
                "serial `abc` must be a positive number or a percentage",
            ],
        ),
        (
            "- hosts: all\n  hosst: all\n  tasks: []\n".into(),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec![
                "site.yaml:2:3",
                "unknown play key `hosst` (did you mean `hosts`?)",
            ],
        ),
        (
            task("copy: { dest: /tmp/x, content: x }\n      notfy: h"),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec!["site.yaml:4:7", "(did you mean `notify`?)"],
        ),
        (
            task("cpy: { dest: /tmp/x, content: x }"),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec![
                "site.yaml:3:7",
                "unknown task key or module `cpy` (did you mean `copy`?)",
            ],
        ),
        (
            task("copy: { dest: /tmp/x, contnet: x }"),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec![
                "site.yaml:3:",
                "unknown parameter `contnet` (did you mean `content`?)",
            ],
        ),
        (
            task("copy: { dest: /tmp/x, content: x, backup: yse }"),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec!["`backup` must be a boolean", "did you mean `yes`?"],
        ),
        (
            task("file: { path: /tmp/x, state: dirctory }"),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec!["`state`", "did you mean `directory`?"],
        ),
        (
            task("copy: { dest: /tmp/x, content: x }\n      ignore_errors: maybe"),
            GOOD_INVENTORY.into(),
            "inventory.yaml",
            vec!["site.yaml:3:7", "`ignore_errors` must be true or false"],
        ),
        (
            GOOD_PLAY.into(),
            "all:\n  hosts:\n    h1:\n      host: 192.0.2.1\n      connection: sshh\n".into(),
            "inventory.yaml",
            vec![
                "inventory.yaml:5:19: host `h1`, variable `connection`",
                "(did you mean `ssh`?)",
            ],
        ),
        (
            GOOD_PLAY.into(),
            "all:\n  hosts:\n    h1:\n      host: 192.0.2.1\n      host_key_checking: stirct\n"
                .into(),
            "inventory.yaml",
            vec![
                "inventory.yaml:5:26: host `h1`, variable `host_key_checking`",
                "did you mean `strict`?",
            ],
        ),
        (
            GOOD_PLAY.into(),
            "h1 ansible_host=192.0.2.1 ansible_port=70000\n".into(),
            "inventory.ini",
            vec![
                "inventory.ini:1:40: host `h1`, variable `ansible_port`",
                "`70000` is not a port number (1-65535)",
            ],
        ),
        (
            GOOD_PLAY.into(),
            "[web]\nh1 ansible_host=192.0.2.1\n[web:vars]\nansible_port = 70000\n".into(),
            "inventory.ini",
            vec![
                "inventory.ini:4:16: host `h1`, variable `ansible_port`",
                "`70000` is not a port number (1-65535)",
            ],
        ),
        (
            GOOD_PLAY.into(),
            "all:\n  vars:\n    ansible_connection: winrm\n  hosts:\n    h1:\n      host: 192.0.2.1\n"
                .into(),
            "inventory.yaml",
            vec![
                "inventory.yaml:3:25: host `h1`, variable `ansible_connection`",
                "winrm",
            ],
        ),
        (
            GOOD_PLAY.into(),
            "all:\n  hosts:\n    h1:\n      host: 192.0.2.1\n      ansible_become: maybe\n".into(),
            "inventory.yaml",
            vec![
                "inventory.yaml:5:23: host `h1`, variable `ansible_become`",
                "maybe",
            ],
        ),
        (
            GOOD_PLAY.into(),
            "h1 ansible_host=192.0.2.1 ansible_become=yse\n".into(),
            "inventory.ini",
            vec![
                "inventory.ini:1:42: host `h1`, variable `ansible_become`",
                "did you mean `yes`?",
            ],
        ),
        (
            GOOD_PLAY.into(),
            "h1 ansible_host=192.0.2.1 ansible_become_method=sduo\n".into(),
            "inventory.ini",
            vec!["become method `sduo`", "did you mean `sudo`?"],
        ),
        (
            GOOD_PLAY.into(),
            "[web\nh1 ansible_host=192.0.2.1\n".into(),
            "inventory.ini",
            vec!["inventory.ini:1"],
        ),
    ];
    for (playbook, inventory, inv_name, wants) in cases {
        let case = Case::new(&playbook, &inventory, inv_name);
        for sub in ["validate", "run"] {
            let started = Instant::now();
            let out = case.kvmforge(
                sub,
                inv_name,
                &["--connect-timeout", "30"][..if sub == "run" { 2 } else { 0 }],
            );
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{sub} {playbook} {inventory}: {err}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{sub}: took {:?}: a host was contacted?",
                started.elapsed()
            );
            for w in &wants {
                assert!(
                    err.contains(w),
                    "{sub}: want {w:?} in:\n{err}\n{playbook}\n{inventory}"
                );
            }
        }
    }
}

/// A bad value in `group_vars/` or `host_vars/` is shown at its place in that file; a host's
/// own value wins over its group's, and so does its place.
#[test]
fn bad_values_in_vars_files_name_their_file_line_and_column() {
    let case = Case::new(GOOD_PLAY, GOOD_INVENTORY, "inventory.yaml");
    let dir = case.dir.path();
    std::fs::create_dir(dir.join("group_vars")).unwrap();
    std::fs::write(
        dir.join("group_vars/all.yaml"),
        "# defaults\nansible_user: root\nansible_port: 70000\n",
    )
    .unwrap();
    let out = case.kvmforge("validate", "inventory.yaml", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("group_vars/all.yaml:3:15: host `h1`, variable `ansible_port`: `70000` is not a port number"),
        "{err}"
    );
    std::fs::create_dir(dir.join("host_vars")).unwrap();
    std::fs::write(dir.join("host_vars/h1.yaml"), "ansible_port: 0\n").unwrap();
    let out = case.kvmforge("validate", "inventory.yaml", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "host_vars/h1.yaml:1:15: host `h1`, variable `ansible_port`: `0` is not a port number"
        ),
        "{err}"
    );
}

/// Command-line values: not numbers, out of range, not a choice. Exit 1 like any invalid
/// input (never 2, which means a task failed), with the similar value when there is one.
#[test]
fn bad_command_line_values_exit_1() {
    let case = Case::new(GOOD_PLAY, GOOD_INVENTORY, "inventory.yaml");
    for (args, want) in [
        (&["--forks", "abc"][..], "invalid value 'abc' for '--forks"),
        (&["--forks", "0"][..], "--forks"),
        (&["--timeout", "soon"][..], "--timeout"),
        (&["--lock-timeout=-1"][..], "--lock-timeout"),
        (
            &["--host-key-checking", "stirct"][..],
            "a similar value exists: 'strict'",
        ),
        (&["--output", "jsno"][..], "a similar value exists: 'json'"),
        (&["--no-such-option"][..], "unexpected argument"),
    ] {
        let out = case.kvmforge("run", "inventory.yaml", args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    let help = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
}

/// A `src: ../..` reaching outside the playbook's folder still works, and `-v` says which
/// controller file was read.
#[test]
fn src_outside_the_playbook_folder_works_and_shows_with_v() {
    let dir = tempfile::tempdir().unwrap();
    let play_dir = dir.path().join("play");
    std::fs::create_dir_all(play_dir.join("templates")).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "from outside\n").unwrap();
    std::fs::write(dir.path().join("outside.tpl"), "{{ x }}\n").unwrap();
    let out_dir = dir.path().join("out");
    std::fs::write(
        play_dir.join("site.yaml"),
        format!(
            "- hosts: localhost\n  gather_facts: false\n  vars: {{ x: templated }}\n  tasks:\n    - name: copy\n      copy: {{ src: ../outside.txt, dest: {0}/a }}\n    - name: template\n      template: {{ src: ../outside.tpl, dest: {0}/b }}\n",
            out_dir.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .arg("run")
            .arg(play_dir.join("site.yaml"))
            .args(["--lock-timeout", "60"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("a")).unwrap(),
        "from outside\n"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("b")).unwrap(),
        "templated\n"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("outside the playbook"));
    let out = run(&["-v"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for f in ["outside.txt", "outside.tpl"] {
        assert!(
            stdout.contains(&format!("src ../{f} is "))
                && stdout.contains("outside the playbook's folder"),
            "{stdout}"
        );
    }
}
