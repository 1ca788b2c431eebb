//! The jump host's proxy over real SSH against lab hosts running a real squid: `squid_proxy` on
//! the jump host serves the VM network (a file on the front network fetched from a host that
//! only has the VM network) and refuses clients outside it (403); a second run changes nothing;
//! a configuration squid refuses fails the task with squid's words while the old one keeps
//! serving. `proxy_env` on the VM-network host sends apt through the proxy (squid's access log
//! shows it), and `state: absent` leaves /etc/environment and apt's configuration as they were.
//! Needs root; skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lab::{exit_code as code, output_text as text};

/// `kvmforge run` of `playbook` on the hosts `limit` of the lab.
fn run(
    lab: &lab::Lab,
    dir: &std::path::Path,
    limit: &str,
    playbook: &str,
    args: &[&str],
) -> Output {
    let pb = dir.join("squid.yaml");
    std::fs::write(&pb, playbook).unwrap();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["-l", limit, "--connect-timeout", "5"])
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "kvmforge run on {limit} {args:?}: exit {} in {:?}",
        code(&out),
        t.elapsed()
    );
    out
}

/// `cmd` on `host`, which must succeed; its stdout.
fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(out.status.success(), "{host}: `{cmd}`: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A variable of the lab's `lab.env`.
fn lab_env(lab: &lab::Lab, key: &str) -> String {
    let env = std::fs::read_to_string(lab.dir.join("lab.env")).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in lab.env:\n{env}"))
        .to_string()
}

/// What `curl` through `proxy` makes of `url` on `host`: the HTTP status and the body. Retries
/// for a while when squid does not answer yet (it was just started or reconfigured).
fn fetch(lab: &lab::Lab, host: &str, proxy: &str, url: &str) -> (String, String) {
    let cmd = format!(
        "curl -sS --max-time 10 -x http://{proxy} -o /tmp/kf-body -w '%{{http_code}}' {url}; echo; cat /tmp/kf-body"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab.ssh(host, &cmd);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            let (status, body) = stdout.split_once('\n').unwrap_or((&stdout, ""));
            return (status.to_string(), body.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "{host}: curl through {proxy} never got an answer: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

const HEAD: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n";

#[test]
fn squid_serves_the_vm_network_and_proxy_env_points_hosts_at_it() {
    let Some(lab) = lab::Lab::up("e2e-squid", 1, Some(1)) else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let jump_vm = lab_env(&lab, "LAB_JUMP_VM_ADDR");
    let vm_net = lab_env(&lab, "LAB_VM_NET");
    let jump_front = lab.jump.clone().expect("the lab has a jump host");
    let h1 = lab.addr("h1").to_string();
    let v1 = lab.addr("v1").to_string();

    // A web server on the front network, which v1 cannot reach but through the proxy.
    on(
        &lab,
        "h1",
        "mkdir -p /srv/www && echo 'served from h1 through squid' > /srv/www/kf.txt && \
         systemd-run --unit kf-http python3 -m http.server 8000 --directory /srv/www >/dev/null 2>&1 && \
         for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8000/kf.txt && exit 0; sleep 0.2; done; exit 1",
    );
    let url = format!("http://{h1}:8000/kf.txt");
    assert!(
        !lab.ssh("v1", &format!("curl -sS --max-time 3 {url}"))
            .status
            .success(),
        "v1 reaches h1 without the proxy: the test would prove nothing"
    );

    // squid on the jump host: the VM network's port, and one on the front network (whose
    // clients are not in localnet).
    let squid = |extra: &str| {
        format!(
            "{HEAD}    - name: the VM network's proxy
      squid_proxy:
        http_port: [\"{jump_vm}:3128\", \"{jump_front}:3128\"]
        localnet: [{vm_net}]
        dns_nameservers: [127.0.0.1]
        extra: [\"dns_timeout 5 seconds\"{extra}]
"
        )
    };
    assert_eq!(
        on(&lab, "jump", "systemctl is-enabled squid || true").trim(),
        "disabled"
    );
    let out = run(
        &lab,
        dir.path(),
        "jump",
        &squid(""),
        &["--detailed-exitcode", "--diff"],
    );
    assert_eq!(code(&out), 8, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("+http_port {jump_vm}:3128")),
        "--diff shows squid.conf: {stdout}"
    );
    assert!(stdout.contains("/etc/squid/squid.conf"), "{stdout}");
    assert_eq!(
        on(&lab, "jump", "systemctl is-enabled squid").trim(),
        "enabled"
    );
    assert_eq!(
        on(&lab, "jump", "systemctl is-active squid").trim(),
        "active"
    );
    assert!(on(&lab, "jump", "cat /etc/squid/squid.conf").contains("visible_hostname jump\n"));
    assert_eq!(
        on(&lab, "jump", "stat -c %a /etc/squid/squid.conf").trim(),
        "644"
    );

    // v1, on the VM network, gets the file through the proxy; h1 is refused.
    let proxy = format!("{jump_vm}:3128");
    let (status, body) = fetch(&lab, "v1", &proxy, &url);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("200", "served from h1 through squid\n")
    );
    let (status, _) = fetch(&lab, "h1", &format!("{jump_front}:3128"), &url);
    assert_eq!(status, "403", "a client outside localnet must be refused");

    // Nothing to do the second time.
    let out = run(
        &lab,
        dir.path(),
        "jump",
        &squid(""),
        &["--detailed-exitcode"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));

    // A line squid refuses: the task fails with squid's message; the old file and the running
    // squid stay and keep serving.
    let conf = on(&lab, "jump", "cat /etc/squid/squid.conf");
    let pid = on(&lab, "jump", "systemctl show -p MainPID --value squid");
    let out = run(
        &lab,
        dir.path(),
        "jump",
        &squid(", \"acl broken nosuchtype x\""),
        &["--detailed-exitcode"],
    );
    assert_eq!(code(&out), 2, "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("Invalid ACL type 'nosuchtype'"),
        "squid's words: {all}"
    );
    assert_eq!(on(&lab, "jump", "cat /etc/squid/squid.conf"), conf);
    assert_eq!(
        on(&lab, "jump", "systemctl show -p MainPID --value squid"),
        pid
    );
    assert_eq!(
        on(&lab, "jump", "ls -a /etc/squid | grep -c kvmforge || true").trim(),
        "0",
        "no staged file left behind"
    );
    let (status, body) = fetch(&lab, "v1", &proxy, &url);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("200", "served from h1 through squid\n")
    );

    // proxy_env on v1: apt goes through squid.
    on(
        &lab,
        "v1",
        "printf 'LANG=C.UTF-8\\n# site settings\\n' > /etc/environment",
    );
    let env_before = on(&lab, "v1", "cat /etc/environment");
    let apt_before = on(&lab, "v1", "ls /etc/apt/apt.conf.d");
    let proxy_env = format!(
        "{HEAD}    - proxy_env:\n        proxy: http://{proxy}\n        no_proxy: localhost,127.0.0.1,{vm_net}\n"
    );
    let out = run(&lab, dir.path(), "v1", &proxy_env, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    let env = on(&lab, "v1", "cat /etc/environment");
    for line in [
        format!("http_proxy=\"http://{proxy}\""),
        format!("HTTPS_PROXY=\"http://{proxy}\""),
        format!("no_proxy=\"localhost,127.0.0.1,{vm_net}\""),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
    assert!(on(&lab, "v1", "cat /etc/apt/apt.conf.d/95kvmforge-proxy")
        .contains(&format!("Acquire::http::Proxy \"http://{proxy}\";")));
    let out = run(&lab, dir.path(), "v1", &proxy_env, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The outside is not reachable from the lab: apt fails, but squid saw its request.
    let _ = lab.ssh(
        "v1",
        "timeout 60 apt-get update -o Acquire::Retries=0 -o Acquire::http::Timeout=20",
    );
    let log = on(&lab, "jump", "cat /var/log/squid/access.log");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!(" {v1} ")) && l.contains("deb.debian.org")),
        "apt's request not in squid's access log:\n{log}"
    );
    // And a login shell on v1 has the variables.
    assert_eq!(
        on(
            &lab,
            "v1",
            "env -i sh -c 'set -a; . /etc/environment; echo $https_proxy'"
        )
        .trim(),
        format!("http://{proxy}")
    );

    // Removed: exactly what was added.
    let absent = format!("{HEAD}    - proxy_env: {{ state: absent }}\n");
    let out = run(&lab, dir.path(), "v1", &absent, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}", text(&out));
    assert_eq!(on(&lab, "v1", "cat /etc/environment"), env_before);
    assert_eq!(on(&lab, "v1", "ls /etc/apt/apt.conf.d"), apt_before);
    let out = run(&lab, dir.path(), "v1", &absent, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    eprintln!("squid_e2e checks took {:?}", started.elapsed());
}
