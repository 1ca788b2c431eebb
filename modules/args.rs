//! What the requests of modules of several families share: argument checks, each with one
//! wording, and common choices.

use crate::module::ArgError;
use crate::modules::facts::ip::Prefix;
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

/// A TCP port of `param`: 1 to 65535.
pub fn port(param: &'static str, value: &str) -> Result<u16, ArgError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ArgError::invalid(
                param,
                format!("{param}: port {value:?} must be a number from 1 to 65535"),
            )
        })
}

/// A DNS name (`proxy.corp.example`) or IP address in `param`. Labels are letters, digits and
/// `-`, as a resolver takes them; anything else (a space, a scheme, a path) is a mistake that
/// would only surface on the host.
pub fn host(param: &'static str, value: &str) -> Result<(), ArgError> {
    if value.parse::<IpAddr>().is_ok() || dns_name(value) {
        Ok(())
    } else {
        Err(ArgError::invalid(
            param,
            format!("{param}: {value:?} is not a host name or IP address"),
        ))
    }
}

/// A destination domain in `param` as proxies and `no_proxy` take it: a DNS name, where a
/// leading dot (`.corp.example`) means the domain and every name under it.
pub fn domain(param: &'static str, value: &str) -> Result<(), ArgError> {
    if dns_name(value.strip_prefix('.').unwrap_or(value)) {
        Ok(())
    } else {
        Err(ArgError::invalid(
            param,
            format!("{param}: {value:?} is not a domain name (e.g. .corp.example or mirror.example.org)"),
        ))
    }
}

fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `HOST:PORT`, `[IPV6]:PORT`, or (with `bare_port`) just `PORT`, in `param`: the host (if any)
/// and the port.
pub fn host_port(
    param: &'static str,
    value: &str,
    bare_port: bool,
) -> Result<(Option<String>, u16), ArgError> {
    let v = value.trim();
    if bare_port && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((None, port(param, v)?));
    }
    let split = match v.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .filter(|(h, _)| h.parse::<std::net::Ipv6Addr>().is_ok()),
        None => v.rsplit_once(':').filter(|(h, _)| !h.contains(':')),
    };
    let Some((h, p)) = split else {
        let form = if bare_port {
            "PORT, HOST:PORT or [IPV6]:PORT"
        } else {
            "HOST:PORT"
        };
        return Err(ArgError::invalid(
            param,
            format!("{param}: {value:?} is not {form}"),
        ));
    };
    host(param, h)?;
    Ok((Some(h.to_string()), port(param, p)?))
}

/// A network in CIDR notation (`192.168.121.0/24`; a bare address is one host) in `param`.
/// Host bits set (`192.168.121.5/24`) are refused: the tools that read it would silently
/// widen or narrow it, and it is usually a typo for the network.
pub fn cidr(param: &'static str, value: &str) -> Result<Prefix, ArgError> {
    let p: Prefix = value
        .trim()
        .parse()
        .map_err(|e| ArgError::invalid(param, format!("{param}: {e}")))?;
    let net = crate::modules::network::bridge::network(&p);
    if net != p.addr {
        return Err(ArgError::invalid(
            param,
            format!(
                "{param}: {value} has host bits set; the network is {net}/{}",
                p.len
            ),
        ));
    }
    Ok(p)
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
    fn ports_hosts_domains_and_networks() {
        assert_eq!(port("p", "3128"), Ok(3128));
        for bad in ["0", "65536", "x", "-1", ""] {
            assert_eq!(port("p", bad).unwrap_err().param, "p", "{bad}");
        }
        assert!(host("h", "proxy.corp.example").is_ok());
        assert!(host("h", "10.0.0.1").is_ok() && host("h", "fe80::1").is_ok());
        for bad in ["", "a b", "http://x", "-x.example", "x..y", "x/y"] {
            assert!(host("h", bad).is_err(), "{bad}");
        }
        assert!(domain("d", ".corp.example").is_ok() && domain("d", "example.org").is_ok());
        assert!(domain("d", ".").is_err() && domain("d", "*.example").is_err());
        assert_eq!(host_port("x", "3128", true), Ok((None, 3128)));
        assert_eq!(
            host_port("x", "192.168.121.101:3128", true),
            Ok((Some("192.168.121.101".into()), 3128))
        );
        assert_eq!(
            host_port("x", "[::1]:3128", true),
            Ok((Some("::1".into()), 3128))
        );
        assert_eq!(
            host_port("x", "proxy.corp.example:8080", false),
            Ok((Some("proxy.corp.example".into()), 8080))
        );
        for bad in ["3128", "host:", "host:0", "::1:3128", "a b:80", ":80"] {
            assert_eq!(host_port("x", bad, false).unwrap_err().param, "x", "{bad}");
        }
        assert_eq!(
            cidr("n", "192.168.121.0/24").unwrap().to_string(),
            "192.168.121.0/24"
        );
        assert_eq!(cidr("n", "10.0.0.7").unwrap().len, 32);
        let e = cidr("n", "192.168.121.5/24").unwrap_err();
        assert!(e.msg.contains("192.168.121.0/24"), "{}", e.msg);
        assert!(cidr("n", "192.168.121.0/33").is_err() && cidr("n", "lan").is_err());
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
