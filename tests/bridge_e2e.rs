//! The bridge modules against the real network stacks, on this machine but out of its way: each
//! test runs in its own network and mount namespace (new PID namespace too, so every daemon it
//! starts dies with it), with its own D-Bus system bus, a veth pair standing in for the host's NIC
//! (`enp136s0f3`, as in the seed hosts) and the backend's own daemon: NetworkManager, or
//! systemd-networkd driven by netplan. No udev runs there, as in a container, so netplan is
//! applied the way `netplan_bridge` does it on such hosts.
//!
//! Needs root and the tools (`unshare`, `nsenter`, `dbus-daemon`, and `netplan` with
//! systemd-networkd, or NetworkManager); without them each test prints SKIPPED and passes.
//! `KVMFORGE_TEST_NETWORKMANAGER` names the NetworkManager daemon to start, when it is not the
//! one on the PATH.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KVMFORGE: &str = env!("CARGO_BIN_EXE_kvmforge");

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("[ -x \"$(command -v {tool})\" ]"))
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(what: &str, tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED {what}: needs root (network namespaces)");
        return true;
    }
    if let Some(t) = tools.iter().find(|t| !have(t)) {
        eprintln!("SKIPPED {what}: {t} is not installed");
        return true;
    }
    false
}

/// A network and mount namespace with a shell waiting in it.
struct Sandbox {
    child: Child,
    /// The namespace's first process, as this machine sees it.
    pid: u32,
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Run `setup` (sh) in new namespaces, then wait there.
    fn start(setup: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        // Daemons in the sandbox write /etc/resolv.conf (NetworkManager does, by default):
        // they get private copies, never this machine's.
        let script = format!(
            "set -e\ntouch \"$SANDBOX/resolv.conf\" \"$SANDBOX/hostname\"\n\
             mount --bind \"$SANDBOX/resolv.conf\" /etc/resolv.conf\n\
             mount --bind \"$SANDBOX/hostname\" /etc/hostname\n\
             {setup}\ntouch {}/ready\nexec sleep 100000\n",
            dir.path().display()
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
            ])
            .arg(&script)
            .env("SANDBOX", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("setup.log")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let ready = dir.path().join("ready");
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "sandbox setup did not finish: {}",
                std::fs::read_to_string(dir.path().join("setup.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
        let pid = children
            .split_whitespace()
            .next()
            .expect("the namespace's shell")
            .parse()
            .unwrap();
        Sandbox { child, pid, dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run a command inside.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-n", "-p", "--"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn sh(&self, cmd: &str) -> String {
        let o = self.run(&["sh", "-c", cmd]);
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    /// Wait until `cmd` succeeds inside.
    fn wait_for(&self, cmd: &str) {
        let start = Instant::now();
        while !self.run(&["sh", "-c", cmd]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for `{cmd}`"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kvmforge run` of a playbook inside, with `--detailed-exitcode` (8: changed).
    fn kvmforge(&self, name: &str, playbook: &str) -> (i32, String) {
        let path = self.path(name);
        std::fs::write(&path, playbook).unwrap();
        let o = self.run(&[
            KVMFORGE,
            "run",
            path.to_str().unwrap(),
            "--detailed-exitcode",
            "-v",
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code().unwrap_or(-1), text)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Shell lines for a NIC standing in for the seed host's, with its MAC.
const NIC: &str = "ip link set lo up
ip link add enp136s0f3 type veth peer name uplink0
ip link set enp136s0f3 address 3c:fd:fe:9e:5a:13
ip link set uplink0 up
ip link set enp136s0f3 up";

/// A D-Bus system bus of the namespace's own.
const DBUS: &str = "mount -t tmpfs tmpfs /run/dbus
dbus-daemon --system --fork --nopidfile";

const SEED_BRIDGE: &str = "        name: br0
        interfaces: [enp136s0f3]
        addresses: [192.168.121.105/24]
        routes:
          - to: default
            via: 192.168.121.101
            on_link: true
            metric: 100
        nameservers:
          addresses: [8.8.8.8]
        mtu: 1500
        parameters:
          stp: false
          forward_delay: 0
";

fn playbook(module: &str, args: &str) -> String {
    format!("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: seed bridge\n      {module}:\n{args}")
}

#[test]
fn netplan_bridge_with_networkd_and_the_installers_file() {
    if skip(
        "netplan_bridge e2e",
        &[
            "unshare",
            "nsenter",
            "dbus-daemon",
            "netplan",
            "networkctl",
            "/lib/systemd/systemd-networkd",
        ],
    ) {
        return;
    }
    // The Ubuntu installer's file: the NIC has the host's address.
    let installer = "# This is the network config written by 'subiquity'\nnetwork:\n  ethernets:\n    enp136s0f3:\n      addresses:\n      - 192.168.121.105/24\n      nameservers:\n        addresses:\n        - 8.8.8.8\n        search: []\n      routes:\n      - to: default\n        via: 192.168.121.101\n  version: 2\n";
    let sb = Sandbox::start(&format!(
        "{DBUS}
mkdir -p \"$SANDBOX/netplan\" /run/systemd /run/netplan
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/netplan
mount --bind \"$SANDBOX/netplan\" /etc/netplan
mount -t sysfs -o ro sysfs /sys
{NIC}
/lib/systemd/systemd-networkd > \"$SANDBOX/networkd.log\" 2>&1 &"
    ));
    sb.wait_for("networkctl list >/dev/null");
    std::fs::write(sb.path("netplan/00-installer-config.yaml"), installer).unwrap();
    sb.sh("chmod 600 /etc/netplan/*.yaml && netplan generate && networkctl reload && networkctl reconfigure enp136s0f3");
    sb.wait_for("ip -4 addr show dev enp136s0f3 | grep -q 192.168.121.105/24");

    // Refused: the installer's file still configures the NIC. Nothing written.
    let (rc, out) = sb.kvmforge("plain.yaml", &playbook("netplan_bridge", SEED_BRIDGE));
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("/etc/netplan/00-installer-config.yaml: network.ethernets.enp136s0f3"),
        "{out}"
    );
    assert!(!sb.path("netplan/60-kvmforge-br0.yaml").exists());

    let take = playbook(
        "netplan_bridge",
        &format!("{SEED_BRIDGE}        take_over: true\n"),
    );

    // Not confirmed: the host restores both files, deletes the bridge and applies the old
    // configuration again.
    let (rc, out) = sb.kvmforge(
        "unconfirmed.yaml",
        &format!("{take}      verify: \"false\"\n      rollback_timeout: 10\n"),
    );
    assert_eq!(rc, 2, "{out}");
    sb.wait_for("! ip link show br0 2>/dev/null");
    sb.wait_for("ip -4 addr show dev enp136s0f3 | grep -q 192.168.121.105/24");
    assert_eq!(
        std::fs::read_to_string(sb.path("netplan/00-installer-config.yaml")).unwrap(),
        installer
    );
    assert!(!sb.path("netplan/60-kvmforge-br0.yaml").exists(), "{out}");

    let (rc, out) = sb.kvmforge("take.yaml", &take);
    assert_eq!(rc, 8, "{out}");
    assert!(
        out.contains("netplan generate --root-dir"),
        "checked first: {out}"
    );
    assert!(out.contains("no udev on this host"), "{out}");
    sb.wait_for("ip -4 addr show dev br0 | grep -q 192.168.121.105/24");
    sb.wait_for("ip link show enp136s0f3 | grep -q 'master br0'");
    let route = sb.sh("ip route show default");
    assert!(
        route.contains("via 192.168.121.101 dev br0") && route.contains("onlink"),
        "{route}"
    );
    let br = sb.sh("ip -d link show br0");
    assert!(
        br.contains("stp_state 0") && br.contains("forward_delay 0"),
        "{br}"
    );
    let installer_now =
        std::fs::read_to_string(sb.path("netplan/00-installer-config.yaml")).unwrap();
    assert!(
        !installer_now.contains("\n    enp136s0f3:"),
        "{installer_now}"
    );
    assert!(std::fs::read_dir(sb.path("netplan")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with('~')));

    // Second run: nothing to do.
    let (rc, out) = sb.kvmforge("take.yaml", &take);
    assert_eq!(rc, 0, "{out}");

    // Gone again.
    let absent = playbook(
        "netplan_bridge",
        "        name: br0\n        state: absent\n",
    );
    let (rc, out) = sb.kvmforge("absent.yaml", &absent);
    assert_eq!(rc, 8, "{out}");
    sb.wait_for("! ip link show br0 2>/dev/null");
    assert!(!sb.path("netplan/60-kvmforge-br0.yaml").exists());
    let (rc, out) = sb.kvmforge("absent.yaml", &absent);
    assert_eq!(rc, 0, "{out}");
}

#[test]
fn nm_bridge_with_networkmanager_and_a_saved_profile() {
    // The daemon to start (`KVMFORGE_TEST_NETWORKMANAGER` names another build or copy).
    let daemon =
        std::env::var("KVMFORGE_TEST_NETWORKMANAGER").unwrap_or_else(|_| "NetworkManager".into());
    if skip(
        "nm_bridge e2e",
        &["unshare", "nsenter", "dbus-daemon", &daemon, "nmcli"],
    ) {
        return;
    }
    // NetworkManager uses udev unless /sys is read-only (as in a container).
    let sb = Sandbox::start(&format!(
        "{DBUS}
mkdir -p \"$SANDBOX/connections\" \"$SANDBOX/lib\" /run/NetworkManager
mount --bind \"$SANDBOX/connections\" /etc/NetworkManager/system-connections
mount --bind \"$SANDBOX/lib\" /var/lib/NetworkManager
mount -t tmpfs tmpfs /run/NetworkManager
mount -t sysfs -o ro sysfs /sys
{NIC}
{daemon} --no-daemon > \"$SANDBOX/nm.log\" 2>&1 &"
    ));
    sb.wait_for("nmcli -t device | grep -q '^enp136s0f3:ethernet:'");
    sb.sh("nmcli device set uplink0 managed no");
    // The host's address lives in a saved profile, as on a server installed by hand.
    let out = sb.sh("nmcli connection add type ethernet ifname enp136s0f3 con-name mgmt ipv4.method manual ipv4.addresses 192.168.121.105/24 ipv6.method disabled && nmcli connection up mgmt");
    assert!(out.contains("successfully activated"), "{out}");

    // A change the controller cannot confirm is rolled back by the host: the bridge's files go,
    // the bridge is deleted, and the guard's reapply brings "mgmt" back up.
    let unconfirmed = format!(
        "{}      verify: \"false\"\n      rollback_timeout: 10\n",
        playbook("nm_bridge", SEED_BRIDGE)
    );
    let (rc, out) = sb.kvmforge("unconfirmed.yaml", &unconfirmed);
    assert_eq!(rc, 2, "{out}");
    sb.wait_for("nmcli -t -f NAME,DEVICE connection show --active | grep -q '^mgmt:enp136s0f3$'");
    sb.wait_for("! ip link show br0 2>/dev/null");
    assert!(!sb.path("connections/br0.nmconnection").exists(), "{out}");
    let route = sb.sh("ip -4 addr show dev enp136s0f3");
    assert!(route.contains("192.168.121.105/24"), "{route}");

    let present = playbook("nm_bridge", SEED_BRIDGE);
    let (rc, out) = sb.kvmforge("present.yaml", &present);
    assert_eq!(rc, 8, "{out}");
    assert!(
        out.contains("\"mgmt\" on enp136s0f3 kept, inactive"),
        "{out}"
    );
    sb.wait_for("ip -4 addr show dev br0 | grep -q 192.168.121.105/24");
    let route = sb.sh("ip route show default");
    assert!(
        route.contains("via 192.168.121.101 dev br0") && route.contains("onlink"),
        "{route}"
    );
    let active = sb.sh("nmcli -t -f NAME,DEVICE,ACTIVE connection show --active");
    assert!(
        active.contains("br0:br0:yes") && active.contains("br0-port-enp136s0f3:enp136s0f3:yes"),
        "{active}"
    );
    assert!(!active.contains("mgmt"), "{active}");
    let mode = sb.sh("stat -c %a /etc/NetworkManager/system-connections/br0.nmconnection");
    assert_eq!(mode.trim(), "600");

    // Second run: nothing to do.
    let (rc, out) = sb.kvmforge("present.yaml", &present);
    assert_eq!(rc, 0, "{out}");

    // Taken down by hand: activated again.
    sb.sh("nmcli connection down br0");
    let (rc, out) = sb.kvmforge("present.yaml", &present);
    assert_eq!(rc, 8, "{out}");
    assert!(out.contains("re-activate"), "{out}");
    let (rc, out) = sb.kvmforge("present.yaml", &present);
    assert_eq!(rc, 0, "{out}");

    // Gone: the saved profile has the NIC again.
    let absent = playbook("nm_bridge", "        name: br0\n        state: absent\n");
    let (rc, out) = sb.kvmforge("absent.yaml", &absent);
    assert_eq!(rc, 8, "{out}");
    sb.wait_for("! ip link show br0 2>/dev/null");
    sb.wait_for("nmcli -t -f NAME,DEVICE connection show --active | grep -q '^mgmt:enp136s0f3$'");
    let (rc, out) = sb.kvmforge("absent.yaml", &absent);
    assert_eq!(rc, 0, "{out}");
}
