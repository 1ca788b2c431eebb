//! Sysctl keys and values as sysctl(8) reads them, shared by `sysctl` and `sysctl_bridge`.

use crate::module::shell_quote;

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

/// `sysctl -w` setting the given dotted keys, each `key=value` quoted as one word.
pub fn sysctl_set_cmd(pairs: &[(String, String)]) -> String {
    let words: Vec<String> = pairs
        .iter()
        .map(|(k, v)| shell_quote(&format!("{k}={v}")))
        .collect();
    format!("sysctl -w {}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
