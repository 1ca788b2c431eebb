//! NetworkManager: its connection profiles (keyfiles) and which of them are active, read with one
//! command.
//!
//! [`NmState`] holds every keyfile in `/etc/NetworkManager/system-connections` (profiles people
//! and tools saved) and `/run/NetworkManager/system-connections` (profiles NetworkManager made up
//! itself, like "Wired connection 1", or that netplan generated), each parsed into sections and
//! keys, and the `nmcli -t -f NAME,UUID,TYPE,DEVICE,ACTIVE connection show` table, which says
//! which profile is up on which device. nmcli's exit code is kept rather than failing the probe,
//! so "NetworkManager is not running" is a message the planner can give.

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};
use std::collections::BTreeMap;

const FILE_MARK: &str = "### keyfile: ";
const NMCLI_MARK: &str = "### nmcli ###";
const EXIT_MARK: &str = "### nmcli exit: ";
const END: &str = " ###";

/// The folders NetworkManager's keyfile plugin reads, persistent first.
pub const DIRS: [&str; 2] = [
    "/etc/NetworkManager/system-connections",
    "/run/NetworkManager/system-connections",
];

/// A keyfile's settings: section → key → value, as written (escapes kept). Order-insensitive,
/// so two files that say the same thing compare equal.
pub type Settings = BTreeMap<String, BTreeMap<String, String>>;

/// NetworkManager's profiles and what is active.
#[derive(Debug, Clone, PartialEq)]
pub struct NmState {
    pub keyfiles: Vec<Keyfile>,
    /// Every profile nmcli knows, or why nmcli could not say (not installed, not running).
    pub connections: Result<Vec<NmConnection>, String>,
}

/// One keyfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyfile {
    pub path: String,
    /// Permission bits: NetworkManager ignores a keyfile others can read.
    pub mode: u32,
    pub text: String,
    pub settings: Settings,
}

/// One line of `nmcli -t -f NAME,UUID,TYPE,DEVICE,ACTIVE connection show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NmConnection {
    pub name: String,
    pub uuid: String,
    /// `802-3-ethernet`, `bridge`, `vlan`, `loopback`, ...
    pub kind: String,
    /// The device it is active on, if any.
    pub device: Option<String>,
    pub active: bool,
}

impl Keyfile {
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.settings.get(section)?.get(key).map(String::as_str)
    }
    pub fn uuid(&self) -> Option<&str> {
        self.get("connection", "uuid")
    }
    pub fn id(&self) -> Option<&str> {
        self.get("connection", "id")
    }
    /// The bridge (or bond) this profile makes its device a port of: `controller` in
    /// NetworkManager 1.46 and later, `master` before.
    pub fn controller(&self) -> Option<&str> {
        self.get("connection", "controller")
            .or_else(|| self.get("connection", "master"))
    }
    /// Whether NetworkManager brings it up by itself (the default is yes).
    pub fn autoconnect(&self) -> bool {
        !matches!(
            self.get("connection", "autoconnect"),
            Some("false" | "0" | "no")
        )
    }
}

impl NmState {
    pub fn keyfile(&self, path: &str) -> Option<&Keyfile> {
        self.keyfiles.iter().find(|k| k.path == path)
    }
    pub fn by_uuid(&self, uuid: &str) -> Option<&Keyfile> {
        self.keyfiles.iter().find(|k| k.uuid() == Some(uuid))
    }
    /// nmcli's table, or the reason it is missing as a message for the user.
    pub fn connections(&self) -> Result<&[NmConnection], String> {
        self.connections.as_deref().map_err(Clone::clone)
    }
    /// The active profile on a device.
    pub fn active_on(&self, device: &str) -> Option<&NmConnection> {
        self.connections
            .as_ref()
            .ok()?
            .iter()
            .find(|c| c.active && c.device.as_deref() == Some(device))
    }
}

/// Parse a keyfile (GLib key file syntax: `[section]`, `key=value`, `#` comments).
pub fn parse_keyfile(text: &str) -> Result<Settings, String> {
    let mut out = Settings::new();
    let mut section: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.entry(name.to_string()).or_default();
            section = Some(name.to_string());
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: not `key=value`: {line:?}", n + 1));
        };
        let Some(s) = &section else {
            return Err(format!("line {}: a key before any [section]", n + 1));
        };
        out.get_mut(s)
            .expect("section entered")
            .insert(k.trim_end().to_string(), v.trim_start().to_string());
    }
    Ok(out)
}

/// Split one `nmcli -t` line on unescaped `:` and undo `\:` and `\\`.
fn terse_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().expect("one field").push(n);
                }
            }
            ':' => out.push(String::new()),
            c => out.last_mut().expect("one field").push(c),
        }
    }
    out
}

fn marked<'a>(line: &'a str, mark: &str) -> Option<&'a str> {
    line.strip_prefix(mark)?.strip_suffix(END)
}

impl Fact for NmState {
    const NAME: &'static str = "NetworkManager profiles";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(format!(
            "for d in {}; do for f in \"$d\"/*; do [ -f \"$f\" ] || continue; \
printf '{FILE_MARK}%s mode=%s{END}\\n' \"$f\" \"$(stat -c %a \"$f\")\"; cat \"$f\" || exit 1; echo; done; done; \
printf '{NMCLI_MARK}\\n'; nmcli -t -f NAME,UUID,TYPE,DEVICE,ACTIVE connection show 2>&1; \
printf '{EXIT_MARK}%s{END}\\n' $?",
            DIRS.join(" ")
        ))
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let mut keyfiles = Vec::new();
        let mut file: Option<(String, u32, String)> = None;
        let mut nmcli: Option<String> = None;
        let mut exit: Option<i32> = None;
        let finish = |file: Option<(String, u32, String)>, keyfiles: &mut Vec<Keyfile>| {
            if let Some((path, mode, mut text)) = file {
                if text.ends_with('\n') {
                    text.pop();
                }
                let settings = parse_keyfile(&text).unwrap_or_default();
                keyfiles.push(Keyfile {
                    path,
                    mode,
                    text,
                    settings,
                });
            }
        };
        for line in out.split_inclusive('\n') {
            let bare = line.strip_suffix('\n').unwrap_or(line);
            if let Some(head) = marked(bare, FILE_MARK) {
                finish(file.take(), &mut keyfiles);
                let (path, mode) = head
                    .rsplit_once(" mode=")
                    .ok_or_else(|| format!("keyfile marker without mode: {bare:?}"))?;
                let mode = u32::from_str_radix(mode, 8)
                    .map_err(|_| format!("bad keyfile mode in {bare:?}"))?;
                file = Some((path.to_string(), mode, String::new()));
            } else if bare == NMCLI_MARK {
                finish(file.take(), &mut keyfiles);
                nmcli = Some(String::new());
            } else if let Some(rc) = marked(bare, EXIT_MARK) {
                exit = Some(
                    rc.parse()
                        .map_err(|_| format!("bad nmcli exit code {rc:?}"))?,
                );
            } else if let Some(n) = nmcli.as_mut() {
                n.push_str(line);
            } else if let Some((_, _, text)) = file.as_mut() {
                text.push_str(line);
            } else if !bare.is_empty() {
                return Err(format!("unexpected NetworkManager listing: {bare:?}"));
            }
        }
        finish(file.take(), &mut keyfiles);
        let (Some(table), Some(rc)) = (nmcli, exit) else {
            return Err("the NetworkManager listing was cut short".into());
        };
        let connections = match rc {
            0 => Ok(table
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let f = terse_fields(l);
                    let get = |i: usize| f.get(i).cloned().unwrap_or_default();
                    NmConnection {
                        name: get(0),
                        uuid: get(1),
                        kind: get(2),
                        device: Some(get(3)).filter(|d| !d.is_empty()),
                        active: get(4) == "yes",
                    }
                })
                .collect()),
            127 => Err("nmcli is not installed: this host does not run NetworkManager".into()),
            _ => Err(format!(
                "NetworkManager does not answer (is it running?): {}",
                table.lines().last().unwrap_or("").trim()
            )),
        };
        Ok(NmState {
            keyfiles,
            connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::fixture;

    fn state(path: &str) -> NmState {
        NmState::parse(
            &(),
            &Observation::Command(CommandOutput::ok(&fixture(path))),
        )
        .unwrap()
    }

    #[test]
    fn auto_wired_connections_live_in_run() {
        let s = state("networkmanager/auto-wired-connections.txt");
        assert_eq!(s.keyfiles.len(), 5);
        let k = &s.keyfiles[0];
        assert_eq!(
            k.path,
            "/run/NetworkManager/system-connections/Wired connection 1.nmconnection"
        );
        assert_eq!(k.id(), Some("Wired connection 1"));
        assert_eq!(k.get("connection", "interface-name"), Some("enp1s0"));
        assert_eq!(k.get(".nmmeta", "nm-generated"), Some("true"));
        assert!(k.autoconnect());
        let c = s.active_on("enp1s0").unwrap();
        assert_eq!(c.name, "Wired connection 1");
        assert_eq!(c.uuid, "78503e16-9647-33c8-8f09-e7bf09a111b4");
        assert_eq!(c.kind, "802-3-ethernet");
        assert!(s.by_uuid(&c.uuid).is_some());
    }

    #[test]
    fn saved_profile_and_inactive_ones() {
        let s = state("networkmanager/static-profile.txt");
        let k = s
            .keyfile("/etc/NetworkManager/system-connections/mgmt.nmconnection")
            .unwrap();
        assert_eq!(k.get("ipv4", "address1"), Some("10.0.0.5/24,10.0.0.1"));
        assert_eq!(k.mode, 0o600);
        assert_eq!(s.active_on("enp2s0").unwrap().name, "mgmt");
        let all = s.connections().unwrap();
        let w3 = all.iter().find(|c| c.name == "Wired connection 3").unwrap();
        assert!(!w3.active && w3.device.is_none());
    }

    #[test]
    fn not_running_is_a_message() {
        let s = state("networkmanager/not-running.txt");
        assert!(s.keyfiles.is_empty());
        let e = s.connections().unwrap_err();
        assert!(
            e.contains("does not answer") && e.contains("Could not connect"),
            "{e}"
        );
        let out = "### nmcli ###\nsh: 1: nmcli: not found\n### nmcli exit: 127 ###\n";
        let s = NmState::parse(&(), &Observation::Command(CommandOutput::ok(out))).unwrap();
        assert!(s.connections().unwrap_err().contains("not installed"));
        assert!(NmState::parse(&(), &Observation::Command(CommandOutput::ok(""))).is_err());
    }

    #[test]
    fn terse_escapes() {
        assert_eq!(
            terse_fields(r"a\:b:uuid:vlan:eth0.5:yes"),
            ["a:b", "uuid", "vlan", "eth0.5", "yes"]
        );
        assert_eq!(terse_fields(r"back\\slash::"), ["back\\slash", "", ""]);
    }

    #[test]
    fn keyfile_syntax() {
        let s = parse_keyfile("# c\n[connection]\nid=x\n\n[ipv4]\nmethod = disabled\n").unwrap();
        assert_eq!(s["ipv4"]["method"], "disabled");
        assert!(parse_keyfile("id=x\n").is_err());
        assert!(parse_keyfile("[a]\nnonsense\n").is_err());
    }

    #[test]
    fn probe_runs_on_this_machine() {
        let seen = crate::modules::facts::run_here(&NmState::probe(&()));
        NmState::parse(&(), &seen).unwrap();
    }
}
