//! Network devices and the hardware under them, and the SSH session a run arrives through.
//!
//! `ip` names interfaces but not the PCI function behind them; sysfs does:
//! `/sys/class/net/IF/device` links into the device tree (`.../0000:00:03.0/virtio0`), and a
//! bridge, bond or VLAN names the devices it is built on in `lower_*` links. A planner that is
//! about to take a PCI function away from its driver follows an interface down to its
//! functions to know whether that would cut the host off.

use super::storage::pci_chain;
use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};
use std::net::IpAddr;

/// One line per interface: `NAME DEVICE-PATH LOWERS` (`-` when absent).
const NETDEV_PROBE: &str = concat!(
    r#"for n in /sys/class/net/*; do [ -e "$n" ] || continue; p=; "#,
    r#"[ -e "$n/device" ] && p=$(readlink -f "$n/device") && p=${p#/sys/devices/}; "#,
    r#"l=; for x in "$n"/lower_*; do [ -e "$x" ] && l="$l${l:+,}${x##*/lower_}"; done; "#,
    r#"echo "${n##*/} ${p:--} ${l:--}"; done"#,
);

/// Prints SSH_CONNECTION (`CLIENT CPORT SERVER SPORT`) of this shell or of the nearest
/// ancestor process that has it (sudo clears the environment, its parent still has it), or `-`.
const SSH_PROBE: &str = concat!(
    r#"c=${SSH_CONNECTION:-}; p=$PPID; "#,
    r#"while [ -z "$c" ] && [ "${p:-0}" -gt 1 ]; do "#,
    r#"c=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | while IFS= read -r e; do "#,
    r#"case $e in SSH_CONNECTION=*) echo "${e#SSH_CONNECTION=}"; break;; esac; done); "#,
    r#"q=; while read -r k v; do [ "$k" = PPid: ] && q=$v && break; done <"/proc/$p/status" 2>/dev/null; "#,
    r#"p=${q:-0}; done; echo "${c:--}""#,
);

/// The network interfaces with the PCI functions under them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetDevices {
    pub devices: Vec<NetDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    pub name: String,
    /// The PCI function of the NIC with the bridges above it, outermost first; empty for
    /// virtual devices.
    pub pci_path: Vec<String>,
    /// The devices this one is built on (a bridge's ports, a bond's slaves, a VLAN's parent).
    pub lower: Vec<String>,
}

impl NetDevices {
    pub fn get(&self, name: &str) -> Option<&NetDevice> {
        self.devices.iter().find(|d| d.name == name)
    }
    /// The PCI paths under an interface, through bridges, bonds and VLANs, with the
    /// physical interfaces they belong to: `[("eth0", [0000:00:1c.0, 0000:03:00.0])]`.
    pub fn pci_under(&self, name: &str) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        self.walk(name, 0, &mut out);
        out
    }
    fn walk(&self, name: &str, depth: usize, out: &mut Vec<(String, Vec<String>)>) {
        let Some(d) = self.get(name) else { return };
        if !d.pci_path.is_empty() && !out.iter().any(|(n, _)| n == name) {
            out.push((d.name.clone(), d.pci_path.clone()));
        }
        if depth < 8 {
            for l in &d.lower {
                self.walk(l, depth + 1, out);
            }
        }
    }
}

impl Fact for NetDevices {
    const NAME: &'static str = "network devices";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(NETDEV_PROBE.into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let devices = out
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let [name, path, lower] = f[..] else {
                    return Err(format!("unexpected network device line {l:?}"));
                };
                Ok(NetDevice {
                    name: name.into(),
                    pci_path: pci_chain(path),
                    lower: match lower {
                        "-" => Vec::new(),
                        l => l.split(',').map(str::to_string).collect(),
                    },
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(NetDevices { devices })
    }
}

/// The SSH connection the run arrives through, seen from the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshSession {
    /// The host's own address of the connection (`None`: not run over SSH).
    pub local: Option<IpAddr>,
    pub client: Option<IpAddr>,
}

/// An address as SSH_CONNECTION prints it: IPv4 connections to a dual-stack socket come as
/// `::ffff:a.b.c.d`; a link-local IPv6 one may carry `%zone`.
fn ssh_addr(s: &str) -> Option<IpAddr> {
    let s = s.split('%').next()?;
    let a: IpAddr = s.parse().ok()?;
    Some(match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    })
}

impl Fact for SshSession {
    const NAME: &'static str = "ssh session";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(SSH_PROBE.into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?.trim();
        if out == "-" || out.is_empty() {
            return Ok(SshSession::default());
        }
        let f: Vec<&str> = out.split_whitespace().collect();
        let [client, _, local, _] = f[..] else {
            return Err(format!("unexpected SSH_CONNECTION {out:?}"));
        };
        let (Some(client), Some(local)) = (ssh_addr(client), ssh_addr(local)) else {
            return Err(format!("unexpected SSH_CONNECTION {out:?}"));
        };
        Ok(SshSession {
            local: Some(local),
            client: Some(client),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;

    fn ssh(text: &str) -> SshSession {
        SshSession::parse(&(), &Observation::Command(CommandOutput::ok(text))).unwrap()
    }

    #[test]
    fn ssh_connections() {
        let s = ssh("10.91.0.1 40022 10.91.0.251 22\n");
        assert_eq!(s.local, Some("10.91.0.251".parse().unwrap()));
        assert_eq!(s.client, Some("10.91.0.1".parse().unwrap()));
        let s = ssh("::ffff:192.0.2.7 40022 ::ffff:192.0.2.1 22\n");
        assert_eq!(s.local, Some("192.0.2.1".parse().unwrap()));
        let s = ssh("fe80::1%eth0 40022 fe80::2%eth0 22\n");
        assert_eq!(s.local, Some("fe80::2".parse().unwrap()));
        assert_eq!(ssh("-\n"), SshSession::default());
        assert!(SshSession::parse(&(), &Observation::Command(CommandOutput::ok("a b\n"))).is_err());
    }

    /// Both probes are plain POSIX sh: run them here (read-only) and parse what they print.
    #[test]
    fn probes_run_here() {
        let seen = crate::modules::facts::run_here(&NetDevices::probe(&()));
        let devs = NetDevices::parse(&(), &seen).unwrap();
        assert!(devs.get("lo").is_some_and(|d| d.pci_path.is_empty()));
        let seen = crate::modules::facts::run_here(&SshSession::probe(&()));
        SshSession::parse(&(), &seen).unwrap();
    }

    /// A lab VM: its lab NICs are virtio, an e1000 sits behind a pci-bridge.
    #[test]
    fn vm() {
        let d = NetDevices::parse(
            &(),
            &Observation::Command(CommandOutput::ok(&crate::modules::facts::fixture(
                "net_devices/vm.txt",
            ))),
        )
        .unwrap();
        assert_eq!(d.pci_under("lan0")[0].1, ["0000:00:06.0"]);
        assert_eq!(d.pci_under("ens2")[0].1, ["0000:00:05.0", "0000:01:02.0"]);
        let s = ssh(&crate::modules::facts::fixture("ssh_session/vm.txt"));
        assert_eq!(s.local, Some("10.213.2.251".parse().unwrap()));
    }

    #[test]
    fn through_bridges_and_vlans() {
        let out = "lo - -\n\
                   eno1 pci0000:00/0000:00:1c.0/0000:03:00.0 -\n\
                   eno2 pci0000:00/0000:00:1c.1/0000:04:00.0 -\n\
                   bond0 - eno1,eno2\n\
                   bond0.10 - bond0\n\
                   br0 - bond0.10\n";
        let d = NetDevices::parse(&(), &Observation::Command(CommandOutput::ok(out))).unwrap();
        let under: Vec<String> = d.pci_under("br0").into_iter().map(|(n, _)| n).collect();
        assert_eq!(under, ["eno1", "eno2"]);
        assert_eq!(d.pci_under("eno1")[0].1, ["0000:00:1c.0", "0000:03:00.0"]);
        assert!(d.pci_under("lo").is_empty());
    }
}
