//! What the requests of modules of several families share: argument checks, each with one
//! wording, and common choices.

use crate::module::ArgError;
use std::net::IpAddr;

/// The `state: present|absent` choice of the modules that put something on the host or take it
/// away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Present,
    Absent,
}

/// `value` of `param` must be an absolute path.
pub fn absolute_path(param: &'static str, value: &str) -> Result<(), ArgError> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(ArgError::invalid(
            param,
            format!("{param} must be an absolute path, got {value:?}"),
        ))
    }
}

/// An address's bits as a number, with the width of its family (32 or 128).
pub fn ip_bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u32::from(v) as u128, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

/// Whether `a` lies in the network `net/len` (of the same family).
pub fn inside(net: IpAddr, len: u8, a: IpAddr) -> bool {
    if net.is_ipv4() != a.is_ipv4() {
        return false;
    }
    let ((n, w), (x, _)) = (ip_bits(net), ip_bits(a));
    let host = w.saturating_sub(len);
    if host >= 128 {
        return true;
    }
    (n >> host) == (x >> host)
}

/// A MAC address written as six hex pairs separated by `:`, lower-cased; `None` for anything
/// else.
pub fn mac_address(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| mac.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ArgErrorKind;

    #[test]
    fn absolute_paths() {
        assert!(absolute_path("path", "/etc/x").is_ok());
        let e = absolute_path("path", "etc/x").unwrap_err();
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "path"));
        assert_eq!(e.msg, "path must be an absolute path, got \"etc/x\"");
    }

    #[test]
    fn networks_and_macs() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(inside(ip("192.168.121.0"), 24, ip("192.168.121.200")));
        assert!(!inside(ip("192.168.121.0"), 24, ip("192.168.122.1")));
        assert!(inside(ip("0.0.0.0"), 0, ip("10.0.0.1")));
        assert!(!inside(ip("10.0.0.0"), 8, ip("::1")));
        assert_eq!(
            mac_address("52:54:00:AB:cd:01").as_deref(),
            Some("52:54:00:ab:cd:01")
        );
        for bad in [
            "52:54:00:ab:cd",
            "52-54-00-ab-cd-01",
            "52:54:00:ab:cd:0g",
            "",
        ] {
            assert_eq!(mac_address(bad), None, "{bad}");
        }
    }
}
