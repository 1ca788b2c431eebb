//! The dhcpd planner: the seed's values rendered for both daemons (fixtures checked by the
//! daemons themselves), every argument check, and what a run does on hosts in each state.

use super::*;
use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
use crate::modules::testing::{apply, arg_error, req};
use serde_json::json;

/// The jump host's seed: the VM network, its pool, the jump host as router and DNS, one
/// static host.
fn seed(backend: &str) -> Value {
    json!({
        "backend": backend,
        "interfaces": ["eth1"],
        "domain_name": "lab.example",
        "dns_servers": ["192.168.121.101"],
        "authoritative": true,
        "subnets": [{
            "network": "192.168.121.0/24",
            "ranges": ["192.168.121.150-192.168.121.200"],
            "routers": ["192.168.121.101"],
            "hosts": [{"name": "bootstrap", "mac": "52:54:00:00:00:10", "ip": "192.168.121.10"}],
        }],
    })
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/modules/services/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn the_seed_renders_as_the_fixtures() {
    assert_eq!(req(&Dhcpd, seed("isc")).config, fixture("dhcpd.conf"));
    assert_eq!(req(&Dhcpd, seed("kea")).config, fixture("kea-dhcp4.conf"));
}

#[test]
fn kea_config_is_the_json_kea_reads() {
    let r = req(&Dhcpd, seed("kea"));
    let v: Value = serde_json::from_str(&r.config).unwrap();
    let d = &v["Dhcp4"];
    assert_eq!(d["interfaces-config"]["interfaces"], json!(["eth1"]));
    assert_eq!(d["lease-database"]["type"], json!("memfile"));
    assert!(d["lease-database"]["name"]
        .as_str()
        .unwrap()
        .starts_with("/var/lib/kea/"));
    let s = &d["subnet4"][0];
    assert_eq!(s["subnet"], json!("192.168.121.0/24"));
    assert_eq!(
        s["pools"][0]["pool"],
        json!("192.168.121.150 - 192.168.121.200")
    );
    assert_eq!(
        s["reservations"][0]["hw-address"],
        json!("52:54:00:00:00:10")
    );
    // A name with quotes or a key from extra cannot break the document.
    let mut a = seed("kea");
    a["extra"] = json!({"match-client-id": false, "comment": "a \"quoted\" } value"});
    let v: Value = serde_json::from_str(&req(&Dhcpd, a).config).unwrap();
    assert_eq!(v["Dhcp4"]["comment"], json!("a \"quoted\" } value"));
}

#[test]
fn ranges_lists_and_extra_are_rendered() {
    let mut a = seed("isc");
    a["subnets"][0]["ranges"] = json!([
        ["192.168.121.20", "192.168.121.30"],
        "192.168.121.150 - 192.168.121.200"
    ]);
    a["subnets"][0]["routers"] = json!("192.168.121.1");
    a["subnets"][0]["dns_servers"] = json!(["192.168.121.1", "192.168.121.2"]);
    a["authoritative"] = json!(false);
    a["extra"] = json!("option ntp-servers 192.168.121.1;\n");
    let c = req(&Dhcpd, a).config;
    assert!(
        c.contains(
            "  range 192.168.121.20 192.168.121.30;\n  range 192.168.121.150 192.168.121.200;\n"
        ),
        "{c}"
    );
    assert!(c.contains("  option routers 192.168.121.1;\n"), "{c}");
    assert!(
        c.contains("  option domain-name-servers 192.168.121.1, 192.168.121.2;\n"),
        "{c}"
    );
    assert!(
        c.contains("option ntp-servers 192.168.121.1;\n\nsubnet"),
        "{c}"
    );
    assert!(!c.contains("authoritative"), "{c}");
}

/// Each invalid value, the check that catches it: its parameter and the path in its message.
#[test]
fn every_bad_value_names_its_parameter() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("subnets", json!("192.168.121.0/24"), "subnets", "subnets: expected a list"),
        ("subnets", json!([]), "subnets", "subnets: give at least one"),
        ("subnets", json!([{"network": "192.168.121.5/24"}]), "subnets", "subnets[0].network: 192.168.121.5/24 has host bits set: the network is 192.168.121.0/24"),
        ("subnets", json!([{"network": "192.168.121.0"}]), "subnets", "subnets[0].network: \"192.168.121.0\" has no prefix length"),
        ("subnets", json!([{"network": "192.168.121.0/33"}]), "subnets", "subnets[0].network"),
        ("subnets", json!([{"ranges": []}]), "subnets", "subnets[0].network: missing"),
        ("subnets", json!([{"network": "10.0.0.0/8", "rangs": []}]), "subnets", "subnets[0]: unknown key `rangs` (did you mean `ranges`?)"),
        ("subnets", json!([{"network": "192.168.121.0/24", "ranges": ["192.168.121.10-192.168.121.20", "192.168.121.250-192.168.122.10"]}]), "subnets", "subnets[0].ranges[1]: 192.168.122.10 is outside the subnet 192.168.121.0/24"),
        ("subnets", json!([{"network": "192.168.121.0/24", "ranges": [["192.168.121.30", "192.168.121.20"]]}]), "subnets", "subnets[0].ranges[0]: the range starts at 192.168.121.30, after its end 192.168.121.20"),
        ("subnets", json!([{"network": "192.168.121.0/24", "ranges": ["192.168.121.10-192.168.121.20", "192.168.121.20-192.168.121.30"]}]), "subnets", "subnets[0].ranges[1]: 192.168.121.20-192.168.121.30 overlaps subnets[0].ranges[0]"),
        ("subnets", json!([{"network": "192.168.121.0/24", "ranges": ["192.168.121.0-192.168.121.30"]}]), "subnets", "subnets[0].ranges[0]: 192.168.121.0 is the network's own address"),
        ("subnets", json!([{"network": "192.168.121.0/24", "ranges": ["192.168.121.10"]}]), "subnets", "subnets[0].ranges[0]: a range is [first, last] or \"first-last\""),
        ("subnets", json!([{"network": "192.168.121.0/24", "ranges": ["192.168.121.x-192.168.121.20"]}]), "subnets", "subnets[0].ranges[0]: \"192.168.121.x\" is not an IPv4 address"),
        ("subnets", json!([{"network": "192.168.121.0/24", "routers": ["192.168.121.1", "10.0.0.1"]}]), "subnets", "subnets[0].routers[1]: 10.0.0.1 is outside the subnet 192.168.121.0/24"),
        ("subnets", json!([{"network": "192.168.121.0/24", "routers": "192.168.121.255"}]), "subnets", "subnets[0].routers[0]: 192.168.121.255 is the broadcast address"),
        ("subnets", json!([{"network": "192.168.121.0/24", "dns_servers": ["dns1"]}]), "subnets", "subnets[0].dns_servers[0]: \"dns1\" is not an IPv4 address"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a", "mac": "52:54:00:00:00", "ip": "192.168.121.10"}]}]), "subnets", "subnets[0].hosts[0].mac: \"52:54:00:00:00\" is not a MAC address"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a", "mac": "52:54:00:00:00:01", "ip": "192.168.122.10"}]}]), "subnets", "subnets[0].hosts[0].ip: 192.168.122.10 is outside the subnet"),
        ("subnets", json!([{"network": "192.168.121.0/24", "ranges": ["192.168.121.150-192.168.121.200"], "hosts": [{"name": "a", "mac": "52:54:00:00:00:01", "ip": "192.168.121.160"}]}]), "subnets", "subnets[0].hosts[0].ip: 192.168.121.160 is inside subnets[0].ranges[0]"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a", "mac": "52:54:00:00:00:01", "ip": "192.168.121.10"}, {"name": "b", "mac": "52:54:00:00:00:01", "ip": "192.168.121.11"}]}]), "subnets", "subnets[0].hosts[1].mac: 52:54:00:00:00:01 is already the MAC of subnets[0].hosts[0]"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a", "mac": "52:54:00:00:00:01", "ip": "192.168.121.10"}]}, {"network": "10.0.0.0/24", "hosts": [{"name": "b", "mac": "52:54:00:00:00:01", "ip": "10.0.0.10"}]}]), "subnets", "subnets[1].hosts[0].mac: 52:54:00:00:00:01 is already the MAC of subnets[0].hosts[0]"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a", "mac": "52:54:00:00:00:01", "ip": "192.168.121.10"}, {"name": "b", "mac": "52:54:00:00:00:02", "ip": "192.168.121.10"}]}]), "subnets", "subnets[0].hosts[1].ip: 192.168.121.10 is already the address of subnets[0].hosts[0]"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a", "mac": "52:54:00:00:00:01", "ip": "192.168.121.10"}, {"name": "a", "mac": "52:54:00:00:00:02", "ip": "192.168.121.11"}]}]), "subnets", "subnets[0].hosts[1].name: \"a\" is already the name of subnets[0].hosts[0]"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a b", "mac": "52:54:00:00:00:01", "ip": "192.168.121.10"}]}]), "subnets", "subnets[0].hosts[0].name: \"a b\" is not a host name"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"mac": "52:54:00:00:00:01", "ip": "192.168.121.10"}]}]), "subnets", "subnets[0].hosts[0].name: missing"),
        ("subnets", json!([{"network": "192.168.121.0/24", "hosts": [{"name": "a", "mac": "52:54:00:00:00:01", "ip": "192.168.121.10", "fixed": true}]}]), "subnets", "subnets[0].hosts[0]: unknown key `fixed`"),
        ("subnets", json!([{"network": "192.168.0.0/16"}, {"network": "192.168.121.0/24"}]), "subnets", "subnets[1].network: 192.168.121.0/24 overlaps subnets[0] (192.168.0.0/16)"),
        ("interfaces", json!([]), "interfaces", "interfaces: name the interfaces"),
        ("interfaces", json!(["eth1", "eth1"]), "interfaces", "interfaces: eth1 is listed twice"),
        ("interfaces", json!(["eth$1"]), "interfaces", "interfaces: \"eth$1\""),
        ("domain_name", json!("lab example"), "domain_name", "domain_name: \"lab example\" is not a domain name"),
        ("domain_name", json!("lab.\"x"), "domain_name", "domain_name"),
        ("dns_servers", json!(["8.8.8.8", "ns1"]), "dns_servers", "dns_servers[1]: \"ns1\" is not an IPv4 address"),
        ("default_lease_time", json!(0), "default_lease_time", "default_lease_time: 0 is not a number of seconds"),
        ("max_lease_time", json!(-5), "max_lease_time", "max_lease_time: -5"),
        ("default_lease_time", json!(10000), "default_lease_time", "default_lease_time (10000 s) is longer than max_lease_time (7200 s)"),
        ("extra", json!({"option": 1}), "extra", "extra: with backend isc, extra is text"),
    ];
    for (param, value, want_param, want_msg) in cases {
        let mut a = seed("isc");
        a[param] = value.clone();
        let e = arg_error(&Dhcpd, a);
        assert_eq!(e.param, want_param, "{param} = {value}: {}", e.msg);
        assert!(
            e.msg.starts_with(want_msg),
            "{param} = {value}:\n  got  {}\n  want {want_msg}",
            e.msg
        );
    }
    let mut a = seed("kea");
    a["extra"] = json!({"subnet4": []});
    let e = arg_error(&Dhcpd, a);
    assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "extra"));
    assert!(
        e.msg
            .contains("`subnet4` is written from the module's own parameters"),
        "{}",
        e.msg
    );
    let mut a = seed("kea");
    a["extra"] = json!("option x 1;");
    assert_eq!(arg_error(&Dhcpd, a).param, "extra");
}

const NOW: i64 = 1_700_000_000;

/// What the probes of `r` see on a Debian host: the package installed or not, the unit's
/// state, its enablement, the files, and for isc whether dhcpd runs.
struct Host {
    installed: bool,
    active: &'static str,
    enabled: &'static str,
    config: Option<String>,
    defaults: Option<String>,
    pid: &'static str,
}

const DEBIAN_DEFAULTS: &str = "# Defaults for isc-dhcp-server\n#DHCPDv4_CONF=/etc/dhcp/dhcpd.conf\n\n# On what interfaces?\nINTERFACESv4=\"\"\nINTERFACESv6=\"\"\n";

impl Host {
    /// The lab image: installed, disabled and stopped, the package's own files.
    fn fresh() -> Host {
        Host {
            installed: true,
            active: "inactive",
            enabled: "disabled",
            config: Some("# sample\n".into()),
            defaults: Some(DEBIAN_DEFAULTS.into()),
            pid: "",
        }
    }
    /// Serving `config` on eth1, enabled.
    fn running(config: &str) -> Host {
        Host {
            active: "active",
            enabled: "enabled",
            config: Some(config.into()),
            defaults: Some("INTERFACESv4=\"eth1\"\n".into()),
            pid: "123\n",
            ..Host::fresh()
        }
    }
    fn observed(&self, r: &Request) -> Observed {
        let b = r.backend;
        let dpkg = if self.installed {
            format!("{0}\t{0}\tamd64\tii \t4.4.3\n", b.package())
        } else {
            String::new()
        };
        let pk = format!(
            "mgr=apt\nnow={NOW}\ncache_mtime={}\nlists=present\n[installed]\n{dpkg}",
            NOW - 100
        );
        let load = if self.installed {
            "loaded"
        } else {
            "not-found"
        };
        let unit = format!(
            "Id={}\nLoadState={load}\nActiveState={}\nSubState=x\nUnitFileState=\nNeedDaemonReload=no\n",
            b.unit(),
            self.active
        );
        let file = |c: &Option<String>| match c {
            Some(c) => FileState::file(c.clone()),
            None => FileState::absent(),
        };
        let mut o = Observed::new()
            .with_fact::<Packages>(&packages(b), Observation::Command(CommandOutput::ok(&pk)))
            .with_fact::<UnitState>(b.unit(), Observation::Command(CommandOutput::ok(&unit)))
            .with_command(
                &is_enabled(b.unit()),
                CommandOutput::ok(&format!("{}\n", self.enabled)),
            )
            .with_file(b.config_path(), file(&self.config));
        if b == Backend::Isc {
            o = o
                .with_file(isc::DEFAULTS, file(&self.defaults))
                .with_command(&dhcpd_pid(), CommandOutput::ok(self.pid));
        }
        o
    }
}

/// The commands of a plan, and its file writes as `write PATH (validated by CMD)`.
fn actions(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Run { cmd, .. } => cmd.clone(),
            Action::WriteFile { path, validate, .. } => match validate {
                Some(v) => format!("write {path} (validated by {v})"),
                None => format!("write {path}"),
            },
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn probes_are_the_package_the_unit_and_the_files() {
    let r = req(&Dhcpd, seed("isc"));
    let p = Dhcpd.probes(&r);
    assert!(p.contains(&Probe::File("/etc/dhcp/dhcpd.conf".into())));
    assert!(p.contains(&Probe::File("/etc/default/isc-dhcp-server".into())));
    assert!(p.contains(&UnitState::probe("isc-dhcp-server.service")));
    let r = req(&Dhcpd, seed("kea"));
    let p = Dhcpd.probes(&r);
    assert!(p.contains(&Probe::File("/etc/kea/kea-dhcp4.conf".into())));
    assert!(!p.contains(&Probe::File("/etc/default/isc-dhcp-server".into())));
}

#[test]
fn isc_on_the_lab_image_is_configured_enabled_and_started() {
    let r = req(&Dhcpd, seed("isc"));
    let host = Host::fresh();
    let p = Dhcpd.plan(&r, &host.observed(&r)).unwrap();
    assert_eq!(
        actions(&p),
        [
            "write /etc/dhcp/dhcpd.conf (validated by dhcpd -t -4 -cf %s)",
            "write /etc/default/isc-dhcp-server",
            "systemctl enable -- isc-dhcp-server.service",
            "systemctl start -- isc-dhcp-server.service",
        ]
    );
    let diff = p.changes[0].diff.as_ref().unwrap();
    assert_eq!(
        (diff.before.as_str(), diff.after.as_str()),
        ("# sample\n", r.config.as_str())
    );
    // Only the INTERFACESv4 line is changed.
    let after = apply(&host.observed(&r), &p.actions[..2]);
    assert_eq!(
        after.file(isc::DEFAULTS).unwrap().text(),
        DEBIAN_DEFAULTS.replace("INTERFACESv4=\"\"", "INTERFACESv4=\"eth1\"")
    );
    assert_eq!(p.data["config_path"], json!("/etc/dhcp/dhcpd.conf"));
    assert_eq!(p.data["service"], json!("isc-dhcp-server.service"));
}

#[test]
fn converged_hosts_are_ok_for_both_backends() {
    for backend in ["isc", "kea"] {
        let r = req(&Dhcpd, seed(backend));
        let host = Host {
            defaults: Some("INTERFACESv4='eth1'\n".into()),
            ..Host::running(&r.config)
        };
        let p = Dhcpd.plan(&r, &host.observed(&r)).unwrap();
        assert!(!p.changed(), "{backend}: {:?}", p.changes);
        assert!(p.actions.is_empty(), "{backend}");
    }
}

#[test]
fn a_changed_config_restarts_isc_and_reloads_kea() {
    let running = |r: &Request| {
        Host {
            active: "active",
            enabled: "enabled",
            config: Some("old\n".into()),
            defaults: Some("INTERFACESv4=\"eth1\"\n".into()),
            pid: "123\n",
            ..Host::fresh()
        }
        .observed(r)
    };
    let r = req(&Dhcpd, seed("isc"));
    assert_eq!(
        actions(&Dhcpd.plan(&r, &running(&r)).unwrap()),
        [
            "write /etc/dhcp/dhcpd.conf (validated by dhcpd -t -4 -cf %s)",
            "systemctl restart -- isc-dhcp-server.service",
        ]
    );
    let r = req(&Dhcpd, seed("kea"));
    assert_eq!(
        actions(&Dhcpd.plan(&r, &running(&r)).unwrap()),
        [
            "write /etc/kea/kea-dhcp4.conf (validated by kea-dhcp4 -t %s)",
            "systemctl kill --signal=HUP --kill-who=main -- kea-dhcp4-server.service",
        ]
    );
    // Only the interfaces changed: isc is restarted to serve them.
    let r = req(&Dhcpd, seed("isc"));
    let host = Host {
        defaults: Some("INTERFACESv4=\"eth0\"\n".into()),
        ..Host::running(&r.config)
    };
    assert_eq!(
        actions(&Dhcpd.plan(&r, &host.observed(&r)).unwrap()),
        [
            "write /etc/default/isc-dhcp-server",
            "systemctl restart -- isc-dhcp-server.service"
        ]
    );
}

#[test]
fn an_active_isc_unit_without_dhcpd_is_restarted() {
    let r = req(&Dhcpd, seed("isc"));
    let host = Host {
        pid: "",
        ..Host::running(&r.config)
    };
    let p = Dhcpd.plan(&r, &host.observed(&r)).unwrap();
    assert_eq!(
        actions(&p),
        ["systemctl restart -- isc-dhcp-server.service"]
    );
    assert!(p.changes[0].summary.contains("dhcpd is not running"));
}

#[test]
fn a_missing_package_is_installed_first_then_configured() {
    for backend in ["isc", "kea"] {
        let r = req(&Dhcpd, seed(backend));
        let host = Host {
            installed: false,
            config: None,
            defaults: None,
            ..Host::fresh()
        };
        let a = actions(&Dhcpd.plan(&r, &host.observed(&r)).unwrap());
        let pkg = r.backend.package();
        assert!(
            a[0].contains("apt-get install -y") && a[0].ends_with(&format!("-- {pkg}")),
            "{a:?}"
        );
        assert!(
            a[1].starts_with(&format!("write {}", r.backend.config_path())),
            "{a:?}"
        );
        assert_eq!(
            a[a.len() - 2],
            format!("systemctl enable -- {}", r.backend.unit())
        );
        // The package may have started the daemon with its own configuration.
        assert_eq!(
            a[a.len() - 1],
            format!("systemctl restart -- {}", r.backend.unit())
        );
        if backend == "isc" {
            assert!(a[2].contains("INTERFACESv4=\"eth1\""), "{a:?}");
        }
    }
}

#[test]
fn the_interfaces_line_is_added_when_missing_and_the_last_one_counts() {
    let r = req(&Dhcpd, seed("isc"));
    let after = |defaults: &str| {
        let seen = Host {
            defaults: Some(defaults.into()),
            ..Host::fresh()
        }
        .observed(&r);
        let plan = Dhcpd.plan(&r, &seen).unwrap();
        apply(&seen, &plan.actions[..2])
            .file(isc::DEFAULTS)
            .unwrap()
            .text()
    };
    assert_eq!(
        after("OPTIONS=\"\"\n"),
        "OPTIONS=\"\"\nINTERFACESv4=\"eth1\"\n"
    );
    assert_eq!(
        after("INTERFACESv4=\"eth1\"\nINTERFACESv4=\"eth0\"\n"),
        "INTERFACESv4=\"eth1\"\nINTERFACESv4=\"eth1\"\n"
    );
}

#[test]
fn unusable_hosts_fail_clearly() {
    let r = req(&Dhcpd, seed("isc"));
    let host = Host {
        active: "inactive",
        enabled: "masked",
        ..Host::fresh()
    };
    let mut o = host.observed(&r);
    o = o.with_fact::<UnitState>(
        r.backend.unit(),
        Observation::Command(CommandOutput::ok(
            "Id=isc-dhcp-server.service\nLoadState=masked\nActiveState=inactive\nUnitFileState=masked\n",
        )),
    );
    let e = Dhcpd.plan(&r, &o).unwrap_err();
    assert!(e.to_string().contains("is masked"), "{e}");
    let o = host.observed(&r).with_fact::<Packages>(
        &packages(Backend::Isc),
        Observation::Command(CommandOutput::ok("mgr=none\n")),
    );
    let e = Dhcpd.plan(&r, &o).unwrap_err();
    assert!(e.to_string().contains("no apt"), "{e}");
}
