//! End to end over real SSH: the `vxlan` module joining three lab hosts' bridges into one
//! overlay, as setup-kvm.sh `--vxlan` does, then kept idempotent, corrected after drift,
//! re-created by its boot-time unit, shrunk when a peer leaves, and removed. Needs root (the
//! lab boots systemd-nspawn containers); skipped loudly otherwise.

#[path = "support/lab.rs"]
mod lab;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

/// The bridge (created idempotently by a shell task, with the host's overlay address), then the
/// overlay attached to it.
const OVERLAY: &str = r#"
- name: overlay between the hosts
  hosts: all
  tasks:
    - name: overlay bridge with this host's overlay address
      shell: >-
        if ip link show br-ov >/dev/null 2>&1; then echo present; else
        ip link add br-ov type bridge && ip link set br-ov up &&
        ip addr add {{ overlay_addr }}/24 dev br-ov && echo created; fi
      register: br
      changed_when: contains br.stdout "created"
    - name: VXLAN mesh (setup-kvm.sh --vxlan)
      vxlan:
        name: wsfvxlan0
        id: 20680
        dstport: 20680
        dev: eth0
        bridge: br-ov
        peers: "{{ vxlan_peers }}"
"#;

/// The overlay with other settings, applied with a `verify` that always fails: the change is
/// never confirmed, so the host must roll it back by itself.
fn unconfirmed(id: u32, mtu: u32, peers: &[&str]) -> String {
    format!(
        r#"
- hosts: all
  tasks:
    - name: an overlay change that is not confirmed
      vxlan:
        name: wsfvxlan0
        id: {id}
        dstport: 20680
        dev: eth0
        bridge: br-ov
        mtu: {mtu}
        peers: [{}]
      verify: "false"
      rollback_timeout: 10
"#,
        peers.join(", ")
    )
}

const REMOVE: &str = r#"
- hosts: all
  tasks:
    - vxlan: { name: wsfvxlan0, state: absent }
"#;

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new(lab: &lab::Lab) -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&lab.known_hosts, dir.path().join("known_hosts")).unwrap();
        Run { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An inventory of the three hosts, each with its overlay address and its peers.
    fn inventory(&self, lab: &lab::Lab, peers: &[(&str, Vec<&str>)]) {
        let mut inv = format!(
            "all:\n  vars:\n    user: root\n    key: {}\n    known_hosts: {}\n  hosts:\n",
            lab.key.display(),
            self.path("known_hosts").display()
        );
        for (i, h) in HOSTS.iter().enumerate() {
            let list: Vec<&str> = peers
                .iter()
                .find(|(n, _)| n == h)
                .map(|(_, p)| p.iter().map(|p| lab.addr(p)).collect())
                .unwrap();
            inv.push_str(&format!(
                "    {h}:\n      host: {}\n      overlay_addr: 172.22.0.1{}\n      vxlan_peers: [{}]\n",
                lab.addr(h),
                i + 1,
                list.join(", ")
            ));
        }
        std::fs::write(self.path("inventory.yaml"), inv).unwrap();
    }

    fn kvmforge(&self, playbook: &str, args: &[&str]) -> Output {
        std::fs::write(self.path("site.yaml"), playbook).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .arg("run")
            .arg(self.path("site.yaml"))
            .arg("-i")
            .arg(self.path("inventory.yaml"))
            .args(["--connect-timeout", "5", "--output", "json"])
            .args(args)
            .output()
            .unwrap()
    }
}

use lab::{exit_code as code, output_text as text};

fn recap(o: &Output) -> Value {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rev()
        .find(|e| e["event"] == "recap")
        .unwrap_or_else(|| panic!("no recap: {}", text(o)))
}

/// Hosts that reported a change, in a run that must not have failed anywhere.
fn changed_hosts(o: &Output) -> Vec<String> {
    let r = recap(o);
    let mut out = Vec::new();
    for h in HOSTS {
        assert_eq!(r["hosts"][h]["failed"], 0, "{h}: {}", text(o));
        assert_eq!(r["hosts"][h]["unreachable"], 0, "{h}: {}", text(o));
        if r["hosts"][h]["changed"].as_u64().unwrap() > 0 {
            out.push(h.to_string());
        }
    }
    out
}

fn remote(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(
        out.status.success(),
        "{host}: `{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The remotes a host's overlay floods to, from `bridge fdb show dev wsfvxlan0`.
fn flood_peers(lab: &lab::Lab, host: &str) -> BTreeSet<String> {
    remote(lab, host, "bridge fdb show dev wsfvxlan0")
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00 dst "))
        .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
        .collect()
}

fn addrs(lab: &lab::Lab, hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| lab.addr(h).to_string()).collect()
}

/// Every host pings every other's overlay address through the tunnel.
fn pings(lab: &lab::Lab, pairs: &[(&str, usize)]) {
    for (from, to) in pairs {
        let out = lab.ssh(from, &format!("ping -c 2 -w 10 172.22.0.1{to}"));
        assert!(
            out.status.success(),
            "{from} cannot reach 172.22.0.1{to} over the overlay: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

const UNIT: &str = "kvmforge-vxlan-wsfvxlan0.service";

#[test]
fn vxlan_mesh_over_ssh() {
    let t0 = std::time::Instant::now();
    let Some(lab) = lab::Lab::up("e2e-vxlan", 3, None) else {
        return;
    };
    eprintln!("lab up: {:.1?}", t0.elapsed());
    let run = Run::new(&lab);
    // h1 is given every host, itself included (the module drops its own address); the others
    // are given the other two.
    let full = vec![
        ("h1", vec!["h1", "h2", "h3"]),
        ("h2", vec!["h1", "h3"]),
        ("h3", vec!["h1", "h2"]),
    ];
    run.inventory(&lab, &full);

    // The common case in one line: every host of the group by its inventory address (each
    // host drops its own). Later runs give each host its list explicitly, to make one leave.
    let from_group = OVERLAY.replace("\"{{ vxlan_peers }}\"", "\"{{hostvars_of 'all' 'host'}}\"");
    assert_ne!(from_group, OVERLAY);
    let first = run.kvmforge(&from_group, &["--detailed-exitcode"]);
    eprintln!("first run done: {:.1?}", t0.elapsed());
    assert_eq!(code(&first), 8, "{}", text(&first));
    assert_eq!(changed_hosts(&first), HOSTS);
    for h in HOSTS {
        let others: Vec<&str> = HOSTS.iter().copied().filter(|o| *o != h).collect();
        assert_eq!(flood_peers(&lab, h), addrs(&lab, &others), "{h}");
        let link = remote(&lab, h, "ip -d link show wsfvxlan0");
        for want in [
            "mtu 1450",
            "master br-ov",
            "vxlan id 20680",
            "dstport 20680",
            "dev eth0",
            "nolearning",
        ] {
            assert!(link.contains(want), "{h}: no `{want}` in {link}");
        }
        assert_eq!(
            remote(&lab, h, &format!("systemctl is-enabled {UNIT}")),
            "enabled\n"
        );
    }
    pings(
        &lab,
        &[
            ("h1", 2),
            ("h1", 3),
            ("h2", 1),
            ("h2", 3),
            ("h3", 1),
            ("h3", 2),
        ],
    );

    eprintln!("mesh checked: {:.1?}", t0.elapsed());
    // Nothing left to do.
    let again = run.kvmforge(OVERLAY, &["--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again));

    // Drift by hand on h2: a peer entry deleted, a stray one added, the MTU lowered. Check mode
    // reports h2 only and touches nothing; a run puts it back.
    let (a1, a3) = (lab.addr("h1").to_string(), lab.addr("h3").to_string());
    remote(
        &lab,
        "h2",
        &format!(
            "bridge fdb del 00:00:00:00:00:00 dev wsfvxlan0 dst {a3} && \
             bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 192.0.2.99 && \
             ip link set wsfvxlan0 mtu 1400"
        ),
    );
    let check = run.kvmforge(OVERLAY, &["--check", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    assert_eq!(changed_hosts(&check), ["h2"]);
    assert_eq!(
        flood_peers(&lab, "h2"),
        BTreeSet::from([a1.clone(), "192.0.2.99".to_string()])
    );
    let fix = run.kvmforge(OVERLAY, &["--detailed-exitcode"]);
    assert_eq!(code(&fix), 8, "{}", text(&fix));
    assert_eq!(changed_hosts(&fix), ["h2"]);
    assert_eq!(flood_peers(&lab, "h2"), addrs(&lab, &["h1", "h3"]));
    assert!(remote(&lab, "h2", "ip link show wsfvxlan0").contains("mtu 1450"));
    pings(&lab, &[("h2", 3)]);

    // What the boot-time unit makes is what the module makes: after the device is deleted and
    // the unit started (as at boot), a run finds nothing to do and the overlay works.
    remote(
        &lab,
        "h3",
        &format!("ip link del wsfvxlan0 && systemctl restart {UNIT}"),
    );
    assert_eq!(flood_peers(&lab, "h3"), addrs(&lab, &["h1", "h2"]));
    let after_boot = run.kvmforge(OVERLAY, &["--detailed-exitcode"]);
    assert_eq!(code(&after_boot), 0, "{}", text(&after_boot));
    pings(&lab, &[("h3", 1), ("h1", 3)]);

    // h3 leaves the mesh: the others drop its entry (from the device and the unit); h3 itself
    // is not changed.
    run.inventory(
        &lab,
        &[
            ("h1", vec!["h1", "h2"]),
            ("h2", vec!["h1"]),
            ("h3", vec!["h1", "h2"]),
        ],
    );
    let shrink = run.kvmforge(OVERLAY, &["--detailed-exitcode"]);
    assert_eq!(code(&shrink), 8, "{}", text(&shrink));
    assert_eq!(changed_hosts(&shrink), ["h1", "h2"]);
    for h in ["h1", "h2"] {
        let other = if h == "h1" { "h2" } else { "h1" };
        assert_eq!(flood_peers(&lab, h), addrs(&lab, &[other]), "{h}");
        let unit = remote(&lab, h, &format!("cat /etc/systemd/system/{UNIT}"));
        assert!(!unit.contains(&format!("dst {a3}\n")), "{h}: {unit}");
    }
    pings(&lab, &[("h1", 2), ("h2", 1)]);
    let settled = run.kvmforge(OVERLAY, &["--detailed-exitcode"]);
    assert_eq!(code(&settled), 0, "{}", text(&settled));

    // Changes that are not confirmed are rolled back by the host: small ones by their inverse
    // commands (a peer added, the MTU lowered), one that re-creates the device (another VNI) by
    // re-creating the previous device. Either way the unit is restored byte for byte, the
    // overlay works again and a normal run finds nothing to do.
    let unit_before = remote(&lab, "h1", &format!("cat /etc/systemd/system/{UNIT}"));
    let a2 = lab.addr("h2").to_string();
    for (id, what) in [(20680, "inverse commands"), (20681, "re-creation")] {
        let t = std::time::Instant::now();
        let out = run.kvmforge(
            &unconfirmed(id, 1400, &[a2.as_str(), a3.as_str()]),
            &["-l", "h1"],
        );
        assert_eq!(code(&out), 2, "{what}: {}", text(&out));
        eprintln!("rolled back by {what} in {:.1?}", t.elapsed());
        assert_eq!(flood_peers(&lab, "h1"), addrs(&lab, &["h2"]), "{what}");
        let link = remote(&lab, "h1", "ip -d link show wsfvxlan0");
        for want in ["mtu 1450", "master br-ov", "vxlan id 20680 ", "nolearning"] {
            assert!(link.contains(want), "{what}: no `{want}` in {link}");
        }
        assert_eq!(
            remote(&lab, "h1", &format!("cat /etc/systemd/system/{UNIT}")),
            unit_before,
            "{what}"
        );
        pings(&lab, &[("h1", 2)]);
        let settled = run.kvmforge(OVERLAY, &["--detailed-exitcode"]);
        assert_eq!(code(&settled), 0, "{what}: {}", text(&settled));
    }

    // Removal: device and unit gone, then nothing to do.
    let gone = run.kvmforge(REMOVE, &["-l", "h3", "--detailed-exitcode"]);
    assert_eq!(code(&gone), 8, "{}", text(&gone));
    let left = remote(
        &lab,
        "h3",
        &format!(
            "ip link show wsfvxlan0 >/dev/null 2>&1 && echo device; \
             test -e /etc/systemd/system/{UNIT} && echo unit; \
             test -L /etc/systemd/system/multi-user.target.wants/{UNIT} && echo link; true"
        ),
    );
    assert_eq!(left, "", "left on h3 after state: absent");
    let none = run.kvmforge(REMOVE, &["-l", "h3", "--detailed-exitcode"]);
    assert_eq!(code(&none), 0, "{}", text(&none));

    // Creating the overlay unconfirmed: the host deletes the device it did not have and the
    // unit files it did not have.
    let out = run.kvmforge(&unconfirmed(20680, 1450, &[a1.as_str()]), &["-l", "h3"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let left = remote(
        &lab,
        "h3",
        &format!(
            "ip link show wsfvxlan0 >/dev/null 2>&1 && echo device; \
             test -e /etc/systemd/system/{UNIT} && echo unit; \
             test -L /etc/systemd/system/multi-user.target.wants/{UNIT} && echo link; true"
        ),
    );
    assert_eq!(left, "", "left on h3 after an unconfirmed creation");
}
