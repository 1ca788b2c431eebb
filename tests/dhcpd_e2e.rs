//! The dhcpd module over real SSH against a lab jump host serving the lab's VM network, with
//! the real ISC dhcpd and then the real Kea: v1 gets a lease from the range, v2 its fixed
//! address (both with dhclient, whose script does nothing, so their SSH address stays as it
//! is); a second run changes nothing; invalid subnets are refused before any host is
//! contacted; a configuration the daemon rejects leaves the running server, its PID and its
//! file as they were, and it keeps leasing; a new fixed lease restarts dhcpd but only reloads
//! Kea (same PID). Needs root; skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::process::{Command, Output};
use std::time::Instant;

use lab::{exit_code as code, output_text as text};

fn run(lab: &lab::Lab, dir: &std::path::Path, playbook: &str, args: &[&str]) -> Output {
    let pb = dir.join("dhcpd.yaml");
    std::fs::write(&pb, playbook).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["--connect-timeout", "5"])
        .args(args)
        .output()
        .unwrap()
}

fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(out.status.success(), "{host}: `{cmd}`: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The address `host` is offered on its eth0 by whatever DHCP server answers, asked with
/// dhclient: its script is `true`, so eth0 (the host's SSH address) is not reconfigured and
/// the lease is only recorded in a file of its own. The lease is released afterwards.
fn lease(lab: &lab::Lab, host: &str) -> String {
    let cmd = "rm -f /tmp/kf.leases /tmp/kf.pid; \
        timeout 40 dhclient -4 -1 -sf /bin/true -lf /tmp/kf.leases -pf /tmp/kf.pid eth0 </dev/null >/tmp/kf.out 2>&1; rc=$?; \
        dhclient -4 -r -sf /bin/true -lf /tmp/kf.leases -pf /tmp/kf.pid eth0 </dev/null >/dev/null 2>&1; \
        [ $rc -eq 0 ] || { cat /tmp/kf.out; exit 1; }; \
        sed -n 's/^ *fixed-address \\(.*\\);/\\1/p' /tmp/kf.leases | tail -1";
    let addr = on(lab, host, cmd);
    // dhclient -r stops the client; none may linger for the next try.
    lab.ssh(host, "pkill -x dhclient; true");
    addr
}

/// The address's last octet.
fn last_octet(addr: &str) -> u32 {
    addr.rsplit('.').next().unwrap().parse().unwrap()
}

struct Backend {
    name: &'static str,
    unit: &'static str,
    other_unit: &'static str,
    config: &'static str,
    /// The daemon's PID, empty when it does not run.
    pid: &'static str,
    /// An `extra` the daemon's checker rejects, and the words of its refusal.
    rejected: &'static str,
    refusal: &'static str,
    /// Whether a changed configuration keeps the daemon's PID (a reload).
    reloads: bool,
}

const ISC: Backend = Backend {
    name: "isc",
    unit: "isc-dhcp-server",
    other_unit: "kea-dhcp4-server",
    config: "/etc/dhcp/dhcpd.conf",
    pid: "cat /run/dhcpd.pid",
    rejected: "'option no-such-option 1;'",
    refusal: "unknown option dhcp.no-such-option",
    reloads: false,
};

const KEA: Backend = Backend {
    name: "kea",
    unit: "kea-dhcp4-server",
    other_unit: "isc-dhcp-server",
    config: "/etc/kea/kea-dhcp4.conf",
    pid: "systemctl show -p MainPID --value kea-dhcp4-server",
    rejected: "{no-such-parameter: 1}",
    refusal: "no-such-parameter",
    reloads: true,
};

/// The playbook for the jump host: the other daemon off, then this one.
fn playbook(b: &Backend, net: &str, subnet_extra: &str, task_extra: &str) -> String {
    format!(
        "- hosts: jump
  gather_facts: false
  tasks:
    - name: one DHCP server on the VM network
      service: {{ name: {other}, state: stopped, enabled: false }}
    - name: DHCP for the VM network
      dhcpd:
        backend: {name}
        interfaces: [eth1]
        domain_name: lab.example
        dns_servers: [{net}.1]
        authoritative: true
        subnets:
          - network: {net}.0/24
            ranges: [\"{net}.150-{net}.200\"]
            routers: [{net}.1]
            hosts:
{subnet_extra}{task_extra}",
        other = b.other_unit,
        name = b.name,
    )
}

fn state(lab: &lab::Lab, b: &Backend) -> (String, String) {
    (
        on(lab, "jump", &format!("sha256sum {}", b.config)),
        on(lab, "jump", b.pid),
    )
}

fn check_backend(
    lab: &lab::Lab,
    dir: &std::path::Path,
    b: &Backend,
    net: &str,
    macs: (&str, &str),
) {
    let t = Instant::now();
    let v2 = format!(
        "              - {{ name: v2, mac: \"{}\", ip: {net}.50 }}\n",
        macs.1
    );
    let good = playbook(b, net, &v2, "");

    let out = run(lab, dir, &good, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}: first run: {}", b.name, text(&out));
    assert_eq!(
        on(lab, "jump", &format!("systemctl is-active {}", b.unit)),
        "active"
    );
    assert_eq!(
        on(
            lab,
            "jump",
            &format!("systemctl is-enabled {} 2>/dev/null", b.unit)
        ),
        "enabled"
    );
    assert_ne!(on(lab, "jump", b.pid), "", "{}: no daemon", b.name);

    // A dynamic lease from the range, and the fixed address.
    let a1 = lease(lab, "v1");
    assert!(
        a1.starts_with(&format!("{net}.")),
        "{}: v1 got {a1:?}",
        b.name
    );
    assert!(
        (150..=200).contains(&last_octet(&a1)),
        "{}: v1 got {a1}",
        b.name
    );
    assert_eq!(lease(lab, "v2"), format!("{net}.50"), "{}: v2", b.name);
    // The SSH addresses are untouched.
    assert!(on(lab, "v1", "ip -4 -br addr show eth0").contains(lab.addr("v1")));

    let out = run(lab, dir, &good, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 0, "{}: second run: {}", b.name, text(&out));

    // Invalid subnets: refused before any host is contacted, nothing changes.
    let before = state(lab, b);
    let outside = good.replace(
        &format!("\"{net}.150-{net}.200\""),
        &format!("\"{net}.150-{net}.200\", \"{net}.250-10.99.0.1\""),
    );
    let out = run(lab, dir, &outside, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 1, "{}: range outside: {}", b.name, text(&out));
    assert!(
        text(&out).contains("subnets[0].ranges[1]: 10.99.0.1 is outside the subnet"),
        "{}",
        text(&out)
    );
    let dup = format!(
        "{v2}              - {{ name: v1, mac: \"{}\", ip: {net}.51 }}\n",
        macs.1.to_uppercase()
    );
    let out = run(
        lab,
        dir,
        &playbook(b, net, &dup, ""),
        &["--detailed-exitcode"],
    );
    assert_eq!(code(&out), 1, "{}: duplicate MAC: {}", b.name, text(&out));
    assert!(
        text(&out).contains("subnets[0].hosts[1].mac:")
            && text(&out).contains("already the MAC of subnets[0].hosts[0]"),
        "{}",
        text(&out)
    );
    assert_eq!(
        state(lab, b),
        before,
        "{}: changed by invalid input",
        b.name
    );

    // A configuration the daemon rejects: the task fails with the daemon's words, and the
    // running server, its PID and its file are as they were, still leasing.
    let rejected = playbook(b, net, &v2, &format!("        extra: {}\n", b.rejected));
    let out = run(lab, dir, &rejected, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 2, "{}: rejected: {}", b.name, text(&out));
    assert!(text(&out).contains(b.refusal), "{}: {}", b.name, text(&out));
    assert!(
        text(&out).contains("is unchanged"),
        "{}: {}",
        b.name,
        text(&out)
    );
    assert_eq!(
        state(lab, b),
        before,
        "{}: changed by a rejected config",
        b.name
    );
    assert_eq!(
        on(
            lab,
            "jump",
            &format!(
                "ls -A {} | grep -c kvmforge || true",
                b.config.rsplit_once('/').unwrap().0
            )
        ),
        "0",
        "a staged file was left"
    );
    let a1 = lease(lab, "v1");
    assert!(
        (150..=200).contains(&last_octet(&a1)),
        "{}: v1 got {a1}",
        b.name
    );

    // A new fixed lease: --check --diff shows it and changes nothing; the run applies it with
    // a restart (isc) or a reload (kea).
    let both = format!(
        "{v2}              - {{ name: v1, mac: \"{}\", ip: {net}.51 }}\n",
        macs.0
    );
    let changed = playbook(b, net, &both, "");
    let out = run(
        lab,
        dir,
        &changed,
        &["--check", "--diff", "--detailed-exitcode"],
    );
    assert_eq!(code(&out), 8, "{}: check: {}", b.name, text(&out));
    assert!(
        text(&out).contains(&format!("{net}.51")),
        "{}: no diff: {}",
        b.name,
        text(&out)
    );
    assert_eq!(state(lab, b), before, "{}: changed in check mode", b.name);
    let out = run(lab, dir, &changed, &["--detailed-exitcode"]);
    assert_eq!(code(&out), 8, "{}: change: {}", b.name, text(&out));
    // Kea reloads on SIGHUP in the background: give it a moment.
    let mut got = String::new();
    for _ in 0..5 {
        got = lease(lab, "v1");
        if got == format!("{net}.51") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(got, format!("{net}.51"), "{}: v1 after the change", b.name);
    let pid = on(lab, "jump", b.pid);
    assert_eq!(
        pid == before.1,
        b.reloads,
        "{}: pid {} -> {pid}",
        b.name,
        before.1
    );
    let out = run(lab, dir, &changed, &["--detailed-exitcode"]);
    assert_eq!(
        code(&out),
        0,
        "{}: after the change: {}",
        b.name,
        text(&out)
    );
    eprintln!(
        "dhcpd_e2e: {} checked in {:.1}s",
        b.name,
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn isc_dhcpd_and_kea_serve_the_vm_network() {
    let t = Instant::now();
    let Some(lab) = lab::Lab::up("e2e-dhcpd", 0, Some(2)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = lab.addr("v1").rsplit_once('.').unwrap().0.to_string();
    let mac1 = on(&lab, "v1", "cat /sys/class/net/eth0/address");
    let mac2 = on(&lab, "v2", "cat /sys/class/net/eth0/address");
    for b in [&ISC, &KEA] {
        check_backend(&lab, dir.path(), b, &net, (&mac1, &mac2));
    }
    // The second backend took over: the first is stopped and disabled.
    assert_eq!(
        on(&lab, "jump", "systemctl is-active isc-dhcp-server || true"),
        "inactive"
    );
    eprintln!("dhcpd_e2e: done in {:.1}s", t.elapsed().as_secs_f64());
}
