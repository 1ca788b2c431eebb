//! ISC dhcpd: `/etc/dhcp/dhcpd.conf` rendered whole, and the `INTERFACESv4` line of
//! `/etc/default/isc-dhcp-server`, which Debian's init script reads to know where to serve.

use super::model::{joined as list, Dhcp};
use std::fmt::Write;

pub const CONFIG: &str = "/etc/dhcp/dhcpd.conf";
pub const DEFAULTS: &str = "/etc/default/isc-dhcp-server";
pub const UNIT: &str = "isc-dhcp-server.service";
pub const PACKAGE: &str = "isc-dhcp-server";
/// dhcpd's own syntax check. It prints the offending line and a caret, after its banner;
/// `-q` would silence the error too.
pub const CHECK: &str = "dhcpd -t -4 -cf %s";
/// Where Debian's init script has dhcpd write its PID: a unit of an init script stays `active`
/// after the daemon died, so the PID tells whether dhcpd really runs.
pub const PID_FILE: &str = "/run/dhcpd.pid";

/// The whole dhcpd.conf; `extra` goes at the end of the global section, before the subnets.
pub fn render(d: &Dhcp, extra: Option<&str>) -> String {
    let mut s = String::new();
    s.push_str(
        "# Written by kvmforge (dhcpd): edit the playbook, not this file; changes made here\n",
    );
    s.push_str("# are replaced on the next run.\n");
    writeln!(s, "default-lease-time {};", d.default_lease_time).unwrap();
    writeln!(s, "max-lease-time {};", d.max_lease_time).unwrap();
    if d.authoritative {
        s.push_str("authoritative;\n");
    }
    if let Some(n) = &d.domain_name {
        writeln!(s, "option domain-name \"{n}\";").unwrap();
    }
    if !d.dns_servers.is_empty() {
        writeln!(s, "option domain-name-servers {};", list(&d.dns_servers)).unwrap();
    }
    if let Some(x) = extra.map(str::trim_end).filter(|x| !x.is_empty()) {
        s.push_str(x);
        s.push('\n');
    }
    for net in &d.subnets {
        writeln!(s, "\nsubnet {} netmask {} {{", net.network, net.netmask()).unwrap();
        for (first, last) in &net.ranges {
            writeln!(s, "  range {first} {last};").unwrap();
        }
        if !net.routers.is_empty() {
            writeln!(s, "  option routers {};", list(&net.routers)).unwrap();
        }
        if !net.dns_servers.is_empty() {
            writeln!(
                s,
                "  option domain-name-servers {};",
                list(&net.dns_servers)
            )
            .unwrap();
        }
        for h in &net.hosts {
            writeln!(s, "  host {} {{", h.name).unwrap();
            writeln!(s, "    hardware ethernet {};", h.mac).unwrap();
            writeln!(s, "    fixed-address {};", h.ip).unwrap();
            s.push_str("  }\n");
        }
        s.push_str("}\n");
    }
    s
}

/// The `INTERFACESv4=` line for these interfaces.
pub fn interfaces_line(interfaces: &[String]) -> String {
    format!("INTERFACESv4=\"{}\"", interfaces.join(" "))
}

/// The interfaces an `INTERFACESv4=` line names (quotes and spacing aside), `None` for any
/// other line.
pub fn interfaces_of(line: &str) -> Option<Vec<String>> {
    let value = line.trim_start().strip_prefix("INTERFACESv4=")?;
    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
    Some(value.split_whitespace().map(str::to_string).collect())
}
