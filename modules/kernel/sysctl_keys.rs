//! Sysctl keys and values as sysctl(8) reads them, and the running kernel's values, shared by
//! `sysctl` and `sysctl_bridge`.

use crate::module::{shell_quote, Action, Change, FileKind, ModuleError, Observed, Plan};

/// A sysctl key in `/proc/sys`-relative path form, as sysctl(8) reads keys: when the first
/// separator is a dot, dots and slashes swap (`net.ipv4.conf.eth0/100.rp_filter` is
/// `net/ipv4/conf/eth0.100/rp_filter`, the VLAN interface `eth0.100`); a key whose first
/// separator is a slash is a path already.
pub fn sysctl_path(key: &str) -> String {
    swap_separators(key, '/')
}

/// A sysctl key in dotted form (`net.ipv4.ip_forward`), the inverse of [`sysctl_path`].
pub fn sysctl_dotted(key: &str) -> String {
    swap_separators(key, '.')
}

fn swap_separators(key: &str, wanted: char) -> String {
    match key.chars().find(|c| *c == '.' || *c == '/') {
        Some(c) if c != wanted => key
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => key.to_string(),
    }
}

/// A sysctl value as the kernel reports it, whitespace-normalised: `/proc/sys` separates fields
/// with tabs (`32768\t60999\n`), files and users with any spaces.
pub fn sysctl_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `/proc/sys` file of a key (either form): where its live value is observed.
pub fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", sysctl_path(key))
}

/// The live value of a key in dotted form, from its observed [`proc_path`] file: whitespace
/// normalised, or `None` when the key does not exist (its kernel module is not loaded).
pub fn live_value(observed: &Observed, key: &str) -> Result<Option<String>, ModuleError> {
    let proc = proc_path(key);
    let live = observed.file(&proc)?;
    match live.kind {
        FileKind::File => Ok(Some(sysctl_value(&live.text()))),
        FileKind::Absent => Ok(None),
        FileKind::Dir => Err(ModuleError::Host(format!(
            "{key} is a group of keys ({proc} is a directory), not a single key"
        ))),
        FileKind::Other => Err(ModuleError::Host(format!("{proc} is not a sysctl key"))),
    }
}

/// A key (dotted form) whose live value is not the wanted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub key: String,
    pub live: String,
    pub wanted: String,
}

/// Set drifted live values: one change per key, with its `/proc/sys` file as the diff, and one
/// `sysctl -w` for them all. Only the keys that differ are set, so the running kernel's other
/// keys are never touched (unlike `sysctl -p FILE`).
pub fn set_live(plan: &mut Plan, drift: &[Drift]) {
    if drift.is_empty() {
        return;
    }
    for d in drift {
        plan.changes.push(
            Change::new(format!(
                "set {} = {} (live value was {})",
                d.key, d.wanted, d.live
            ))
            .with_diff(
                &proc_path(&d.key),
                format!("{}\n", d.live),
                format!("{}\n", d.wanted),
            ),
        );
    }
    let pairs: Vec<(String, String)> = drift
        .iter()
        .map(|d| (d.key.clone(), d.wanted.clone()))
        .collect();
    plan.actions.push(Action::run(sysctl_set_cmd(&pairs)));
}

/// `sysctl -w` setting the given dotted keys, each `key=value` quoted as one word.
fn sysctl_set_cmd(pairs: &[(String, String)]) -> String {
    let words: Vec<String> = pairs
        .iter()
        .map(|(k, v)| shell_quote(&format!("{k}={v}")))
        .collect();
    format!("sysctl -w {}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::FileState;

    #[test]
    fn sysctl_key_forms() {
        assert_eq!(sysctl_path("net.ipv4.ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(sysctl_path("net/ipv4/ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/100.rp_filter"),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/rp_filter"),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            sysctl_dotted("net/ipv4/conf/eth0.100/rp_filter"),
            "net.ipv4.conf.eth0/100.rp_filter"
        );
        assert_eq!(sysctl_dotted("vm.swappiness"), "vm.swappiness");
    }

    #[test]
    fn sysctl_values_and_command() {
        assert_eq!(sysctl_value("32768\t60999\n"), "32768 60999");
        assert_eq!(
            sysctl_set_cmd(&[("net.ipv4.ip_local_port_range".into(), "32768 60999".into())]),
            "sysctl -w 'net.ipv4.ip_local_port_range=32768 60999'"
        );
    }

    #[test]
    fn live_values() {
        let fwd = "/proc/sys/net/ipv4/ip_forward";
        assert_eq!(proc_path("net.ipv4.ip_forward"), fwd);
        assert_eq!(
            proc_path("net.ipv4.conf.eth0/100.rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        let obs = Observed::new()
            .with_file(fwd, FileState::file("1\n"))
            .with_file(
                "/proc/sys/net/bridge/bridge-nf-call-iptables",
                FileState::absent(),
            )
            .with_file("/proc/sys/net/ipv4", FileState::dir());
        assert_eq!(
            live_value(&obs, "net.ipv4.ip_forward"),
            Ok(Some("1".into()))
        );
        assert_eq!(
            live_value(&obs, "net.bridge.bridge-nf-call-iptables"),
            Ok(None)
        );
        assert_eq!(
            live_value(&obs, "net.ipv4"),
            Err(ModuleError::Host(
                "net.ipv4 is a group of keys (/proc/sys/net/ipv4 is a directory), not a single key"
                    .into()
            ))
        );
    }

    #[test]
    fn drifted_keys_are_set_with_one_command() {
        let mut plan = Plan::ok();
        set_live(&mut plan, &[]);
        assert_eq!(plan, Plan::ok());
        let drift = |key: &str, live: &str| Drift {
            key: key.into(),
            live: live.into(),
            wanted: "0".into(),
        };
        set_live(
            &mut plan,
            &[
                drift("net.bridge.bridge-nf-call-ip6tables", "1"),
                drift("net.bridge.bridge-nf-call-iptables", "1"),
            ],
        );
        assert_eq!(
            plan.changes[1].summary,
            "set net.bridge.bridge-nf-call-iptables = 0 (live value was 1)"
        );
        let diff = plan.changes[1].diff.as_ref().unwrap();
        assert_eq!(
            (
                diff.label.as_str(),
                diff.before.as_str(),
                diff.after.as_str()
            ),
            ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n", "0\n")
        );
        assert_eq!(
            plan.actions,
            vec![Action::run(
                "sysctl -w net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-iptables=0"
            )]
        );
    }
}
