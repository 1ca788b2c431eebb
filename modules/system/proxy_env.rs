//! `proxy_env`: a host behind a jump host reaches the outside through its proxy, everywhere a
//! KVM host needs it: login shells and services reading /etc/environment, apt, dnf.
//!
//! Every file is edited by its own rules and only in the lines this module owns, so
//! `state: absent` takes away exactly what `present` put there and a file that had no proxy
//! settings before ends as it was, byte for byte.

use crate::module::{
    ArgError, Attrs, FileKind, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::{self, Presence};
use crate::modules::files::edit::{self, Lines};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct ProxyEnv;

const ENVIRONMENT: &str = "/etc/environment";
/// apt's proxy, in a file of its own so it is removed whole.
const APT_CONF: &str = "/etc/apt/apt.conf.d/95kvmforge-proxy";
/// apt is configured only where it is installed.
const APT_GET: &str = "/usr/bin/apt-get";
/// dnf is configured only where its configuration exists.
const DNF_CONF: &str = "/etc/dnf/dnf.conf";

/// The variables set in /etc/environment: programs read either case (curl and wget the lower,
/// some Java and Go tools the upper).
const KEYS: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

static SPEC: ModuleSpec = ModuleSpec {
    name: "proxy_env",
    summary: "Point a host at an HTTP proxy: /etc/environment, apt and dnf",
    description: "Sets `http_proxy`, `https_proxy` and `no_proxy`, in lower and upper case, in \
/etc/environment (read by PAM for every login and by services that import it), as \
`KEY=\"value\"` lines: an existing line for one of these keys (also `export KEY=...`) is \
replaced where it is, a duplicate removed, a missing one appended; every other line is kept \
byte for byte. Where apt is installed (/usr/bin/apt-get), \
/etc/apt/apt.conf.d/95kvmforge-proxy gets `Acquire::http::Proxy` and `Acquire::https::Proxy`; \
where dnf is configured (/etc/dnf/dnf.conf), `proxy=` is set in its `[main]` section.\n\n\
`state: absent` removes exactly these: the six keys' lines from /etc/environment, the apt \
file, and `proxy=` from dnf.conf's `[main]`; nothing else changes, so a file that had no proxy \
settings before `present` is byte-identical after `absent`. A value set by hand for one of these \
keys before is replaced by `present`, and removed by `absent`.\n\n\
`proxy` is checked before any host is contacted: an http:// or https:// URL with a host and an \
optional port (1-65535). `no_proxy` takes host names, domains (`.corp.example`), addresses and \
networks, as a list or a comma-separated string. Results: `package_managers` (those configured).",
    params: &[
        ParamSpec::optional(
            "proxy",
            ParamKind::Str,
            "The proxy's URL, e.g. http://192.168.121.101:3128 (required unless state=absent)",
        ),
        ParamSpec::optional(
            "https_proxy",
            ParamKind::Str,
            "The proxy for HTTPS (default: proxy)",
        ),
        ParamSpec::with_default(
            "no_proxy",
            ParamKind::List,
            "[localhost, 127.0.0.1]",
            "Hosts, domains and networks reached directly (a list or a comma-separated string)",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "absent removes exactly what present sets",
        ),
    ],
    free_form: None,
    example: r#"- name: the KVM hosts reach the outside through the jump host's squid
  proxy_env:
    proxy: http://192.168.121.101:3128
    no_proxy: [localhost, 127.0.0.1, 192.168.121.0/24, .corp.example]
"#,
};

/// A `proxy_env` task's arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Params {
    proxy: Option<String>,
    https_proxy: Option<String>,
    no_proxy: Vec<String>,
    state: Presence,
}

/// The proxy settings to put in place.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    http: String,
    https: String,
    /// Comma-separated, as every reader of `no_proxy` expects.
    no_proxy: String,
}

/// A `proxy_env` task's arguments, checked: `None` for `state: absent`.
#[derive(Debug)]
pub struct Request {
    set: Option<Settings>,
}

/// An `http://` or `https://` proxy URL in `param`: `SCHEME://[USER[:PASSWORD]@]HOST[:PORT][/]`.
fn proxy_url(param: &'static str, url: &str) -> Result<String, ArgError> {
    let url = url.trim();
    let bad = |why: &str| {
        ArgError::invalid(
            param,
            format!("{param}: {url:?} {why} (e.g. http://192.168.121.101:3128)"),
        )
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("is not an http:// or https:// URL"))?;
    if rest.contains(|c: char| c.is_whitespace() || c == '"') {
        return Err(bad("contains a space or a quote"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('?') || authority.contains('#') {
        return Err(bad("has a path; a proxy is only a host and a port"));
    }
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let bracketed_v6 = hostport
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    if bracketed_v6 {
        return Ok(url.to_string());
    }
    if hostport.contains(':') {
        args::host_port(param, hostport, false)?;
    } else {
        args::host(param, hostport)?;
    }
    Ok(url.to_string())
}

/// `no_proxy` entries: split on commas too, each a host, domain, address, network or `*`.
fn no_proxy(entries: &[String]) -> Result<String, ArgError> {
    let mut out: Vec<&str> = Vec::new();
    for e in entries.iter().flat_map(|e| e.split(',')).map(str::trim) {
        if e.is_empty() || out.contains(&e) {
            continue;
        }
        let network = e.contains('/') && args::cidr("no_proxy", e).is_ok();
        let host_port = e.contains(':') && args::host_port("no_proxy", e, false).is_ok();
        if !(e == "*"
            || network
            || host_port
            || e.parse::<std::net::IpAddr>().is_ok()
            || args::domain("no_proxy", e).is_ok())
        {
            return Err(ArgError::invalid(
                "no_proxy",
                format!("no_proxy: {e:?} is not a host, domain, address or network"),
            ));
        }
        out.push(e);
    }
    Ok(out.join(","))
}

/// Does `line` of /etc/environment set `key` (`KEY=...`, `export KEY=...`)?
fn sets(key: &str, line: &[u8]) -> bool {
    let l = String::from_utf8_lossy(edit::strip_cr(line));
    let l = l.trim_start();
    let l = l.strip_prefix("export ").map_or(l, str::trim_start);
    l.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// The range of dnf.conf's `[main]` section body, if it has one.
fn main_section(lines: &Lines) -> Option<std::ops::Range<usize>> {
    let header = |l: &[u8]| {
        String::from_utf8_lossy(edit::strip_cr(l))
            .trim()
            .to_string()
    };
    let start = lines.lines.iter().position(|l| header(l) == "[main]")? + 1;
    let end = (start..lines.len())
        .find(|&i| header(&lines.lines[i]).starts_with('['))
        .unwrap_or(lines.len());
    Some(start..end)
}

fn dnf_proxy(line: &[u8]) -> bool {
    sets("proxy", line)
}

/// Plan writing `lines` back to `path` when they differ from what is there.
fn write_lines(
    plan: &mut Plan,
    path: &str,
    observed: &Observed,
    lines: &Lines,
) -> Result<(), ModuleError> {
    let state = observed.file(path)?;
    let before = state.content.as_deref().unwrap_or_default();
    let after = lines.to_bytes();
    if after != before || !state.exists() {
        edit::write_edited(
            plan,
            path,
            state,
            observed,
            &after,
            &Attrs::default(),
            false,
        )?;
    }
    Ok(())
}

/// The observed lines of a file to edit (none when it does not exist).
fn read_lines(path: &str, observed: &Observed) -> Result<Lines, ModuleError> {
    let state = observed.file(path)?;
    edit::editable(path, state)?;
    Ok(Lines::parse(state.content.as_deref().unwrap_or_default()))
}

impl Module for ProxyEnv {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        if p.state == Presence::Absent {
            return Ok(Request { set: None });
        }
        let Some(proxy) = p.proxy else {
            return Err(ArgError::requires(
                "state",
                "proxy",
                "proxy (the proxy's URL, e.g. http://192.168.121.101:3128) is required unless state is absent",
            )
            .into());
        };
        let http = proxy_url("proxy", &proxy)?;
        let https = match p.https_proxy {
            Some(u) => proxy_url("https_proxy", &u)?,
            None => http.clone(),
        };
        Ok(Request {
            set: Some(Settings {
                http,
                https,
                no_proxy: no_proxy(&p.no_proxy)?,
            }),
        })
    }

    fn probes(&self, _req: &Request) -> Vec<Probe> {
        let mut probes = edit::edit_probes(ENVIRONMENT, true);
        probes.extend([APT_CONF, APT_GET, DNF_CONF].map(|p| Probe::File(p.into())));
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let mut plan = Plan::ok();
        let mut managers = Vec::new();
        let mut env = read_lines(ENVIRONMENT, observed)?;
        let apt = observed.file(APT_GET)?.exists();
        let dnf = observed.file(DNF_CONF)?.kind == FileKind::File;
        match &req.set {
            Some(s) => {
                for key in KEYS {
                    let value = match key.to_ascii_lowercase().as_str() {
                        "http_proxy" => &s.http,
                        "https_proxy" => &s.https,
                        _ => &s.no_proxy,
                    };
                    env.set_line(
                        0..env.len(),
                        |l| sets(key, l),
                        format!("{key}=\"{value}\"").as_bytes(),
                    );
                }
                write_lines(&mut plan, ENVIRONMENT, observed, &env)?;
                if apt {
                    let conf = format!(
                        "// Written by kvmforge (proxy_env); proxy_env with state: absent removes this file.\n\
                         Acquire::http::Proxy \"{}\";\nAcquire::https::Proxy \"{}\";\n",
                        s.http, s.https
                    );
                    edit::ensure_content(
                        &mut plan,
                        APT_CONF,
                        observed.file(APT_CONF)?,
                        conf.as_bytes(),
                        &Attrs::default(),
                        false,
                    )?;
                    managers.push("apt");
                }
                if dnf {
                    let mut conf = read_lines(DNF_CONF, observed)?;
                    let line = format!("proxy={}", s.http);
                    match main_section(&conf) {
                        Some(main) => {
                            conf.set_line(main, dnf_proxy, line.as_bytes());
                        }
                        None => {
                            let end = conf.len();
                            conf.splice(end..end, vec![b"[main]".to_vec(), line.into_bytes()]);
                        }
                    }
                    write_lines(&mut plan, DNF_CONF, observed, &conf)?;
                    managers.push("dnf");
                }
            }
            None => {
                if observed.file(ENVIRONMENT)?.exists() {
                    env.remove_matching(|l| KEYS.iter().any(|k| sets(k, l)));
                    write_lines(&mut plan, ENVIRONMENT, observed, &env)?;
                }
                edit::ensure_absent(&mut plan, APT_CONF, observed.file(APT_CONF)?);
                if dnf {
                    let mut conf = read_lines(DNF_CONF, observed)?;
                    if let Some(main) = main_section(&conf) {
                        conf.remove_matching_in(main, dnf_proxy);
                    }
                    write_lines(&mut plan, DNF_CONF, observed, &conf)?;
                }
            }
        }
        Ok(plan.with_data("package_managers", managers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, ArgErrorKind, FileState};
    use crate::modules::testing::{apply, arg_error, content, converge, req};
    use serde_json::json;

    const PROXY: &str = "http://192.168.121.101:3128";

    /// A Debian host: /etc/environment with a line of its own, apt, no dnf.
    fn debian(env: &str) -> Observed {
        Observed::new()
            .with_file(ENVIRONMENT, FileState::file(env))
            .with_file("/etc", FileState::dir())
            .with_file(APT_CONF, FileState::absent())
            .with_file(APT_GET, FileState::file("").with_mode(0o755))
            .with_file(DNF_CONF, FileState::absent())
    }

    /// A Fedora-like host: dnf, no apt, no /etc/environment.
    fn fedora(dnf_conf: &str) -> Observed {
        Observed::new()
            .with_file(ENVIRONMENT, FileState::absent())
            .with_file("/etc", FileState::dir())
            .with_file(APT_CONF, FileState::absent())
            .with_file(APT_GET, FileState::absent())
            .with_file(DNF_CONF, FileState::file(dnf_conf))
    }

    fn present() -> Request {
        req(&ProxyEnv, json!({"proxy": PROXY}))
    }

    fn absent() -> Request {
        req(&ProxyEnv, json!({"state": "absent"}))
    }

    #[test]
    fn debian_gets_environment_and_apt_then_nothing() {
        let (p, after) = converge(&ProxyEnv, &present(), &debian("LANG=C.UTF-8\n"));
        assert_eq!(
            content(&after, ENVIRONMENT),
            format!(
                "LANG=C.UTF-8\nhttp_proxy=\"{PROXY}\"\nhttps_proxy=\"{PROXY}\"\n\
                 no_proxy=\"localhost,127.0.0.1\"\nHTTP_PROXY=\"{PROXY}\"\nHTTPS_PROXY=\"{PROXY}\"\n\
                 NO_PROXY=\"localhost,127.0.0.1\"\n"
            )
        );
        assert_eq!(
            content(&after, APT_CONF),
            format!(
                "// Written by kvmforge (proxy_env); proxy_env with state: absent removes this file.\n\
                 Acquire::http::Proxy \"{PROXY}\";\nAcquire::https::Proxy \"{PROXY}\";\n"
            )
        );
        assert_eq!(p.data["package_managers"], json!(["apt"]));
        assert!(!p.actions.iter().any(|a| a.path() == Some(DNF_CONF)));
    }

    #[test]
    fn absent_restores_every_file_byte_for_byte() {
        for before in [
            "",
            "LANG=C.UTF-8\n",
            "# comment\r\nPATH=\"/usr/bin\"\n\nLC_ALL=C\n",
        ] {
            let host = debian(before);
            let (_, set) = converge(&ProxyEnv, &present(), &host);
            let (_, unset) = converge(&ProxyEnv, &absent(), &set);
            assert_eq!(content(&unset, ENVIRONMENT), before);
            assert!(!unset.file(APT_CONF).unwrap().exists());
        }
        let dnf = "[main]\ngpgcheck=1\ninstallonly_limit=3\n\n[local]\nproxy=_none_\n";
        let (_, set) = converge(&ProxyEnv, &present(), &fedora(dnf));
        assert_eq!(
            content(&set, DNF_CONF),
            format!(
                "[main]\ngpgcheck=1\ninstallonly_limit=3\n\nproxy={PROXY}\n[local]\nproxy=_none_\n"
            )
        );
        let (_, unset) = converge(&ProxyEnv, &absent(), &set);
        assert_eq!(content(&unset, DNF_CONF), dnf);
        // Nothing there to remove: nothing to do.
        assert!(!ProxyEnv
            .plan(&absent(), &debian("A=1\n"))
            .unwrap()
            .changed());
    }

    #[test]
    fn existing_settings_are_replaced_where_they_are() {
        let env = "export http_proxy=http://old:8080\nA=1\nhttp_proxy=\"dup\"\nHTTP_PROXY_X=keep\n";
        let (_, after) = converge(&ProxyEnv, &present(), &debian(env));
        let text = content(&after, ENVIRONMENT);
        assert!(
            text.starts_with(&format!("http_proxy=\"{PROXY}\"\nA=1\nHTTP_PROXY_X=keep\n")),
            "{text}"
        );
        assert_eq!(text.matches("http_proxy=").count(), 1);
        // A file dnf reads without [main] gets one.
        let (_, after) = converge(&ProxyEnv, &present(), &fedora("# empty\n"));
        assert_eq!(
            content(&after, DNF_CONF),
            format!("# empty\n[main]\nproxy={PROXY}\n")
        );
        assert_eq!(
            content(&after, ENVIRONMENT).lines().count(),
            6,
            "a missing /etc/environment is created"
        );
    }

    #[test]
    fn https_proxy_and_no_proxy() {
        let r = req(
            &ProxyEnv,
            json!({"proxy": PROXY, "https_proxy": "https://p.example:8443/",
                   "no_proxy": "localhost,.corp.example 10.0.0.0/8, vm1:8080"}),
        );
        let p = ProxyEnv.plan(&r, &debian("")).unwrap();
        let after = apply(&debian(""), &p.actions);
        let text = content(&after, ENVIRONMENT);
        assert!(
            text.contains("\nhttps_proxy=\"https://p.example:8443/\"\n"),
            "{text}"
        );
        assert!(
            text.contains("\nNO_PROXY=\"localhost,.corp.example,10.0.0.0/8,vm1:8080\"\n"),
            "{text}"
        );
        assert!(content(&after, APT_CONF)
            .contains("Acquire::https::Proxy \"https://p.example:8443/\";"));
        assert!(p
            .actions
            .iter()
            .all(|a| matches!(a, Action::WriteFile { .. })));
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        for (args, kind, param) in [
            (
                json!({}),
                ArgErrorKind::Requires { other: "proxy" },
                "state",
            ),
            (
                json!({"proxy": "192.168.121.101:3128"}),
                ArgErrorKind::Invalid,
                "proxy",
            ),
            (
                json!({"proxy": "socks5://p:1080"}),
                ArgErrorKind::Invalid,
                "proxy",
            ),
            (
                json!({"proxy": "http://p:99999"}),
                ArgErrorKind::Invalid,
                "proxy",
            ),
            (
                json!({"proxy": "http://p:3128/path"}),
                ArgErrorKind::Invalid,
                "proxy",
            ),
            (json!({"proxy": "http://"}), ArgErrorKind::Invalid, "proxy"),
            (
                json!({"proxy": PROXY, "https_proxy": "ftp://p"}),
                ArgErrorKind::Invalid,
                "https_proxy",
            ),
            (
                json!({"proxy": PROXY, "no_proxy": ["bad host"]}),
                ArgErrorKind::Invalid,
                "no_proxy",
            ),
            (
                json!({"proxy": PROXY, "no_proxy": "a,b/c"}),
                ArgErrorKind::Invalid,
                "no_proxy",
            ),
        ] {
            let e = arg_error(&ProxyEnv, args.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{args}: {e}");
        }
        for ok in [
            "http://[fd00::1]:3128",
            "https://user:pw@proxy.example",
            "http://10.0.0.1:3128/",
        ] {
            assert!(proxy_url("proxy", ok).is_ok(), "{ok}");
        }
    }
}
