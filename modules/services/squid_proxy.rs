//! `squid_proxy`: the forward proxy of a jump host, so hosts on a private network reach package
//! mirrors and registries through it.
//!
//! The whole `/etc/squid/squid.conf` is rendered from structured parameters (Debian's defaults
//! where a parameter is not given), checked by squid itself on a staged copy before it replaces
//! the running configuration, and squid is then enabled, started, or reloaded. A configuration
//! squid refuses never reaches the running proxy.

use crate::module::{
    Action, ArgError, Attrs, Change, Fact, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::modules::args;
use crate::modules::facts::systemd::UnitState;
use crate::modules::files::edit;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::Value;

pub struct SquidProxy;

/// The file the module owns.
pub const CONFIG: &str = "/etc/squid/squid.conf";
const UNIT: &str = "squid.service";
/// Read when neither `visible_hostname` nor `inventory_hostname` names the host.
const HOSTNAME_FILE: &str = "/etc/hostname";

/// squid's own check of the staged file (`%s`). `squid -k parse` exits 0 after some errors
/// (an ERROR line about a value it then ignores), so its output is read as well; the lines that
/// explain a refusal are printed for the task's message. `Processing:` lines echo the
/// configuration itself and are left out, so a domain or comment cannot look like an error.
const CHECK: &str = "out=$(squid -k parse -f %s 2>&1); rc=$?; \
bad=$(echo \"$out\" | grep -v 'Processing:' | grep -E 'ERROR|FATAL|WARNING|unrecognized'); \
[ -n \"$bad\" ] || bad=$(echo \"$out\" | tail -n 3); \
if [ $rc -ne 0 ] || echo \"$bad\" | grep -qE 'ERROR|FATAL'; then echo \"squid refused the configuration: $bad\"; exit 1; fi";

static SPEC: ModuleSpec = ModuleSpec {
    name: "squid_proxy",
    summary: "The whole squid.conf of a forward proxy from structured parameters, checked by squid before it is used",
    description: "Writes the whole /etc/squid/squid.conf (mode 0644) from the parameters, in the \
layout of Debian's squid.conf: the `localnet`, `SSL_ports` and `Safe_ports` ACLs, then \
`http_access` rules in Debian's order (deny unsafe ports and CONNECT to non-SSL ports, the cache \
manager for localhost only, `include /etc/squid/conf.d/*.conf`, the `deny` rules, the `allow` \
rules, `localnet`, localhost, deny everything else), the listening ports, the host's name, \
the parent proxy and the refresh patterns. Anything else squid.conf can say goes into `extra`, \
appended as written. The file is compared byte for byte: a second run changes nothing, and an \
edit by hand is drift that is put back.\n\n\
Before the new file replaces the old one, squid parses a staged copy next to it \
(`squid -k parse`): when squid refuses it (its exit code, or ERROR/FATAL in its output, since \
some errors exit 0) the old file stays, the running squid is untouched, and the task fails with \
squid's own lines. Then squid.service is enabled, and started when it is not running, or \
reloaded (`squid -k reconfigure`) when the file changed under a running squid.\n\n\
`allow` and `deny` take source networks (CIDR, a bare address is one host) and destination \
domains (`.example.org` is the domain and everything under it), told apart by their form: a \
deny rule wins over every allow rule; an allowed domain is open to any client that reaches the \
port, so listen only where the clients are. With `parent_proxy` every request goes through that \
proxy (`never_direct allow all`) except for `direct_domains`, which squid fetches itself \
(`always_direct`): the internal names the parent cannot reach.\n\n\
`visible_hostname` defaults to the inventory name of the host (`inventory_hostname`): squid \
otherwise asks DNS for its own name at startup and stalls on networks without DNS. \
`dns_nameservers` replaces /etc/resolv.conf for squid only. Every value is checked before any \
host is contacted, each error naming its parameter. squid must be installed (`package: squid`). \
Results: `config_path`, `ports` (the http_port values).",
    params: &[
        ParamSpec::with_default(
            "http_port",
            ParamKind::List,
            "[3128]",
            "Where squid listens: PORT, ADDRESS:PORT or [IPV6]:PORT, one or more",
        ),
        ParamSpec::required(
            "localnet",
            ParamKind::List,
            "Source networks (CIDR) allowed to use the proxy",
        ),
        ParamSpec::with_default(
            "safe_ports",
            ParamKind::List,
            "[80, 21, 443, 70, 210, 1025-65535, 280, 488, 591, 777]",
            "Destination ports (or ranges LOW-HIGH) clients may reach; others are denied",
        ),
        ParamSpec::with_default(
            "ssl_ports",
            ParamKind::List,
            "[443]",
            "Ports (or ranges) clients may CONNECT to (HTTPS tunnels)",
        ),
        ParamSpec::with_default(
            "allow",
            ParamKind::List,
            "[]",
            "More access: source networks (CIDR) or destination domains (.example.org)",
        ),
        ParamSpec::with_default(
            "deny",
            ParamKind::List,
            "[]",
            "Refused before any allow rule: source networks (CIDR) or destination domains",
        ),
        ParamSpec::optional(
            "parent_proxy",
            ParamKind::Str,
            "HOST:PORT of a parent proxy every request goes through (cache_peer ... parent)",
        ),
        ParamSpec::with_default(
            "direct_domains",
            ParamKind::List,
            "[]",
            "With parent_proxy: destination domains squid fetches itself, not through the parent",
        ),
        ParamSpec::optional(
            "visible_hostname",
            ParamKind::Str,
            "The name squid gives itself (default: the host's inventory name)",
        ),
        ParamSpec::with_default(
            "dns_nameservers",
            ParamKind::List,
            "[]",
            "DNS servers (IP addresses) squid asks instead of /etc/resolv.conf's",
        ),
        ParamSpec::with_default(
            "cache",
            ParamKind::Bool,
            "true",
            "Cache responses; false writes `cache deny all`",
        ),
        ParamSpec::with_default(
            "refresh_patterns",
            ParamKind::Data,
            r#"["^ftp: 1440 20% 10080", "^gopher: 1440 0% 1440", "-i (/cgi-bin/|\\?) 0 0% 0", ". 0 20% 4320"]"#,
            "refresh_pattern lines without the keyword: [-i] REGEX MIN PERCENT% MAX [OPTIONS] (Debian's by default)",
        ),
        ParamSpec::with_default(
            "include_conf_d",
            ParamKind::Bool,
            "true",
            "Read /etc/squid/conf.d/*.conf (as Debian's squid.conf does)",
        ),
        ParamSpec::with_default(
            "extra",
            ParamKind::Data,
            "[]",
            "More squid.conf lines, appended as written (a list, or one line per line of a string)",
        ),
        ParamSpec::with_default(
            "backup",
            ParamKind::Bool,
            "false",
            "Keep a timestamped copy of the old squid.conf",
        ),
    ],
    free_form: None,
    example: r#"- name: the jump host's proxy for the VM network, through the corporate proxy
  squid_proxy:
    http_port: 192.168.121.101:3128
    localnet: [192.168.121.0/24]
    parent_proxy: proxy.corp.example:8080
    direct_domains: [.corp.example]
    dns_nameservers: [10.0.0.53, 10.0.1.53]
"#,
};

/// A `squid_proxy` task's arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Params {
    http_port: Vec<String>,
    localnet: Vec<String>,
    safe_ports: Vec<String>,
    ssl_ports: Vec<String>,
    allow: Vec<String>,
    deny: Vec<String>,
    parent_proxy: Option<String>,
    direct_domains: Vec<String>,
    visible_hostname: Option<String>,
    dns_nameservers: Vec<String>,
    cache: bool,
    refresh_patterns: Value,
    include_conf_d: bool,
    extra: Value,
    backup: bool,
}

/// `allow` or `deny` entries, split by what squid matches them against.
#[derive(Debug, Default, PartialEq, Eq)]
struct Rules {
    /// Source networks (`src` ACL).
    src: Vec<String>,
    /// Destination domains (`dstdomain` ACL).
    domains: Vec<String>,
}

/// A `squid_proxy` task's arguments, checked.
#[derive(Debug)]
pub struct Request {
    http_port: Vec<String>,
    localnet: Vec<String>,
    safe_ports: Vec<String>,
    ssl_ports: Vec<String>,
    allow: Rules,
    deny: Rules,
    /// (host, port).
    parent: Option<(String, u16)>,
    direct_domains: Vec<String>,
    /// `None`: read the host's own name from /etc/hostname.
    visible_hostname: Option<String>,
    dns_nameservers: Vec<String>,
    cache: bool,
    refresh_patterns: Vec<String>,
    include_conf_d: bool,
    extra: Vec<String>,
    backup: bool,
}

/// A port or `LOW-HIGH` range.
fn port_or_range(param: &'static str, value: &str) -> Result<String, ArgError> {
    match value.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (args::port(param, lo)?, args::port(param, hi)?);
            if lo > hi {
                return Err(ArgError::invalid(
                    param,
                    format!("{param}: the range {value} is empty (write LOW-HIGH)"),
                ));
            }
            Ok(format!("{lo}-{hi}"))
        }
        None => Ok(args::port(param, value)?.to_string()),
    }
}

fn rules(param: &'static str, values: Vec<String>) -> Result<Rules, ArgError> {
    let mut r = Rules::default();
    for v in values {
        // An address-looking value is a network (and must be a valid one); anything else a
        // domain, so a mistyped network is never silently taken for a domain.
        if v.contains('/') || v.parse::<std::net::IpAddr>().is_ok() {
            r.src.push(args::cidr(param, &v)?.to_string());
        } else {
            args::domain(param, &v)?;
            r.domains.push(v.to_ascii_lowercase());
        }
    }
    Ok(r)
}

fn domains(param: &'static str, values: Vec<String>) -> Result<Vec<String>, ArgError> {
    values
        .into_iter()
        .map(|d| args::domain(param, &d).map(|()| d.to_ascii_lowercase()))
        .collect()
}

/// A list of lines from a `Data` parameter: a list of strings (each one line), or a string
/// (one line per line).
fn line_list(param: &'static str, v: &Value) -> Result<Vec<String>, ArgError> {
    let lines: Vec<String> = match v {
        Value::Null => Vec::new(),
        Value::String(s) => s.lines().map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) if !s.contains('\n') => Ok(s.clone()),
                Value::String(_) => Err(ArgError::invalid(
                    param,
                    format!("{param}: each item is one line; this one has several"),
                )),
                other => Err(ArgError::invalid(
                    param,
                    format!("{param}: each item must be a line of text, got {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Value::Object(_) | Value::Bool(_) | Value::Number(_) => {
            return Err(ArgError::invalid(
                param,
                format!("{param} must be a list of lines"),
            ))
        }
    };
    Ok(lines)
}

/// `[-i] REGEX MIN PERCENT% MAX [OPTIONS]`, checked so a misplaced field is named here rather
/// than by squid on the host.
fn refresh_pattern(line: &str) -> Result<String, ModuleError> {
    let param = "refresh_patterns";
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if words.first() == Some(&"-i") {
        words.remove(0);
    }
    let bad = || {
        ArgError::invalid(
            param,
            format!("{param}: {line:?} is not [-i] REGEX MIN PERCENT% MAX [OPTIONS]"),
        )
    };
    if words.len() < 4 {
        return Err(bad().into());
    }
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let percent = words[2].strip_suffix('%').ok_or_else(bad)?;
    if !number(words[1]) || !number(percent) || !number(words[3]) {
        return Err(bad().into());
    }
    edit::regex(words[0], param)?;
    Ok(line.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A name squid can give itself.
fn hostname(param: &'static str, name: &str) -> Result<String, ArgError> {
    args::host(param, name).map(|()| name.to_string())
}

impl Request {
    fn from_params(p: Params, ctx: &PlanContext) -> Result<Self, ModuleError> {
        if p.http_port.is_empty() {
            return Err(ArgError::invalid("http_port", "http_port: give at least one port").into());
        }
        let mut listens = Vec::new();
        for v in &p.http_port {
            let at = args::host_port("http_port", v, true)?;
            if listens.contains(&at) {
                // squid would only find out when it binds the port a second time, at start.
                return Err(ArgError::invalid(
                    "http_port",
                    format!("http_port: {v} is listed twice"),
                )
                .into());
            }
            listens.push(at);
        }
        if p.localnet.is_empty() {
            return Err(ArgError::invalid(
                "localnet",
                "localnet: give the networks of the clients (e.g. [192.168.121.0/24])",
            )
            .into());
        }
        let localnet = p
            .localnet
            .iter()
            .map(|n| args::cidr("localnet", n).map(|n| n.to_string()))
            .collect::<Result<_, _>>()?;
        let ports = |param, v: &[String]| -> Result<Vec<String>, ArgError> {
            if v.is_empty() {
                return Err(ArgError::invalid(
                    param,
                    format!("{param}: give at least one port"),
                ));
            }
            v.iter().map(|x| port_or_range(param, x)).collect()
        };
        let parent = p
            .parent_proxy
            .as_deref()
            .map(|v| {
                args::host_port("parent_proxy", v, false)
                    .map(|(h, port)| (h.unwrap_or_default(), port))
            })
            .transpose()?;
        if parent.is_none() && !p.direct_domains.is_empty() {
            return Err(ArgError::requires(
                "direct_domains",
                "parent_proxy",
                "direct_domains only means something with a parent_proxy (without one every domain is fetched directly)",
            )
            .into());
        }
        let visible_hostname = match p.visible_hostname {
            Some(n) => Some(hostname("visible_hostname", &n)?),
            None => match ctx.vars.get("inventory_hostname").and_then(Value::as_str) {
                Some(n) => Some(hostname("visible_hostname", n).map_err(|_| {
                    ArgError::invalid(
                        "visible_hostname",
                        format!(
                            "visible_hostname: the host's inventory name {n:?} is not a host name; give visible_hostname"
                        ),
                    )
                })?),
                None => None,
            },
        };
        for ns in &p.dns_nameservers {
            if ns.parse::<std::net::IpAddr>().is_err() {
                return Err(ArgError::invalid(
                    "dns_nameservers",
                    format!("dns_nameservers: {ns:?} is not an IP address"),
                )
                .into());
            }
        }
        let refresh_patterns = line_list("refresh_patterns", &p.refresh_patterns)?
            .iter()
            .map(|l| refresh_pattern(l))
            .collect::<Result<_, _>>()?;
        Ok(Request {
            http_port: p.http_port,
            localnet,
            safe_ports: ports("safe_ports", &p.safe_ports)?,
            ssl_ports: ports("ssl_ports", &p.ssl_ports)?,
            allow: rules("allow", p.allow)?,
            deny: rules("deny", p.deny)?,
            parent,
            direct_domains: domains("direct_domains", p.direct_domains)?,
            visible_hostname,
            dns_nameservers: p.dns_nameservers,
            cache: p.cache,
            refresh_patterns,
            include_conf_d: p.include_conf_d,
            extra: line_list("extra", &p.extra)?,
            backup: p.backup,
        })
    }

    /// The whole squid.conf for this request on a host called `hostname`.
    fn render(&self, hostname: &str) -> String {
        let mut out = String::from(
            "# Written by kvmforge (squid_proxy): changes made here are replaced on its next run.\n\
             # Checked with `squid -k parse` before it replaced the previous file.\n\n",
        );
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("acl localnet src {}", self.localnet.join(" ")));
        line(format!("acl SSL_ports port {}", self.ssl_ports.join(" ")));
        line(format!("acl Safe_ports port {}", self.safe_ports.join(" ")));
        let acl = |line: &mut dyn FnMut(String), name: &str, kind: &str, v: &[String]| {
            if !v.is_empty() {
                line(format!("acl {name} {kind} {}", v.join(" ")));
            }
        };
        acl(&mut line, "denied_src", "src", &self.deny.src);
        acl(&mut line, "denied_domains", "dstdomain", &self.deny.domains);
        acl(&mut line, "allowed_src", "src", &self.allow.src);
        acl(
            &mut line,
            "allowed_domains",
            "dstdomain",
            &self.allow.domains,
        );
        line(String::new());
        line("http_access deny !Safe_ports".into());
        line("http_access deny CONNECT !SSL_ports".into());
        line("http_access allow localhost manager".into());
        line("http_access deny manager".into());
        if self.include_conf_d {
            line("include /etc/squid/conf.d/*.conf".into());
        }
        for (rule, name, v) in [
            ("deny", "denied_src", &self.deny.src),
            ("deny", "denied_domains", &self.deny.domains),
            ("allow", "allowed_src", &self.allow.src),
            ("allow", "allowed_domains", &self.allow.domains),
        ] {
            if !v.is_empty() {
                line(format!("http_access {rule} {name}"));
            }
        }
        line("http_access allow localnet".into());
        line("http_access allow localhost".into());
        line("http_access deny all".into());
        line(String::new());
        for p in &self.http_port {
            line(format!("http_port {p}"));
        }
        line(format!("visible_hostname {hostname}"));
        if !self.dns_nameservers.is_empty() {
            line(format!(
                "dns_nameservers {}",
                self.dns_nameservers.join(" ")
            ));
        }
        if let Some((host, port)) = &self.parent {
            line(String::new());
            line(format!(
                "cache_peer {host} parent {port} 0 no-query default"
            ));
            if !self.direct_domains.is_empty() {
                line(format!(
                    "acl direct_domains dstdomain {}",
                    self.direct_domains.join(" ")
                ));
                line("always_direct allow direct_domains".into());
            }
            line("never_direct allow all".into());
        }
        line(String::new());
        if !self.cache {
            line("cache deny all".into());
        }
        line("coredump_dir /var/spool/squid".into());
        for r in &self.refresh_patterns {
            line(format!("refresh_pattern {r}"));
        }
        if !self.extra.is_empty() {
            line(String::new());
            for e in &self.extra {
                line(e.clone());
            }
        }
        out
    }
}

impl Module for SquidProxy {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, ctx: &PlanContext) -> Result<Request, ModuleError> {
        Request::from_params(args.parse()?, ctx)
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        let mut probes = vec![Probe::File(CONFIG.into()), UnitState::probe(UNIT)];
        if req.visible_hostname.is_none() {
            probes.push(Probe::File(HOSTNAME_FILE.into()));
        }
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let unit = observed.fact::<UnitState>(UNIT)?;
        if !unit.exists() {
            return Err(ModuleError::Host(format!(
                "squid is not installed ({UNIT} not found): install the squid package first"
            )));
        }
        if unit.masked() {
            return Err(ModuleError::Host(format!(
                "{UNIT} is masked: unmask it (service: {{name: squid, masked: false}}) to run the proxy"
            )));
        }
        let hostname = match &req.visible_hostname {
            Some(n) => n.clone(),
            None => {
                let name = observed.file(HOSTNAME_FILE)?.text().trim().to_string();
                hostname("visible_hostname", &name).map_err(|_| {
                    ModuleError::Host(format!(
                        "{HOSTNAME_FILE} holds no usable host name ({name:?}): give visible_hostname"
                    ))
                })?
            }
        };
        let desired = req.render(&hostname);
        let mut plan = Plan::ok();
        let attrs = Attrs {
            mode: Some(0o644),
            ..Attrs::default()
        };
        edit::ensure_content(
            &mut plan,
            CONFIG,
            observed.file(CONFIG)?,
            desired.as_bytes(),
            &attrs,
            req.backup,
        )?;
        edit::validate_writes(&mut plan, Some(CHECK));
        let rewritten = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::WriteFile { .. }));

        if unit.unit_file_state != "enabled" {
            plan.change(
                Change::new(format!("enable {UNIT} (was {})", unit.unit_file_state)),
                [Action::run(format!("systemctl enable -- {UNIT}"))],
            );
        }
        if !unit.running() {
            plan.change(
                Change::new(format!("start {UNIT} (was {})", unit.active_state)),
                [Action::run(format!("systemctl start -- {UNIT}"))],
            );
        } else if rewritten {
            plan.change(
                Change::new(format!("reload {UNIT} (squid -k reconfigure)")),
                [Action::run(format!("systemctl reload -- {UNIT}"))],
            );
        }
        let ports: Vec<Value> = req
            .http_port
            .iter()
            .map(|p| Value::from(p.as_str()))
            .collect();
        Ok(plan
            .with_data("config_path", CONFIG)
            .with_data("ports", ports))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::testing::{apply, arg_error, commands, req, request_in};
    use serde_json::json;
    use std::sync::Arc;

    fn seed() -> Value {
        json!({
            "http_port": "192.168.121.101:3128",
            "localnet": ["192.168.121.0/24"],
            "parent_proxy": "proxy.corp.example:8080",
            "direct_domains": [".corp.example"],
            "dns_nameservers": ["10.0.0.53", "10.0.1.53"],
        })
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("modules/services/fixtures")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn unit(active: &str, enabled: &str) -> Observation {
        Observation::Command(CommandOutput::ok(&format!(
            "Id=squid.service\nLoadState=loaded\nActiveState={active}\nSubState=x\n\
             UnitFileState={enabled}\nNeedDaemonReload=no\n"
        )))
    }

    fn host(conf: FileState, active: &str, enabled: &str) -> Observed {
        Observed::new()
            .with_file(CONFIG, conf)
            .with_fact::<UnitState>(UNIT, unit(active, enabled))
            .with_file(HOSTNAME_FILE, FileState::file("jump\n"))
    }

    fn on_host(name: &str) -> PlanContext {
        PlanContext {
            vars: Arc::new(json!({"inventory_hostname": name})),
            ..PlanContext::default()
        }
    }

    #[test]
    fn the_seed_renders_to_the_fixture() {
        let r = request_in(&SquidProxy, seed(), &on_host("jump")).unwrap();
        assert_eq!(r.render("jump"), fixture("squid.conf"));
        assert_eq!(r.visible_hostname.as_deref(), Some("jump"));
    }

    #[test]
    fn the_spec_example_is_the_seed() {
        let ex: serde_yaml::Value = serde_yaml::from_str(SPEC.example).unwrap();
        let args: Value = serde_yaml::from_value(ex[0]["squid_proxy"].clone()).unwrap();
        let from_doc = request_in(&SquidProxy, args, &on_host("jump")).unwrap();
        assert_eq!(from_doc.render("jump"), fixture("squid.conf"));
    }

    #[test]
    fn first_run_writes_checks_enables_and_starts_then_nothing() {
        let r = request_in(&SquidProxy, seed(), &on_host("jump")).unwrap();
        let debian = host(FileState::file("# Debian's\n"), "inactive", "disabled");
        let p = SquidProxy.plan(&r, &debian).unwrap();
        let Action::WriteFile {
            path,
            content,
            attrs,
            validate,
            ..
        } = &p.actions[0]
        else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(path, CONFIG);
        assert_eq!(String::from_utf8_lossy(content), fixture("squid.conf"));
        assert_eq!(attrs.mode, Some(0o644));
        assert_eq!(validate.as_deref(), Some(CHECK));
        assert_eq!(
            commands(&p),
            [
                "systemctl enable -- squid.service",
                "systemctl start -- squid.service"
            ]
        );
        let diff = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (diff.label.as_str(), diff.before.as_str()),
            (CONFIG, "# Debian's\n")
        );
        assert_eq!(p.data["config_path"], json!(CONFIG));
        assert_eq!(p.data["ports"], json!(["192.168.121.101:3128"]));

        // Applied and squid running: nothing more to do.
        let after =
            apply(&debian, &p.actions[..1]).with_fact::<UnitState>(UNIT, unit("active", "enabled"));
        assert!(!SquidProxy.plan(&r, &after).unwrap().changed());
    }

    #[test]
    fn a_changed_file_under_a_running_squid_is_reloaded() {
        let r = request_in(&SquidProxy, seed(), &on_host("jump")).unwrap();
        let p = SquidProxy
            .plan(&r, &host(FileState::file("old\n"), "active", "enabled"))
            .unwrap();
        assert_eq!(commands(&p), ["systemctl reload -- squid.service"]);
        // Same content, wrong mode: the mode is fixed, squid keeps running untouched.
        let same = FileState::file(fixture("squid.conf")).with_mode(0o600);
        let p = SquidProxy
            .plan(&r, &host(same, "active", "enabled"))
            .unwrap();
        assert!(
            matches!(p.actions[..], [Action::SetAttrs { .. }]),
            "{:?}",
            p.actions
        );
        // A stopped squid with the right file is started, not reloaded.
        let p = SquidProxy
            .plan(
                &r,
                &host(FileState::file(fixture("squid.conf")), "failed", "enabled"),
            )
            .unwrap();
        assert_eq!(commands(&p), ["systemctl start -- squid.service"]);
    }

    #[test]
    fn the_check_reads_the_staged_file_and_squids_words() {
        // `%s` is replaced everywhere by the engine: it must only stand for the staged file.
        assert_eq!(CHECK.matches("%s").count(), 1);
        assert!(CHECK.contains("squid -k parse -f %s"));
        assert!(CHECK.contains("ERROR|FATAL"));
    }

    #[test]
    fn host_without_squid_or_with_it_masked_fails_clearly() {
        let r = request_in(&SquidProxy, seed(), &on_host("jump")).unwrap();
        let missing = Observation::Command(CommandOutput::ok(
            "Id=squid.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n",
        ));
        let o = host(FileState::absent(), "inactive", "").with_fact::<UnitState>(UNIT, missing);
        let e = SquidProxy.plan(&r, &o).unwrap_err();
        assert!(e.to_string().contains("install the squid package"), "{e}");
        let o = host(FileState::absent(), "inactive", "masked");
        assert!(SquidProxy
            .plan(&r, &o)
            .unwrap_err()
            .to_string()
            .contains("masked"));
    }

    #[test]
    fn the_name_comes_from_the_inventory_or_the_host() {
        let r = req(&SquidProxy, json!({"localnet": "10.0.0.0/8"}));
        assert_eq!(r.visible_hostname, None);
        assert!(SquidProxy
            .probes(&r)
            .contains(&Probe::File(HOSTNAME_FILE.into())));
        let p = SquidProxy
            .plan(&r, &host(FileState::absent(), "active", "enabled"))
            .unwrap();
        let d = p.changes[0].diff.as_ref().unwrap();
        assert!(d.after.contains("\nvisible_hostname jump\n"), "{}", d.after);
        let r = request_in(
            &SquidProxy,
            json!({"localnet": "10.0.0.0/8", "visible_hostname": "proxy1"}),
            &on_host("jump"),
        )
        .unwrap();
        assert_eq!(r.visible_hostname.as_deref(), Some("proxy1"));
        assert!(!SquidProxy
            .probes(&r)
            .contains(&Probe::File(HOSTNAME_FILE.into())));
    }

    #[test]
    fn rules_cache_includes_and_extra_lines() {
        let r = req(
            &SquidProxy,
            json!({
                "http_port": [3128, "10.0.0.1:8080"],
                "localnet": "10.1.0.0/16",
                "allow": ["10.9.0.0/16", ".debian.org", "10.8.0.7"],
                "deny": [".ads.example"],
                "cache": false,
                "include_conf_d": false,
                "visible_hostname": "jump",
                "safe_ports": [80, 443],
                "refresh_patterns": ["-i \\.deb$ 129600 100% 129600", ". 0 20% 4320"],
                "extra": "acl office src 10.7.0.0/16\nhttp_access allow office",
            }),
        );
        let conf = r.render("jump");
        for want in [
            "acl Safe_ports port 80 443\n",
            "acl denied_domains dstdomain .ads.example\n",
            "acl allowed_src src 10.9.0.0/16 10.8.0.7/32\n",
            "acl allowed_domains dstdomain .debian.org\n",
            "http_access deny manager\nhttp_access deny denied_domains\nhttp_access allow allowed_src\n\
             http_access allow allowed_domains\nhttp_access allow localnet\n",
            "http_port 3128\nhttp_port 10.0.0.1:8080\n",
            "cache deny all\n",
            "refresh_pattern -i \\.deb$ 129600 100% 129600\nrefresh_pattern . 0 20% 4320\n",
            "\nacl office src 10.7.0.0/16\nhttp_access allow office\n",
        ] {
            assert!(conf.contains(want), "{want:?} not in\n{conf}");
        }
        assert!(!conf.contains("include ") && !conf.contains("cache_peer"));
        assert!(!conf.contains("denied_src"));
        assert!(conf.ends_with("http_access allow office\n"));
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        let base = || json!({"localnet": ["10.0.0.0/8"], "visible_hostname": "jump"});
        let with = |k: &str, v: Value| {
            let mut a = base();
            a[k] = v;
            a
        };
        for (args, param) in [
            (with("http_port", json!("70000")), "http_port"),
            (with("http_port", json!("10.0.0.1:0")), "http_port"),
            (with("http_port", json!("proxy:port")), "http_port"),
            (with("http_port", json!([])), "http_port"),
            (with("http_port", json!([3128, "3128"])), "http_port"),
            (with("localnet", json!(["10.0.0.1/8"])), "localnet"),
            (with("localnet", json!(["lan"])), "localnet"),
            (with("localnet", json!([])), "localnet"),
            (with("safe_ports", json!(["80-21"])), "safe_ports"),
            (with("safe_ports", json!(["http"])), "safe_ports"),
            (with("ssl_ports", json!(["0"])), "ssl_ports"),
            (with("allow", json!(["10.0.0.0/33"])), "allow"),
            (with("allow", json!(["*.example.org"])), "allow"),
            (with("deny", json!(["bad domain"])), "deny"),
            (
                with("parent_proxy", json!("proxy.corp.example")),
                "parent_proxy",
            ),
            (
                with("parent_proxy", json!("http://proxy:8080")),
                "parent_proxy",
            ),
            (
                json!({"localnet": "10.0.0.0/8", "visible_hostname": "jump",
                       "parent_proxy": "proxy:3128", "direct_domains": ["x..y"]}),
                "direct_domains",
            ),
            (
                with("visible_hostname", json!("my host")),
                "visible_hostname",
            ),
            (
                with("dns_nameservers", json!(["ns1.example"])),
                "dns_nameservers",
            ),
            (
                with("refresh_patterns", json!(["^ftp: 1440 20 10080"])),
                "refresh_patterns",
            ),
            (
                with("refresh_patterns", json!(["([ 0 0% 0"])),
                "refresh_patterns",
            ),
            (
                with("refresh_patterns", json!({"a": 1})),
                "refresh_patterns",
            ),
            (with("extra", json!([{"a": 1}])), "extra"),
            (with("extra", json!(["two\nlines"])), "extra"),
        ] {
            let e = arg_error(&SquidProxy, args.clone());
            assert_eq!(
                (e.kind, e.param),
                (ArgErrorKind::Invalid, param),
                "{args}: {e}"
            );
            assert!(e.msg.starts_with(param), "{}", e.msg);
        }
        let e = arg_error(
            &SquidProxy,
            with("direct_domains", json!([".corp.example"])),
        );
        assert_eq!(
            (e.kind, e.param),
            (
                ArgErrorKind::Requires {
                    other: "parent_proxy"
                },
                "direct_domains"
            )
        );
        let e = request_in(
            &SquidProxy,
            json!({"localnet": "10.0.0.0/8"}),
            &on_host("a b"),
        )
        .unwrap_err();
        assert_eq!(e.arg().unwrap().param, "visible_hostname");
    }
}
