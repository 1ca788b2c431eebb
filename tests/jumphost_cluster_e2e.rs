//! `playbooks/jumphost-cluster.yaml` end to end over real SSH against lab hosts with real
//! systemd, sshd, squid, dhcpd, libvirtd and netplan: a jump host on the front network and a VM
//! network, two KVM hosts only on the VM network, reached through it, and a web server on the
//! front network standing in for the outside. The first run converges; its effect is checked on
//! the hosts themselves: a KVM host fetches from the web server through the jump host's squid
//! with the proxy settings it was given, gets a DHCP lease from the jump host, is reached from
//! this machine through its tunnel port of the jump host, has br0 with its address and the
//! default route via the jump host, a libvirt network on br0 and the bridge sysctls. A second
//! run changes nothing; drift made by hand is found in check mode and put back. Needs root;
//! skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab::{exit_code as code, output_text as text};

fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/jumphost-cluster.yaml")
}

/// `kvmforge run playbooks/jumphost-cluster.yaml -i INVENTORY --detailed-exitcode ARGS`.
fn run(inventory: &Path, args: &[&str]) -> Output {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(playbook())
        .arg("-i")
        .arg(inventory)
        .args(["--connect-timeout", "5", "--detailed-exitcode"])
        .args(args)
        .output()
        .unwrap();
    eprintln!("run {args:?}: exit {} in {:?}", code(&out), t.elapsed());
    out
}

/// `cmd` on `host` over the lab's own ssh, which must succeed: its stdout.
fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(out.status.success(), "{host}: `{cmd}`: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A variable of the lab's `lab.env`.
fn lab_env(lab: &lab::Lab, key: &str) -> String {
    let env = std::fs::read_to_string(lab.dir.join("lab.env")).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in lab.env:\n{env}"))
        .to_string()
}

/// `ssh -p PORT root@JUMP hostname` from this machine, checking the host key of `behind`: only
/// a tunnel that lands on that host succeeds. Polled for up to `secs` seconds (a tunnel retries
/// every 5 s until its key is authorized).
fn through_tunnel(lab: &lab::Lab, port: u16, behind: &str, secs: u64) -> String {
    let jump = lab.jump.as_deref().expect("the lab has a jump host");
    let start = Instant::now();
    loop {
        let out = Command::new("ssh")
            .args(lab.ssh_opts())
            .args(["-o", "ConnectTimeout=3"])
            .arg("-o")
            .arg(format!("HostKeyAlias={}", lab.addr(behind)))
            .args(["-p", &port.to_string(), &format!("root@{jump}"), "hostname"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!(
                "port {port} of the jump host does not reach {behind} after {secs} s: {}\n{}",
                text(&out),
                on(
                    lab,
                    "jump",
                    "journalctl -u 'kvmforge-tunnel-*' --no-pager -n 20"
                )
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The lease `host` is offered on `dev` (dhclient whose script does nothing, so the host's
/// addresses stay), released afterwards.
fn lease(lab: &lab::Lab, host: &str, dev: &str) -> String {
    let cmd = format!(
        "rm -f /tmp/kf.leases /tmp/kf.pid; \
         timeout 40 dhclient -4 -1 -sf /bin/true -lf /tmp/kf.leases -pf /tmp/kf.pid {dev} </dev/null >/tmp/kf.out 2>&1; rc=$?; \
         dhclient -4 -r -sf /bin/true -lf /tmp/kf.leases -pf /tmp/kf.pid {dev} </dev/null >/dev/null 2>&1; \
         [ $rc -eq 0 ] || {{ cat /tmp/kf.out; exit 1; }}; \
         sed -n 's/^ *fixed-address \\(.*\\);/\\1/p' /tmp/kf.leases | tail -1"
    );
    let addr = on(lab, host, &cmd);
    lab.ssh(host, "pkill -x dhclient; true");
    addr
}

/// What curl on `host` gets from `url` with the proxy settings of /etc/environment (as a login
/// would have them): the HTTP status and the body. Retries while squid is not answering yet.
fn fetch_with_environment(lab: &lab::Lab, host: &str, url: &str) -> (String, String) {
    let cmd = format!(
        "set -a; . /etc/environment; set +a; \
         curl -sS --max-time 10 -o /tmp/kf-body -w '%{{http_code}}' {url}; echo; cat /tmp/kf-body"
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
            "{host}: curl {url} with /etc/environment's proxy never got an answer: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn jumphost_cluster_playbook_converges_and_holds() {
    let started = Instant::now();
    let Some(lab) = lab::Lab::up("e2e-jumpcluster", 1, Some(2)) else {
        return;
    };
    eprintln!("lab up in {:?}", started.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let jump_front = lab.jump.clone().expect("the lab has a jump host");
    let jump_vm = lab_env(&lab, "LAB_JUMP_VM_ADDR");
    let vm_net = lab_env(&lab, "LAB_VM_NET");
    let net = vm_net.trim_end_matches(".0/24").to_string();
    let (jump_nic, _) = lab.nic_with("jump", &jump_vm);
    let kvm = ["v1", "v2"];
    let nics: Vec<(String, String)> = kvm.iter().map(|h| lab.nic(h)).collect();
    let ports = [12111u16, 12112];

    // The outside: a web server on the front network, which the KVM hosts cannot reach directly.
    let h1 = lab.addr("h1").to_string();
    on(
        &lab,
        "h1",
        "mkdir -p /srv/www && echo 'the outside, through squid' > /srv/www/kf.txt && \
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

    // The inventory: the playbook's contract with the lab's addresses; the KVM hosts reached
    // with `jump:` (the lab's ssh client config holds its key and known hosts).
    let mut inv = format!(
        "all:
  vars:
    ssh_config: {ssh_config}
    user: root
    vm_network: {vm_net}
    jumphost_vm_address: {jump_vm}
    jumphost_vm_nic: {jump_nic}
    dhcp_range: [{net}.100, {net}.150]
  children:
    jumphost:
      hosts:
        jump:
          host: {jump_front}
    kvm_hosts:
      vars:
        jump: root@{jump_front}
      hosts:
",
        ssh_config = lab.ssh_config.display()
    );
    for (i, h) in kvm.iter().enumerate() {
        inv += &format!(
            "        {h}:
          host: {addr}
          bridge_nic: {nic}
          bridge_address: {cidr}
          tunnel_port: {port}
",
            addr = lab.addr(h),
            nic = nics[i].0,
            cidr = nics[i].1,
            port = ports[i]
        );
    }
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(&inventory, &inv).unwrap();
    let validate = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("validate")
        .arg(playbook())
        .arg("-i")
        .arg(&inventory)
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", text(&validate));

    // Check mode on fresh hosts: everything would change; the tunnels' keys do not exist yet,
    // so authorizing them cannot be checked and is skipped, saying so. Nothing changes.
    let check = run(&inventory, &["--check"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    let out = text(&check);
    assert!(
        out.matches("cannot be checked before earlier changes are made")
            .count()
            == 2,
        "{out}"
    );
    assert_eq!(
        on(&lab, "jump", "systemctl is-enabled squid || true"),
        "disabled"
    );
    assert_eq!(
        on(
            &lab,
            "v1",
            "ip link show br0 >/dev/null 2>&1 && echo br0 || echo none"
        ),
        "none"
    );

    // First run: converges.
    let first = run(&inventory, &["-v"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    let out = text(&first);
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert_eq!(
        out.matches("guard: rollback disarmed").count(),
        2,
        "each KVM host's network change confirmed: {out}"
    );

    // The KVM hosts: br0 over the NIC with the address, the default route via the jump host
    // on-link, still reachable (the ssh itself proves it).
    for (i, h) in kvm.iter().enumerate() {
        let (nic, cidr) = &nics[i];
        let shown = on(
            &lab,
            h,
            "ip -4 -o addr show br0; ip -o link show master br0; ip -4 route show default",
        );
        assert!(shown.contains(&format!("inet {cidr}")), "{h}: {shown}");
        assert!(shown.contains(&format!(": {nic}")), "{h}: {shown}");
        assert!(
            shown.contains(&format!("default via {jump_vm} dev br0")) && shown.contains("onlink"),
            "{h}: {shown}"
        );
        assert_eq!(on(&lab, h, "cat /sys/class/net/br0/operstate"), "up", "{h}");
        // libvirt: the network bridged onto br0, active and autostarted.
        let nets = on(&lab, h, "virsh -c qemu:///system net-list --all");
        let line = nets
            .lines()
            .find(|l| l.split_whitespace().next() == Some("host-bridge"))
            .unwrap_or_else(|| panic!("{h}: no host-bridge network: {nets}"));
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["host-bridge", "active", "yes", "yes"],
            "{h}: {nets}"
        );
        let xml = on(&lab, h, "virsh -c qemu:///system net-dumpxml host-bridge");
        assert!(
            xml.contains("<forward mode='bridge'/>") && xml.contains("<bridge name='br0'/>"),
            "{h}: {xml}"
        );
        // The proxy settings and the bridge sysctls.
        let env = on(&lab, h, "cat /etc/environment");
        for line in [
            format!("http_proxy=\"http://{jump_vm}:3128\""),
            format!("https_proxy=\"http://{jump_vm}:3128\""),
            format!("no_proxy=\"localhost,127.0.0.1,{vm_net}\""),
        ] {
            assert!(env.lines().any(|l| l == line), "{h}: {line} not in {env}");
        }
        let sysctl = on(&lab, h, "cat /etc/sysctl.d/bridge.conf");
        for key in ["ip6tables", "iptables", "arptables"] {
            assert!(
                sysctl.contains(&format!("net.bridge.bridge-nf-call-{key} = 0")),
                "{h}: {sysctl}"
            );
        }
        let live = on(
            &lab,
            h,
            "cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo unloaded",
        );
        assert!(live == "0" || live == "unloaded", "{h}: {live}");
    }

    // The outside through the jump host's squid, with the proxy of /etc/environment.
    for h in kvm {
        let (status, body) = fetch_with_environment(&lab, h, &url);
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("200", "the outside, through squid\n"),
            "{h}"
        );
    }
    assert!(on(&lab, "jump", "cat /etc/squid/squid.conf")
        .contains(&format!("http_port {jump_vm}:3128\n")));

    // A DHCP lease from the range, on a KVM host's bridge.
    let got = lease(&lab, "v1", "br0");
    let octet: u32 = got.rsplit('.').next().unwrap().parse().unwrap_or(0);
    assert!(
        got.starts_with(&format!("{net}.")) && (100..=150).contains(&octet),
        "v1 was offered {got:?}"
    );

    // Each tunnel port of the jump host lands on its KVM host (whose host key ssh checks).
    for (i, h) in kvm.iter().enumerate() {
        let t = Instant::now();
        assert_eq!(through_tunnel(&lab, ports[i], h, 60), *h);
        eprintln!("port {} reaches {h} ({:?})", ports[i], t.elapsed());
    }

    // Second run, and a check run: nothing to do.
    let second = run(&inventory, &[]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    let check = run(&inventory, &["--check"]);
    assert_eq!(code(&check), 0, "{}", text(&check));

    // libvirtd gone idle (Debian's exits after two idle minutes; stopped here, its sockets stay
    // listening): still nothing to do, and the next client brings it back.
    let kvm0 = kvm[0];
    on(&lab, kvm0, "systemctl stop libvirtd.service");
    assert_eq!(
        on(&lab, kvm0, "systemctl is-active libvirtd.service || true").trim(),
        "inactive"
    );
    let idle = run(&inventory, &["--output", "json"]);
    assert_eq!(code(&idle), 0, "{}", text(&idle));
    assert!(
        text(&idle).lines().any(|l| l
            .contains(r#""host":"v1","task":"libvirtd runs now and at boot""#)
            && l.contains(r#""status":"ok""#)
            && l.contains("libvirtd.service is idle and starts on demand (")
            && l.contains("libvirtd.socket")),
        "{}",
        text(&idle)
    );
    assert!(on(&lab, kvm0, "virsh -q -c qemu:///system net-list --name").contains("host-bridge"));
    assert_eq!(
        on(&lab, kvm0, "systemctl is-active libvirtd.service").trim(),
        "active"
    );

    // Drift by hand: squid.conf edited, a bridge sysctl file changed, the libvirt network no
    // longer autostarted. Check mode finds each and changes nothing; the next run puts them back.
    on(
        &lab,
        "jump",
        "echo 'http_access allow all' >> /etc/squid/squid.conf",
    );
    on(
        &lab,
        "v2",
        "sed -i 's/bridge-nf-call-iptables = 0/bridge-nf-call-iptables = 1/' /etc/sysctl.d/bridge.conf",
    );
    on(
        &lab,
        "v1",
        "virsh -c qemu:///system net-autostart --disable host-bridge >/dev/null",
    );
    let check = run(&inventory, &["--check", "--diff"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    for (host, task) in [
        ("jump", "squid serves the VM network"),
        ("v2", "bridged guest traffic bypasses the host firewall"),
        ("v1", "guests bridged onto br0"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("changed: [{host}] {task}"))),
            "check mode does not report {task} on {host}: {out}"
        );
    }
    assert!(out.contains("-http_access allow all"), "{out}");
    assert!(on(&lab, "jump", "tail -1 /etc/squid/squid.conf") == "http_access allow all");
    let fix = run(&inventory, &[]);
    assert_eq!(code(&fix), 8, "{}", text(&fix));
    assert!(!on(&lab, "jump", "cat /etc/squid/squid.conf").contains("http_access allow all"));
    assert!(on(&lab, "v2", "cat /etc/sysctl.d/bridge.conf")
        .contains("net.bridge.bridge-nf-call-iptables = 0"));
    assert!(
        on(&lab, "v1", "virsh -c qemu:///system net-info host-bridge")
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Autostart:", "yes"])
    );
    let last = run(&inventory, &["--check"]);
    assert_eq!(code(&last), 0, "{}", text(&last));
    eprintln!("whole test in {:?}", started.elapsed());
}
