//! `dhcpd`: a DHCPv4 server on the jump host of a private VM network, from one parameter model
//! rendered for either ISC dhcpd (`backend: isc`, what most existing jump hosts run) or Kea
//! (`backend: kea`, ISC's maintained successor: ISC DHCP reached its end of life in 2022).
//!
//! The whole configuration file is rendered, so what the playbook says is all the server
//! serves, and it is checked on the host by the daemon's own checker on a staged copy before it
//! replaces the running one: a configuration the daemon rejects never reaches it, and the
//! server keeps running with the old file. The service is restarted (ISC) or reloaded (Kea)
//! only when the configuration changed.

mod isc;
mod kea;
mod model;
#[cfg(test)]
mod tests;

use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, Module, ModuleError, ModuleSpec, Observed,
    Plan, PlanContext, Probe,
};
use crate::modules::facts::packages::{Manager, PackageQuery, Packages};
use crate::modules::facts::systemd::UnitState;
use crate::modules::files::edit::{ensure_content, existing_text, validate_writes, Lines};
use crate::modules::system::package::{APT_ENV, APT_OPTS, APT_UPDATE};
use crate::params::{Args, ParamKind, ParamSpec};
use model::Dhcp;
use serde::Deserialize;
use serde_json::{Map, Value};

pub struct Dhcpd;

static SPEC: ModuleSpec = ModuleSpec {
    name: "dhcpd",
    summary: "A DHCPv4 server for a private VM network, ISC dhcpd or Kea, from one set of parameters",
    description: "Serves DHCP on `interfaces` with ISC dhcpd (`backend: isc`, the default: \
isc-dhcp-server) or Kea (`backend: kea`: kea-dhcp4-server, the maintained successor of ISC DHCP, \
which reached its end of life in 2022). The same parameters describe both: global options, and \
`subnets`, each with its address `ranges`, `routers`, `dns_servers` and fixed leases (`hosts`).\n\n\
Everything is checked before any host is contacted, and each error names the entry it is about \
(`subnets[0].ranges[1]`): a network written with host bits, ranges, routers and fixed addresses \
outside their subnet, a range that ends before it starts or overlaps another, a fixed address \
inside a range (the server could lease it to someone else), malformed MACs, a MAC, address or \
host name given twice, overlapping subnets.\n\n\
The whole configuration file is written: `/etc/dhcp/dhcpd.conf` (isc) or \
`/etc/kea/kea-dhcp4.conf` (kea, JSON, leases in `/var/lib/kea/kea-leases4.csv` with Kea's memfile \
backend), so the playbook is all the server serves. The new file is first checked by the daemon \
itself on a staged copy in the same directory (`dhcpd -t -4 -cf`, `kea-dhcp4 -t`), where the \
daemons' AppArmor profiles let them read it: a file the daemon rejects fails the task with the \
daemon's message and replaces nothing, so the running server and its file are untouched. For isc \
the `INTERFACESv4` line of `/etc/default/isc-dhcp-server` lists the interfaces; the rest of that \
file is left as it is.\n\n\
The package is installed when missing (apt), the service enabled and started when it is not \
running. When the configuration changed, isc-dhcp-server is restarted; Kea is told to read its \
file again with SIGHUP (its unit has no reload command; SIGHUP is Kea's documented reload, the \
same as its `config-reload` command), so it keeps its sockets and leases. Nothing is restarted \
when nothing changed. Switching backends does not stop the other daemon: stop it with \
`service` (both on one interface would answer the same clients).\n\n\
`extra` is an escape hatch for what the parameters do not cover: for isc, text added to \
dhcpd.conf's global section; for kea, a mapping merged into `Dhcp4` (keys the module writes \
itself are refused). It is checked by the daemon like the rest. Results: `config_path`, \
`service`, `backend`.",
    params: &[
        ParamSpec::with_default(
            "backend",
            ParamKind::Choice(&["isc", "kea"]),
            "isc",
            "isc: ISC dhcpd (isc-dhcp-server); kea: Kea DHCPv4 (kea-dhcp4-server)",
        ),
        ParamSpec::required(
            "interfaces",
            ParamKind::List,
            "Interfaces to serve (e.g. [eth1]): only these answer DHCP",
        ),
        ParamSpec::optional("domain_name", ParamKind::Str, "Domain name given to clients"),
        ParamSpec::with_default(
            "dns_servers",
            ParamKind::List,
            "[]",
            "DNS servers given to clients of every subnet",
        ),
        ParamSpec::with_default(
            "default_lease_time",
            ParamKind::Int,
            "600",
            "Lease time in seconds when the client asks for none (Kea: valid-lifetime)",
        ),
        ParamSpec::with_default(
            "max_lease_time",
            ParamKind::Int,
            "7200",
            "Longest lease in seconds a client may ask for (Kea: max-valid-lifetime)",
        ),
        ParamSpec::with_default(
            "authoritative",
            ParamKind::Bool,
            "false",
            "The only DHCP server on these networks: refuse (DHCPNAK) requests for addresses it does not know, so clients moved in from elsewhere get a new lease at once",
        ),
        ParamSpec::required(
            "subnets",
            ParamKind::Data,
            "List of {network (CIDR), ranges ([first, last] or \"first-last\"), routers, dns_servers, hosts: [{name, mac, ip}]}",
        ),
        ParamSpec::optional(
            "extra",
            ParamKind::Data,
            "isc: text added to dhcpd.conf's global section; kea: a mapping merged into Dhcp4",
        ),
    ],
    free_form: None,
    example: r#"- name: DHCP for the VM network, from the jump host
  dhcpd:
    backend: isc                 # or kea
    interfaces: [eth1]
    domain_name: lab.example
    dns_servers: [192.168.121.101]
    default_lease_time: 600
    max_lease_time: 7200
    authoritative: true
    subnets:
      - network: 192.168.121.0/24
        ranges: ["192.168.121.150-192.168.121.200"]
        routers: [192.168.121.101]
        hosts:
          - {name: bootstrap, mac: "52:54:00:00:00:10", ip: 192.168.121.10}
"#,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Isc,
    Kea,
}

/// The arguments as the parameter table gives them.
#[derive(Debug, Deserialize)]
struct Raw {
    backend: Backend,
    interfaces: Vec<String>,
    domain_name: Option<String>,
    dns_servers: Vec<String>,
    default_lease_time: i64,
    max_lease_time: i64,
    authoritative: bool,
    subnets: Value,
    extra: Option<Value>,
}

/// A `dhcpd` task's arguments, typed and checked, with the configuration already rendered.
#[derive(Debug)]
pub struct Request {
    backend: Backend,
    dhcp: Dhcp,
    /// The whole configuration file.
    config: String,
}

impl Backend {
    fn config_path(self) -> &'static str {
        match self {
            Backend::Isc => isc::CONFIG,
            Backend::Kea => kea::CONFIG,
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Backend::Isc => isc::UNIT,
            Backend::Kea => kea::UNIT,
        }
    }
    fn package(self) -> &'static str {
        match self {
            Backend::Isc => isc::PACKAGE,
            Backend::Kea => kea::PACKAGE,
        }
    }
    fn check(self) -> &'static str {
        match self {
            Backend::Isc => isc::CHECK,
            Backend::Kea => kea::CHECK,
        }
    }
    fn word(self) -> &'static str {
        match self {
            Backend::Isc => "isc",
            Backend::Kea => "kea",
        }
    }
}

fn packages(backend: Backend) -> PackageQuery {
    PackageQuery {
        names: vec![backend.package().to_string()],
        latest: false,
        cache_age: false,
    }
}

/// `systemctl is-enabled`, which (unlike `systemctl show`) also answers for the init script
/// behind isc-dhcp-server, whose generated unit has no unit-file state of its own.
fn is_enabled(unit: &str) -> String {
    format!(
        "systemctl is-enabled -- {} 2>/dev/null || true",
        shell_quote(unit)
    )
}

/// The PID of a running dhcpd, or nothing: the one in Debian's PID file, else any dhcpd (a
/// `DHCPDv4_PID` set elsewhere must not make every run restart a healthy server).
fn dhcpd_pid() -> String {
    format!(
        "p=$(cat {} 2>/dev/null) && [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && echo \"$p\" || pidof -s dhcpd || true",
        isc::PID_FILE
    )
}

fn systemctl(verb: &str, unit: &str) -> Action {
    Action::run(format!("systemctl {verb} -- {}", shell_quote(unit)))
}

/// The `extra` escape hatch, in the form of its backend.
enum Extra {
    /// Text for dhcpd.conf's global section.
    Isc(String),
    /// Keys merged into Kea's `Dhcp4`.
    Kea(Map<String, Value>),
}

/// The `extra` escape hatch, checked for the backend.
fn extra(backend: Backend, v: Option<&Value>) -> Result<Option<Extra>, ArgError> {
    match (backend, v) {
        (_, None | Some(Value::Null)) => Ok(None),
        (Backend::Isc, Some(Value::String(s))) => Ok(Some(Extra::Isc(s.clone()))),
        (Backend::Isc, Some(other)) => Err(ArgError::invalid(
            "extra",
            format!("extra: with backend isc, extra is text for dhcpd.conf, got {other}"),
        )),
        (Backend::Kea, Some(Value::Object(m))) => {
            if let Some(k) = m.keys().find(|k| kea::OWN_KEYS.contains(&k.as_str())) {
                return Err(ArgError::invalid(
                    "extra",
                    format!("extra: `{k}` is written from the module's own parameters; extra may only add other Dhcp4 keys"),
                ));
            }
            Ok(Some(Extra::Kea(m.clone())))
        }
        (Backend::Kea, Some(other)) => Err(ArgError::invalid(
            "extra",
            format!("extra: with backend kea, extra is a mapping merged into Dhcp4, got {other}"),
        )),
    }
}

impl Module for Dhcpd {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: Raw = args.parse()?;
        let dhcp = Dhcp::check(model::Raw {
            interfaces: &raw.interfaces,
            domain_name: raw.domain_name.as_deref(),
            dns_servers: &raw.dns_servers,
            default_lease_time: raw.default_lease_time,
            max_lease_time: raw.max_lease_time,
            authoritative: raw.authoritative,
            subnets: &raw.subnets,
        })?;
        let config = match (raw.backend, extra(raw.backend, raw.extra.as_ref())?) {
            (Backend::Isc, Some(Extra::Isc(text))) => isc::render(&dhcp, Some(&text)),
            (Backend::Isc, _) => isc::render(&dhcp, None),
            (Backend::Kea, Some(Extra::Kea(keys))) => kea::render(&dhcp, Some(&keys)),
            (Backend::Kea, _) => kea::render(&dhcp, None),
        };
        Ok(Request {
            backend: raw.backend,
            dhcp,
            config,
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        let b = req.backend;
        let mut probes = vec![
            Packages::probe(&packages(b)),
            UnitState::probe(b.unit()),
            Probe::Command(is_enabled(b.unit())),
            Probe::File(b.config_path().into()),
        ];
        if b == Backend::Isc {
            probes.push(Probe::File(isc::DEFAULTS.into()));
            probes.push(Probe::Command(dhcpd_pid()));
        }
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let b = req.backend;
        let (unit, path) = (b.unit(), b.config_path());
        let pk = observed.fact::<Packages>(&packages(b))?;
        if pk.manager != Manager::Apt {
            return Err(ModuleError::Host(format!(
                "dhcpd installs and configures Debian's {} package with apt, and this host has no apt",
                b.package()
            )));
        }
        let mut plan = Plan::ok();
        let installing = !pk.installed(b.package());
        if installing {
            if !pk.lists {
                plan.change(
                    Change::new("update package lists (no package lists)"),
                    [Action::run(APT_UPDATE)],
                );
            }
            plan.change(
                Change::new(format!("install {}", b.package())),
                [Action::run(format!(
                    "{APT_ENV} apt-get install {APT_OPTS} -- {}",
                    b.package()
                ))],
            );
        }

        // The configuration, checked by the daemon before it replaces the old one. It comes
        // first: when the daemon rejects it, nothing else is changed.
        let mut config = Plan::ok();
        ensure_content(
            &mut config,
            path,
            observed.file(path)?,
            req.config.as_bytes(),
            &Attrs::default(),
            false,
        )?;
        validate_writes(&mut config, Some(b.check()));
        let mut reconfigured = config.changed();
        plan.changes.extend(config.changes);
        plan.actions.extend(config.actions);

        if b == Backend::Isc {
            reconfigured |= interfaces(&mut plan, &req.dhcp.interfaces, observed, installing)?;
        }

        // The service: enabled, running, and made to read a changed configuration.
        let status = observed.fact::<UnitState>(unit)?;
        if !installing {
            if !status.exists() {
                return Err(ModuleError::Host(format!(
                    "{} is installed but systemd has no unit {unit}",
                    b.package()
                )));
            }
            if status.masked() {
                return Err(ModuleError::Host(format!(
                    "{unit} is masked: unmask it first (service: {{name: {unit}, masked: false}})"
                )));
            }
        }
        let enabled = observed.command(&is_enabled(unit))?;
        let enabled = enabled.stdout.lines().next().map(str::trim) == Some("enabled");
        if installing || !enabled {
            plan.change(
                Change::new(format!("enable {unit}")),
                [systemctl("enable", unit)],
            );
        }
        let daemon_alive = match b {
            Backend::Isc => !observed.command(&dhcpd_pid())?.stdout.trim().is_empty(),
            Backend::Kea => true,
        };
        let running = !installing && status.running();
        if installing {
            // The package's own scripts may have started it with their default configuration.
            plan.change(
                Change::new(format!("start {unit}")),
                [systemctl("restart", unit)],
            );
        } else if !running {
            plan.change(
                Change::new(format!("start {unit} (was {})", status.active_state)),
                [systemctl("start", unit)],
            );
        } else if !daemon_alive {
            plan.change(
                Change::new(format!(
                    "restart {unit} (the unit is active but dhcpd is not running)"
                )),
                [systemctl("restart", unit)],
            );
        } else if reconfigured {
            match b {
                Backend::Isc => plan.change(
                    Change::new(format!("restart {unit} to apply the new configuration")),
                    [systemctl("restart", unit)],
                ),
                Backend::Kea => plan.change(
                    Change::new(format!(
                        "reload {unit} (SIGHUP) to apply the new configuration"
                    )),
                    [Action::run(format!(
                        "systemctl kill --signal=HUP --kill-who=main -- {}",
                        shell_quote(unit)
                    ))],
                ),
            }
        }
        Ok(plan
            .with_data("config_path", path)
            .with_data("service", unit)
            .with_data("backend", b.word()))
    }
}

/// Plan the `INTERFACESv4=` line of /etc/default/isc-dhcp-server; true when it changes.
fn interfaces(
    plan: &mut Plan,
    want: &[String],
    observed: &Observed,
    installing: bool,
) -> Result<bool, ModuleError> {
    let path = isc::DEFAULTS;
    let line = isc::interfaces_line(want);
    let state = observed.file(path)?;
    let Some(text) = existing_text(path, state)? else {
        if installing {
            // The package brings the file: edit it after the install.
            let q = shell_quote(&line);
            plan.change(
                Change::new(format!("set {line} in {path}")),
                [Action::run(format!(
                    "f={path}; if grep -q '^[[:space:]]*INTERFACESv4=' \"$f\"; then sed -i \"s|^[[:space:]]*INTERFACESv4=.*|\"{q}\"|\" \"$f\"; else printf '%s\\n' {q} >> \"$f\"; fi"
                ))],
            );
        } else {
            let mut sub = Plan::ok();
            ensure_content(
                &mut sub,
                path,
                state,
                format!("{line}\n").as_bytes(),
                &Attrs::default(),
                false,
            )?;
            plan.changes.extend(sub.changes);
            plan.actions.extend(sub.actions);
        }
        return Ok(true);
    };
    let mut lines = Lines::parse(text.as_bytes());
    // The shell reads the file: the last assignment wins.
    let at = lines
        .lines
        .iter()
        .rposition(|l| isc::interfaces_of(&String::from_utf8_lossy(l)).is_some());
    match at {
        Some(i)
            if isc::interfaces_of(&String::from_utf8_lossy(&lines.lines[i])).as_deref()
                == Some(want) =>
        {
            return Ok(false)
        }
        Some(i) => lines.splice(i..i + 1, vec![line.into_bytes()]),
        None => {
            let end = lines.len();
            lines.splice(end..end, vec![line.into_bytes()]);
        }
    }
    ensure_content(
        plan,
        path,
        state,
        &lines.to_bytes(),
        &Attrs::default(),
        false,
    )?;
    Ok(true)
}
