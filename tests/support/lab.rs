//! Test lab: real Debian hosts (systemd-nspawn containers in private network
//! namespaces) for end-to-end tests, driven by `tests/lab/lab.sh`.
//!
//! ```ignore
//! #[path = "support/lab.rs"]
//! mod lab;
//!
//! let Some(lab) = lab::Lab::up("mytest", 3, None) else { return }; // skipped
//! let out = lab.ssh("h1", "hostname");
//! ```
//!
//! `Lab::up` returns `None` (after a loud message on stderr) when labs cannot
//! run here: not root, or the machine cannot run systemd-nspawn containers.
//!
//! VM hosts (QEMU guests with their own kernel, for what containers cannot
//! do: VLANs, vfio, hugepages, grub, reboots) come with `Lab::up_with`:
//!
//! ```ignore
//! let vm = lab::Vm { nvme: 1, ..Default::default() };
//! let Some(lab) = lab::Lab::up_with("mytest", 1, None, &[vm]) else { return };
//! lab.ssh("q1", "uname -r"); let boot_id = lab.reboot("q1");
//! ```
//!
//! A VM boot costs about a minute of both cores, so a test binary should
//! share one lab with VMs between its checks rather than boot one per test.
//! Environment:
//! - `KVMFORGE_LAB_REQUIRE=1`: panic instead of skipping.
//! - `KVMFORGE_LAB_SKIP=1`: always skip.
//! - `KVMFORGE_LAB_VMS=0`: skip every lab that has VMs.
//! - `KVMFORGE_LAB_KEEP=1`: do not tear the lab down on drop (for debugging).
//! - `KVMFORGE_LAB_SH=/path/lab.sh`: use another harness script.
//!
//! std only.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Password of the user `kf` (whose sudo rule requires it).
pub const KF_PASSWORD: &str = "kfpass";

/// Options of one VM host.  The VMs of a lab are q1, q2, ... in the order
/// given, on the front network at `.251`, `.252`, ... (their NIC `lan0`) and on
/// the VM network at the same last octet (`lan1`).
#[derive(Clone, Debug)]
pub struct Vm {
    /// Memory in MiB.
    pub mem_mb: u32,
    pub cpus: u32,
    /// Spare emulated NVMe drives on the root bus, each in its own IOMMU group.
    pub nvme: u32,
    /// NVMe drives behind one `pci-bridge`: they share an IOMMU group.
    pub bridged_nvme: u32,
    /// Emulated e1000 NICs, connected to nothing.
    pub e1000: u32,
    /// Emulated e1000 NICs behind the same `pci-bridge` as the `bridged_nvme` drives: in their
    /// IOMMU group.
    pub bridged_e1000: u32,
    /// Boot from an NVMe drive instead of virtio-blk (to test refusing the boot disk).
    pub root_on_nvme: bool,
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            mem_mb: 1024,
            cpus: 2,
            nvme: 0,
            bridged_nvme: 0,
            e1000: 0,
            bridged_e1000: 0,
            root_on_nvme: false,
        }
    }
}

impl Vm {
    /// The `--vm` argument of lab.sh.
    pub fn spec(&self) -> String {
        format!(
            "mem={},cpus={},nvme={},bridged={},e1000={},bridged_e1000={},root={}",
            self.mem_mb,
            self.cpus,
            self.nvme,
            self.bridged_nvme,
            self.e1000,
            self.bridged_e1000,
            if self.root_on_nvme { "nvme" } else { "virtio" }
        )
    }
}

/// A running lab.  Dropping it tears everything down.
pub struct Lab {
    /// Lab name as given to lab.sh.
    pub name: String,
    /// Run directory (`/run/kvmforge-lab/NAME`).
    pub dir: PathBuf,
    /// Ansible-style YAML inventory of all hosts.
    pub inventory: PathBuf,
    /// The lab's private client key (authorized for root, kf and kfnopw on every host).
    pub key: PathBuf,
    /// known_hosts with every host's real key, by address.
    pub known_hosts: PathBuf,
    /// ssh client config: `ssh -F ssh_config h1` (v* hosts go through the jump host).
    pub ssh_config: PathBuf,
    /// (name, address) of every host: h1..hN, then jump and v1..vM if requested.
    pub hosts: Vec<(String, String)>,
    /// Front address of the jump host, if the lab has one.
    pub jump: Option<String>,
    script: PathBuf,
}

fn is_root() -> bool {
    // effective uid from /proc/self/status ("Uid:\treal\teffective\t...")
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

fn skip(name: &str, reason: &str) -> Option<Lab> {
    skip_what(
        name,
        reason,
        "needs root on Linux with systemd-nspawn, overlayfs and network namespaces",
    )
}

fn skip_what(name: &str, reason: &str, needs: &str) -> Option<Lab> {
    if env_flag("KVMFORGE_LAB_REQUIRE") {
        panic!("lab '{name}' cannot run here and KVMFORGE_LAB_REQUIRE is set: {reason}");
    }
    let bar = "#".repeat(78);
    // written to the stderr handle directly: the test harness does not capture
    // that, so the message shows even for a passing test
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n### SKIPPED: test lab '{name}' not started\n### reason: {reason}\n\
         ### ({needs};\n\
         ###  set KVMFORGE_LAB_REQUIRE=1 to make this a failure)\n{bar}\n"
    );
    None
}

/// Lab names accepted by lab.sh: [A-Za-z0-9_-], at most 40 characters.
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(40);
    if s.is_empty() {
        s.push_str("lab");
    }
    s
}

/// A command's exit status and output, for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

/// A command's exit code (-1 when killed by a signal).
pub fn exit_code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A command's stdout and stderr, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Lab {
    /// PCI address of a VM's NVMe controller with this serial (`kfroot`, `kfspare0`, ...).
    pub fn nvme_by_serial(&self, host: &str, serial: &str) -> String {
        let out = self.ssh(
            host,
            &format!(
                "for c in /sys/class/nvme/nvme*; do \
                   [ \"$(cat $c/serial | tr -d ' ')\" = {serial} ] && basename \"$(readlink -f $c/device)\"; \
                 done; true"
            ),
        );
        let addr = text(&out.stdout).trim().to_string();
        assert!(
            addr.contains(':'),
            "{host}: no NVMe controller with serial {serial}: {addr:?} {}",
            text(&out.stderr)
        );
        addr
    }

    /// Path of lab.sh.
    pub fn script() -> PathBuf {
        if let Some(p) = std::env::var_os("KVMFORGE_LAB_SH") {
            return PathBuf::from(p);
        }
        if let Some(dir) = option_env!("CARGO_MANIFEST_DIR") {
            let p = Path::new(dir).join("tests/lab/lab.sh");
            if p.exists() {
                return p;
            }
        }
        // compiled without cargo: file!() is relative to where rustc ran
        let here = Path::new(file!()).parent().unwrap_or(Path::new("."));
        let p = here.join("../lab/lab.sh");
        if p.exists() {
            return p;
        }
        PathBuf::from("tests/lab/lab.sh")
    }

    fn run_script(script: &Path, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
    }

    /// Boot `hosts` hosts h1..hN on the front network and, with `jump: Some(m)`,
    /// a host `jump` (front + VM network) and m hosts v1..vM on the VM network
    /// only.  Returns None (after a loud message) when labs cannot run here.
    /// Panics if the lab should work here but does not come up.
    pub fn up(name: &str, hosts: usize, jump: Option<usize>) -> Option<Lab> {
        Self::up_with(name, hosts, jump, &[])
    }

    /// Like `up`, plus one QEMU VM per entry of `vms` (q1, q2, ...).  Returns
    /// None (after a loud message) also when VMs cannot run here or
    /// `KVMFORGE_LAB_VMS=0`.
    pub fn up_with(name: &str, hosts: usize, jump: Option<usize>, vms: &[Vm]) -> Option<Lab> {
        let name = sanitize(name);
        let vm_needs = "needs root on Linux with QEMU (qemu-system-x86, installed on demand), \
                        /dev/net/tun and loop devices";
        if !vms.is_empty() && std::env::var("KVMFORGE_LAB_VMS").as_deref() == Ok("0") {
            return skip_what(&name, "KVMFORGE_LAB_VMS=0", vm_needs);
        }
        if env_flag("KVMFORGE_LAB_SKIP") {
            return skip(&name, "KVMFORGE_LAB_SKIP is set");
        }
        if !cfg!(target_os = "linux") {
            return skip(&name, "not Linux");
        }
        if !is_root() {
            return skip(&name, "not running as root");
        }
        let script = Self::script();
        if !script.exists() {
            return skip(
                &name,
                &format!("harness script {} not found", script.display()),
            );
        }
        let check = Self::run_script(&script, &["check"]);
        if !check.status.success() {
            let why = text(&check.stderr);
            return skip(&name, why.trim());
        }
        if !vms.is_empty() {
            let check = Self::run_script(&script, &["check-vms"]);
            if !check.status.success() {
                let why = text(&check.stderr);
                return skip_what(&name, why.trim(), vm_needs);
            }
        }

        let mut args: Vec<String> = vec![
            "up".into(),
            name.clone(),
            "--hosts".into(),
            hosts.to_string(),
        ];
        if let Some(m) = jump {
            args.push("--jump".into());
            args.push(m.to_string());
        }
        for vm in vms {
            args.push("--vm".into());
            args.push(vm.spec());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = Self::run_script(&script, &argv);
        if !out.status.success() {
            panic!(
                "lab.sh up {name} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let stdout = text(&out.stdout);
        let dir = PathBuf::from(
            stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .expect("lab.sh up printed no run directory")
                .trim(),
        );
        let hosts_txt = std::fs::read_to_string(dir.join("hosts.txt"))
            .unwrap_or_else(|e| panic!("cannot read {}/hosts.txt: {e}", dir.display()));
        let hosts = hosts_txt
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect();
        let jump = std::fs::read_to_string(dir.join("jump"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Some(Lab {
            inventory: dir.join("inventory.yaml"),
            key: dir.join("id_ed25519"),
            known_hosts: dir.join("known_hosts"),
            ssh_config: dir.join("ssh_config"),
            dir,
            hosts,
            jump,
            name,
            script,
        })
    }

    /// Address of a host (front address; VM-network address for v* hosts).
    pub fn addr(&self, host: &str) -> &str {
        self.hosts
            .iter()
            .find(|(n, _)| n == host)
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("no host '{host}' in lab '{}'", self.name))
    }

    /// Is this host a QEMU VM (q1, q2, ...)?
    pub fn is_vm(&self, host: &str) -> bool {
        let rest = host.strip_prefix('q').unwrap_or("");
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
    }

    /// Names of the VM hosts.
    pub fn vms(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.is_vm(n))
            .collect()
    }

    /// Reboot a VM in place (`systemctl reboot`) and wait until it is back
    /// over ssh with a new boot id; returns that boot id.  Panics if it does
    /// not come back in time (the console tail is in the message).
    pub fn reboot(&self, host: &str) -> String {
        let out = self.lab_sh_ok(&["reboot", host]);
        text(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The host's serial console (VMs) or container console, as written so far.
    pub fn console(&self, host: &str) -> String {
        std::fs::read_to_string(self.dir.join("hosts").join(format!("{host}.console")))
            .unwrap_or_default()
    }

    /// Is this host reachable only through the jump host?
    pub fn behind_jump(&self, host: &str) -> bool {
        self.jump.is_some() && host.starts_with('v')
    }

    /// ssh client options for the lab (key, known_hosts, strict checking, batch
    /// mode), without any jump host.
    pub fn ssh_opts(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// Full ssh argument list (without the command) to reach `user@host`,
    /// through the jump host for v* hosts.
    pub fn ssh_args_as(&self, user: &str, host: &str) -> Vec<String> {
        let mut a = self.ssh_opts();
        if self.behind_jump(host) {
            let jump = self.jump.as_deref().unwrap_or_default();
            a.push("-o".into());
            a.push(format!(
                "ProxyCommand=ssh {} -W %h:%p root@{jump}",
                self.ssh_opts().join(" ")
            ));
        }
        a.push(format!("{user}@{}", self.addr(host)));
        a
    }

    pub fn ssh_args(&self, host: &str) -> Vec<String> {
        self.ssh_args_as("root", host)
    }

    /// Run `cmd` (a shell command line) on `host` as root over real ssh.
    pub fn ssh(&self, host: &str, cmd: &str) -> Output {
        self.ssh_as("root", host, cmd)
    }

    /// Run `cmd` on `host` as `user` (root, kf or kfnopw) over real ssh.
    pub fn ssh_as(&self, user: &str, host: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .args(self.ssh_args_as(user, host))
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ssh")
    }

    fn lab_sh(&self, args: &[&str]) -> Output {
        let mut v = vec![args[0], self.name.as_str()];
        v.extend_from_slice(&args[1..]);
        Self::run_script(&self.script, &v)
    }

    fn lab_sh_ok(&self, args: &[&str]) -> Output {
        let out = self.lab_sh(args);
        if !out.status.success() {
            panic!(
                "lab.sh {} {} failed ({}): {}",
                args[0],
                self.name,
                out.status,
                text(&out.stderr)
            );
        }
        out
    }

    /// Run `cmd` (a shell command line) as root inside the host, without ssh
    /// (works with sshd stopped).  A VM has no way in but ssh: there it is
    /// the same as `ssh`.
    pub fn exec(&self, host: &str, cmd: &str) -> Output {
        self.lab_sh(&["exec", host, "sh", "-c", cmd])
    }

    /// The NIC carrying `addr` on the host, and that address with its prefix (`10.0.0.5/24`).
    pub fn nic_with(&self, host: &str, addr: &str) -> (String, String) {
        let out = self.exec(
            host,
            &format!(
                "ip -o -4 addr show | awk '$4 ~ /^{}\\// {{print $2, $4}}'",
                addr.replace('.', "\\.")
            ),
        );
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut f = line.split_whitespace();
        let (n, a) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
        assert!(!n.is_empty(), "no NIC with {addr} on {host}: {line}");
        (n.to_string(), a.to_string())
    }

    /// The NIC carrying the host's lab address, and that address with its prefix.
    pub fn nic(&self, host: &str) -> (String, String) {
        self.nic_with(host, self.addr(host))
    }

    /// Stop sshd on the host (connections are then refused).
    pub fn stop_sshd(&self, host: &str) {
        self.lab_sh_ok(&["stop-sshd", host]);
    }

    pub fn start_sshd(&self, host: &str) {
        self.lab_sh_ok(&["start-sshd", host]);
    }

    /// Give the host a new ssh host key and restart sshd.  `known_hosts` keeps
    /// the old key; returns the new known_hosts line ("ADDR ssh-ed25519 KEY").
    pub fn rekey(&self, host: &str) -> String {
        let out = self.lab_sh_ok(&["rekey", host]);
        text(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Detach the host from its networks (connections time out) / reattach it.
    pub fn unplug(&self, host: &str) {
        self.lab_sh_ok(&["unplug", host]);
    }

    pub fn plug(&self, host: &str) {
        self.lab_sh_ok(&["plug", host]);
    }

    /// Stop the host's container or VM (the host disappears) / boot it again
    /// on the same disk.
    pub fn kill(&self, host: &str) {
        self.lab_sh_ok(&["kill", host]);
    }

    pub fn start(&self, host: &str) {
        self.lab_sh_ok(&["start", host]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if env_flag("KVMFORGE_LAB_KEEP") {
            eprintln!(
                "lab '{}' kept (KVMFORGE_LAB_KEEP): {}; remove with: {} down {}",
                self.name,
                self.dir.display(),
                self.script.display(),
                self.name
            );
            return;
        }
        let out = Self::run_script(&self.script, &["down", &self.name]);
        if !out.status.success() {
            eprintln!("lab.sh down {} failed: {}", self.name, text(&out.stderr));
        }
    }
}
