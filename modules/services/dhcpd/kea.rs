//! Kea DHCPv4: `/etc/kea/kea-dhcp4.conf` rendered whole as JSON, leases kept by Kea's memfile
//! backend in a CSV file under `/var/lib/kea` (the unit's StateDirectory, so kea, running as
//! `_kea`, may write there).

use super::model::{joined as list, Dhcp};
use serde_json::{json, Map, Value};

pub const CONFIG: &str = "/etc/kea/kea-dhcp4.conf";
pub const UNIT: &str = "kea-dhcp4-server.service";
pub const PACKAGE: &str = "kea-dhcp4-server";
pub const CHECK: &str = "kea-dhcp4 -t %s";
pub const LEASE_FILE: &str = "/var/lib/kea/kea-leases4.csv";

/// The keys of `Dhcp4` the module writes itself: `extra` may add others, not replace these.
pub const OWN_KEYS: &[&str] = &[
    "interfaces-config",
    "lease-database",
    "valid-lifetime",
    "max-valid-lifetime",
    "authoritative",
    "option-data",
    "subnet4",
];

fn option(name: &str, data: String) -> Value {
    json!({ "name": name, "data": data })
}

/// The whole kea-dhcp4.conf; `extra` is merged into `Dhcp4` (its keys are checked not to be
/// [`OWN_KEYS`]).
pub fn render(d: &Dhcp, extra: Option<&Map<String, Value>>) -> String {
    let mut options = Vec::new();
    if let Some(n) = &d.domain_name {
        options.push(option("domain-name", n.clone()));
    }
    if !d.dns_servers.is_empty() {
        options.push(option("domain-name-servers", list(&d.dns_servers)));
    }
    let subnets: Vec<Value> = d
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut opts = Vec::new();
            if !s.routers.is_empty() {
                opts.push(option("routers", list(&s.routers)));
            }
            if !s.dns_servers.is_empty() {
                opts.push(option("domain-name-servers", list(&s.dns_servers)));
            }
            let pools: Vec<Value> = s
                .ranges
                .iter()
                .map(|(f, l)| json!({ "pool": format!("{f} - {l}") }))
                .collect();
            let reservations: Vec<Value> = s
                .hosts
                .iter()
                .map(|h| json!({ "hw-address": h.mac, "ip-address": h.ip.to_string(), "hostname": h.name }))
                .collect();
            // A fixed id per position: Kea ties leases to the subnet id, and without one it
            // numbers subnets itself.
            json!({
                "id": i + 1,
                "subnet": format!("{}/{}", s.network, s.len),
                "pools": pools,
                "option-data": opts,
                "reservations": reservations,
            })
        })
        .collect();
    let mut dhcp4 = Map::new();
    dhcp4.insert(
        "interfaces-config".into(),
        json!({ "interfaces": d.interfaces }),
    );
    dhcp4.insert(
        "lease-database".into(),
        json!({ "type": "memfile", "persist": true, "name": LEASE_FILE, "lfc-interval": 3600 }),
    );
    dhcp4.insert("valid-lifetime".into(), json!(d.default_lease_time));
    dhcp4.insert("max-valid-lifetime".into(), json!(d.max_lease_time));
    dhcp4.insert("authoritative".into(), json!(d.authoritative));
    dhcp4.insert("option-data".into(), Value::Array(options));
    dhcp4.insert("subnet4".into(), Value::Array(subnets));
    if let Some(extra) = extra {
        for (k, v) in extra {
            dhcp4.insert(k.clone(), v.clone());
        }
    }
    let doc = json!({ "Dhcp4": dhcp4 });
    let mut out = serde_json::to_string_pretty(&doc).expect("JSON values always serialize");
    out.push('\n');
    out
}
