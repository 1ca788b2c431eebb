//! netplan: every configuration file netplan reads, and whether the host can run `netplan apply`.
//!
//! Two facts, both host-wide:
//! - [`NetplanConfig`]: every `*.yaml` in `/lib/netplan`, `/etc/netplan` and `/run/netplan`, read
//!   with one command (each file after a marker line naming it), parsed as YAML 1.1 the way
//!   netplan's libyaml reads it (`dhcp4: yes` is a boolean). netplan merges the files in the
//!   order of their names whatever their folder, and a file in `/run` hides one of the same name
//!   in `/etc`, which hides one in `/lib`: [`NetplanConfig::effective`] is that list.
//! - [`NetplanHost`]: where `netplan` is, and whether udev runs (`/run/udev/control` exists).
//!   `netplan apply` waits for udev to rename and settle devices; in a container without udev it
//!   fails, and `networkctl reload` + `reconfigure` does the same job there.

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};
use serde_json::Value;

/// The marker line before each file: `### netplan file: PATH mode=600 ###`. A real netplan file
/// never has such a line (a `#` comment starting with exactly this text, ending with `###`).
pub const MARK: &str = "### netplan file: ";
const MARK_END: &str = " ###";

/// The folders netplan reads, lowest precedence first.
pub const DIRS: [&str; 3] = ["/lib/netplan", "/etc/netplan", "/run/netplan"];

/// Every netplan configuration file on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NetplanConfig {
    /// In the order read: by folder (`/lib`, `/etc`, `/run`), then by name.
    pub files: Vec<NetplanFile>,
}

/// One file.
#[derive(Debug, Clone, PartialEq)]
pub struct NetplanFile {
    pub path: String,
    /// Permission bits: netplan warns about files others can read (they may hold secrets).
    pub mode: u32,
    pub text: String,
    /// The YAML (1.1) as JSON, or why it does not parse. An empty file is `null`.
    pub yaml: Result<Value, String>,
}

impl NetplanFile {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
    pub fn dir(&self) -> &str {
        self.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }
    /// `network.KIND.ID` (`ethernets`, `bridges`, `vlans`, `bonds`, ...), as a mapping of IDs.
    pub fn section(&self, kind: &str) -> Option<&serde_json::Map<String, Value>> {
        self.yaml
            .as_ref()
            .ok()?
            .get("network")?
            .get(kind)?
            .as_object()
    }
}

impl NetplanConfig {
    /// The files netplan uses, in the order it merges them: a name in `/run` hides the same name
    /// in `/etc` and `/lib`, one in `/etc` hides `/lib`; then sorted by name.
    pub fn effective(&self) -> Vec<&NetplanFile> {
        let mut out: Vec<&NetplanFile> = Vec::new();
        for f in &self.files {
            // Later folders win: files come in folder order.
            out.retain(|o| o.name() != f.name());
            out.push(f);
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }
    pub fn get(&self, path: &str) -> Option<&NetplanFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Parse a netplan file's text as netplan reads it.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    crate::yaml11::parse(text)
        .map(|n| n.to_json())
        .map_err(|e| e.to_string())
}

impl Fact for NetplanConfig {
    const NAME: &'static str = "netplan configuration";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(format!(
            "for d in {}; do for f in \"$d\"/*.yaml; do [ -f \"$f\" ] || continue; \
printf '{MARK}%s mode=%s{MARK_END}\\n' \"$f\" \"$(stat -c %a \"$f\")\"; cat \"$f\" || exit 1; echo; done; done",
            DIRS.join(" ")
        ))
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let mut files = Vec::new();
        let mut current: Option<(String, u32, String)> = None;
        let finish = |cur: Option<(String, u32, String)>, files: &mut Vec<NetplanFile>| {
            if let Some((path, mode, mut text)) = cur {
                // The probe adds one newline after each file.
                if text.ends_with('\n') {
                    text.pop();
                }
                let yaml = parse_yaml(&text);
                files.push(NetplanFile {
                    path,
                    mode,
                    text,
                    yaml,
                });
            }
        };
        for line in out.split_inclusive('\n') {
            let bare = line.strip_suffix('\n').unwrap_or(line);
            if let Some(head) = bare
                .strip_prefix(MARK)
                .and_then(|r| r.strip_suffix(MARK_END))
            {
                finish(current.take(), &mut files);
                let (path, mode) = head
                    .rsplit_once(" mode=")
                    .ok_or_else(|| format!("netplan file marker without mode: {bare:?}"))?;
                let mode = u32::from_str_radix(mode, 8)
                    .map_err(|_| format!("bad netplan file mode in {bare:?}"))?;
                current = Some((path.to_string(), mode, String::new()));
            } else if let Some((_, _, text)) = current.as_mut() {
                text.push_str(line);
            } else if !bare.is_empty() {
                return Err(format!(
                    "unexpected netplan listing before any file: {bare:?}"
                ));
            }
        }
        finish(current.take(), &mut files);
        Ok(NetplanConfig { files })
    }
}

/// What the host has to apply netplan with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetplanHost {
    /// The `netplan` command's path, if installed.
    pub netplan: Option<String>,
    /// udev runs: `netplan apply` works. Without it (containers), apply with
    /// `netplan generate` and networkd directly.
    pub udev: bool,
    /// `networkctl` is installed.
    pub networkctl: bool,
}

impl Fact for NetplanHost {
    const NAME: &'static str = "netplan tools";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(
            "printf 'netplan=%s\\n' \"$(command -v netplan)\"; \
printf 'networkctl=%s\\n' \"$(command -v networkctl)\"; \
if [ -S /run/udev/control ] && command -v udevadm >/dev/null; then echo udev=yes; else echo udev=no; fi"
                .into(),
        )
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let mut host = NetplanHost {
            netplan: None,
            udev: false,
            networkctl: false,
        };
        for line in out.lines() {
            match line.split_once('=') {
                Some(("netplan", p)) if !p.is_empty() => host.netplan = Some(p.to_string()),
                Some(("networkctl", p)) => host.networkctl = !p.is_empty(),
                Some(("udev", v)) => host.udev = v == "yes",
                _ => {}
            }
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, Observed};
    use crate::modules::facts::fixture;
    use serde_json::json;

    fn config(path: &str) -> NetplanConfig {
        let o = Observed::new().with_fact::<NetplanConfig>(
            &(),
            Observation::Command(CommandOutput::ok(&fixture(path))),
        );
        (*o.fact::<NetplanConfig>(&()).unwrap()).clone()
    }

    #[test]
    fn ubuntu_2204_cloud_image() {
        let c = config("netplan/ubuntu-22.04-cloud-init.txt");
        assert_eq!(c.files.len(), 1);
        let f = &c.files[0];
        assert_eq!(f.path, "/etc/netplan/50-cloud-init.yaml");
        assert_eq!(f.mode, 0o644, "cloud-init before 23.4 wrote it readable");
        assert!(f
            .text
            .starts_with("# This file is generated from information"));
        assert!(f.text.ends_with("    version: 2\n"), "{:?}", f.text);
        let eth = &f.section("ethernets").unwrap()["enp1s0"];
        assert_eq!(eth["dhcp4"], json!(true));
        assert_eq!(eth["match"]["macaddress"], json!("52:54:00:4e:9a:07"));
    }

    #[test]
    fn ubuntu_2204_installer_static_and_yaml11_booleans() {
        let c = config("netplan/ubuntu-22.04-installer.txt");
        let f = c.get("/etc/netplan/00-installer-config.yaml").unwrap();
        let eth = &f.section("ethernets").unwrap()["enp136s0f3"];
        assert_eq!(eth["addresses"], json!(["192.168.121.105/24"]));
        assert_eq!(eth["routes"][0]["via"], json!("192.168.121.101"));
        // The hand-written bridge file of the same host: `dhcp4: yes` is a boolean, as netplan
        // reads it.
        let f = c.get("/etc/netplan/bridge.yaml").unwrap();
        assert_eq!(f.section("bridges").unwrap()["br0"]["dhcp4"], json!(true));
    }

    #[test]
    fn ubuntu_2404_shadowing_and_order() {
        let c = config("netplan/ubuntu-24.04-desktop.txt");
        assert_eq!(c.files.len(), 4);
        let names: Vec<&str> = c.effective().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/etc/netplan/01-network-manager-all.yaml",
                "/run/netplan/50-cloud-init.yaml",
                "/etc/netplan/90-NM-3a1d6c2e-5f3b-4c1e-9a57-1f0d1c2b3a4d.yaml",
            ]
        );
        let f = c.get("/etc/netplan/01-network-manager-all.yaml").unwrap();
        assert_eq!(
            f.yaml.as_ref().unwrap()["network"]["renderer"],
            json!("NetworkManager")
        );
    }

    #[test]
    fn broken_yaml_is_kept_with_its_error_and_empty_listing_is_no_files() {
        let out = format!("{MARK}/etc/netplan/x.yaml mode=600{MARK_END}\nnetwork: [\n\n{MARK}/etc/netplan/empty.yaml mode=644{MARK_END}\n\n");
        let c = NetplanConfig::parse(&(), &Observation::Command(CommandOutput::ok(&out))).unwrap();
        assert!(c.files[0].yaml.is_err());
        assert_eq!(c.files[1].yaml, Ok(Value::Null));
        assert_eq!(c.files[1].mode, 0o644);
        let c = NetplanConfig::parse(&(), &Observation::Command(CommandOutput::ok(""))).unwrap();
        assert!(c.files.is_empty());
    }

    #[test]
    fn probe_reads_this_machines_netplan_folders() {
        let seen = crate::modules::facts::run_here(&NetplanConfig::probe(&()));
        NetplanConfig::parse(&(), &seen).unwrap();
        let seen = crate::modules::facts::run_here(&NetplanHost::probe(&()));
        NetplanHost::parse(&(), &seen).unwrap();
    }

    #[test]
    fn host_tools() {
        let h = NetplanHost::parse(
            &(),
            &Observation::Command(CommandOutput::ok(&fixture("netplan/host-container.txt"))),
        )
        .unwrap();
        assert_eq!(
            h,
            NetplanHost {
                netplan: Some("/usr/sbin/netplan".into()),
                udev: false,
                networkctl: true
            }
        );
        let h = NetplanHost::parse(
            &(),
            &Observation::Command(CommandOutput::ok("netplan=\nnetworkctl=\nudev=yes\n")),
        )
        .unwrap();
        assert!(h.netplan.is_none() && h.udev && !h.networkctl);
    }
}
