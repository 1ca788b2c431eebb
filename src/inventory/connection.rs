//! How a host is reached, from its variables: kvmforge's short names (`host`, `user`, `port`,
//! `key`, `jump`, `become`, ...) and every name Ansible honours for what kvmforge supports,
//! legacy ones included (`ansible_ssh_host`, `ansible_ssh_user`, `ansible_ssh_port`, ...).
//! `ansible_ssh_common_args`/`ansible_ssh_extra_args` become the OpenSSH options they carry.
//!
//! When several names for the same setting are set, the one Ansible's ssh connection uses wins:
//! `ansible_ssh_host` over `ansible_host` over `host`, and so on. A variable that would change
//! how Ansible reaches the host but that kvmforge cannot honour (another connection type, `su`,
//! a password login) is an error naming the host and the variable, never ignored.

use super::{pylit, Host};
use crate::error::Error;
use crate::template;
use serde_json::{Map, Value};

/// A secret value (a sudo password): never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// How to reach a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSpec {
    pub kind: ConnectionKind,
    pub address: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<String>,
    /// ProxyJump chain, `user@host:port[,user@host:port...]`.
    pub jump: Option<String>,
    pub become_: Option<bool>,
    /// `accept-new` (default), `strict` or `off`.
    pub host_key_checking: Option<String>,
    /// A known_hosts file to use instead of the user's.
    pub known_hosts: Option<String>,
    /// An ssh client config file to use instead of `~/.ssh/config` (`ssh -F`).
    pub ssh_config: Option<String>,
    /// Further OpenSSH options (`ProxyCommand`, `IdentitiesOnly`, ...), in the order given;
    /// as with `ssh -o`, the first value of an option wins.
    pub ssh_options: Vec<(String, String)>,
    /// The sudo password (`ansible_become_password`), sent on stdin only.
    pub become_password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Ssh,
    Local,
}

/// Variables that hold secrets: shown as `<hidden>` by `kvmforge inventory`.
pub fn is_secret_var(name: &str) -> bool {
    matches!(
        name,
        "ansible_become_password"
            | "ansible_become_pass"
            | "ansible_sudo_pass"
            | "ansible_password"
            | "ansible_ssh_pass"
            | "ansible_ssh_password"
            | "ansible_private_key"
            | "ansible_ssh_private_key"
            | "ansible_private_key_passphrase"
            | "ansible_ssh_private_key_passphrase"
    )
}

/// Reads one host's connection variables, rendering templates in them against its variables.
struct Vars<'a> {
    host: &'a str,
    vars: &'a Map<String, Value>,
    origins: &'a super::Origins,
}

impl Vars<'_> {
    /// The highest-priority name that is set (names are given lowest first).
    fn find(&self, names: &[&'static str]) -> Option<(&'static str, &Value)> {
        names
            .iter()
            .rev()
            .find_map(|n| self.vars.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    /// An error about `var`, at the position of its value where it is known.
    fn err(&self, var: &str, msg: impl std::fmt::Display) -> Error {
        let at = self
            .origins
            .get(var)
            .map(|p| format!("{p}: "))
            .unwrap_or_default();
        Error::Inventory(format!("{at}host `{}`, variable `{var}`: {msg}", self.host))
    }

    /// A scalar setting as text, templates rendered.
    fn text(&self, names: &[&'static str]) -> Result<Option<(&'static str, String)>, Error> {
        let Some((name, v)) = self.find(names) else {
            return Ok(None);
        };
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(self.err(name, "must be a single value, not a list or mapping")),
        };
        if !template::is_template(&s) {
            return Ok(Some((name, s)));
        }
        template::render(&s, &Value::Object(self.vars.clone()))
            .map(|r| Some((name, r)))
            .map_err(|e| self.err(name, e))
    }

    fn string(&self, names: &[&'static str]) -> Result<Option<String>, Error> {
        Ok(self.text(names)?.map(|(_, s)| s))
    }

    fn boolean(&self, names: &[&'static str]) -> Result<Option<bool>, Error> {
        match self.text(names)? {
            None => Ok(None),
            Some((name, s)) => crate::params::parse_bool(&Value::String(s.clone()))
                .map(Some)
                .ok_or_else(|| self.err(name, crate::params::not_a_bool(&Value::String(s)))),
        }
    }
}

impl Host {
    /// Connection settings.
    pub fn connection(&self) -> Result<ConnectionSpec, Error> {
        let v = Vars {
            host: &self.name,
            vars: &self.vars,
            origins: &self.origins,
        };
        let kind = match v.text(&["connection", "ansible_connection"])? {
            None if self.name == "localhost" => ConnectionKind::Local,
            None => ConnectionKind::Ssh,
            Some((_, s)) if s == "ssh" || s == "smart" => ConnectionKind::Ssh,
            Some((_, s)) if s == "local" => ConnectionKind::Local,
            Some((name, other)) => {
                return Err(v.err(
                    name,
                    format!(
                        "connection `{other}` is not supported: kvmforge connects with `ssh` (OpenSSH) or `local`{}",
                        crate::params::did_you_mean_suffix(&crate::params::did_you_mean(
                            &other,
                            ["ssh", "smart", "local"]
                        ))
                    ),
                ))
            }
        };
        for name in [
            "ansible_password",
            "ansible_ssh_pass",
            "ansible_ssh_password",
        ] {
            if v.vars.get(name).is_some_and(|x| !x.is_null()) && kind == ConnectionKind::Ssh {
                return Err(v.err(
                    name,
                    "password logins are not supported: kvmforge logs in with keys (ssh-agent or \
                     ansible_ssh_private_key_file); install a key with ssh-copy-id",
                ));
            }
        }
        for name in ["ansible_private_key", "ansible_ssh_private_key"] {
            if v.vars.get(name).is_some_and(|x| !x.is_null()) {
                return Err(v.err(
                    name,
                    "a private key given as text is not supported: put it in a file and name it in \
                     ansible_ssh_private_key_file",
                ));
            }
        }
        if let Some((name, exe)) = v.text(&["ansible_ssh_executable"])? {
            if exe != "ssh" {
                return Err(v.err(
                    name,
                    format!("`{exe}`: kvmforge always runs the `ssh` found on PATH"),
                ));
            }
        }
        if let Some((name, m)) = v.text(&["ansible_become_method"])? {
            if m != "sudo" {
                return Err(v.err(
                    name,
                    format!(
                        "become method `{m}` is not supported: kvmforge becomes root with sudo{}",
                        crate::params::did_you_mean_suffix(&crate::params::did_you_mean(
                            &m,
                            ["sudo"]
                        ))
                    ),
                ));
            }
        }
        if let Some((name, exe)) = v.text(&["ansible_become_exe"])? {
            if exe != "sudo" && !exe.ends_with("/sudo") {
                return Err(v.err(name, format!("`{exe}`: kvmforge becomes root with sudo")));
            }
        }
        if let Some((name, u)) = v.text(&["ansible_become_user"])? {
            if u != "root" {
                return Err(v.err(
                    name,
                    format!("becoming `{u}` is not supported: kvmforge becomes root"),
                ));
            }
        }
        let port_of = |name: &str, p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| v.err(name, format!("`{p}` is not a port number (1-65535)")))
        };
        let port = match v.text(&["port", "ansible_port", "ansible_ssh_port"])? {
            None => None,
            Some((name, p)) => Some(port_of(name, &p)?),
        };
        let jump = match v.find(&["jump", "ansible_ssh_jump"]) {
            Some((_, Value::Array(a))) => Some(
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => v.string(&["jump", "ansible_ssh_jump"])?,
        };
        let host_key_checking = match v.text(&["host_key_checking"])? {
            Some((name, s)) => Some(match s.as_str() {
                "accept-new" | "strict" | "off" => s,
                other => {
                    let hint = crate::params::did_you_mean(other, ["accept-new", "strict", "off"])
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    return Err(v.err(
                        name,
                        format!("`{other}` is not accept-new, strict or off{hint}"),
                    ));
                }
            }),
            None => v
                .boolean(&["ansible_host_key_checking", "ansible_ssh_host_key_checking"])?
                .map(|b| if b { "strict" } else { "off" }.to_string()),
        };
        let mut spec = ConnectionSpec {
            kind,
            address: v
                .string(&["host", "ansible_host", "ansible_ssh_host"])?
                .unwrap_or_else(|| self.name.clone()),
            user: v.string(&["user", "ansible_user", "ansible_ssh_user"])?,
            port,
            key: v.string(&[
                "key",
                "ansible_private_key_file",
                "ansible_ssh_private_key_file",
            ])?,
            jump,
            become_: v.boolean(&["become", "ansible_become"])?,
            host_key_checking,
            known_hosts: v.string(&["known_hosts", "ansible_ssh_known_hosts_file"])?,
            ssh_config: v.string(&["ssh_config"])?,
            ssh_options: Vec::new(),
            become_password: v
                .string(&[
                    "ansible_become_password",
                    "ansible_become_pass",
                    "ansible_sudo_pass",
                ])?
                .map(Secret::new),
        };
        for name in [
            "ansible_ssh_args",
            "ansible_ssh_common_args",
            "ansible_ssh_extra_args",
        ] {
            let Some((_, text)) = v.text(&[name])? else {
                continue;
            };
            let words = pylit::shlex_split(&text, false)
                .map_err(|e| v.err(name, format!("cannot split `{text}`: {e}")))?;
            let words: Vec<String> = words.into_iter().filter(|w| !w.trim().is_empty()).collect();
            spec.apply_ssh_args(&words).map_err(|e| v.err(name, e))?;
        }
        Ok(spec)
    }
}

impl ConnectionSpec {
    /// Fold ssh command-line arguments (split into words) into the spec, as the words of
    /// `ansible_ssh_common_args` and `ansible_ssh_extra_args` are.
    pub fn apply_ssh_args(&mut self, words: &[String]) -> Result<(), String> {
        for (k, v) in ssh_args_to_options(words)? {
            apply_option(self, &k, &v)?;
        }
        Ok(())
    }
}

/// Fold one `-o Key=Value` into the spec. Settings already made by a variable win (Ansible puts
/// them before these arguments on ssh's command line, and ssh keeps the first value).
fn apply_option(spec: &mut ConnectionSpec, key: &str, value: &str) -> Result<(), String> {
    let unquoted = value.trim().trim_matches('"').to_string();
    match key {
        "User" => {
            spec.user.get_or_insert(unquoted);
        }
        "Port" => {
            if spec.port.is_none() {
                spec.port = Some(
                    unquoted
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("Port `{value}` is not a port number (1-65535)"))?,
                );
            }
        }
        "IdentityFile" => {
            spec.key.get_or_insert(unquoted);
        }
        "ProxyJump" => {
            spec.jump.get_or_insert(unquoted);
        }
        "-F" => {
            spec.ssh_config.get_or_insert(unquoted);
        }
        "UserKnownHostsFile" => {
            spec.known_hosts.get_or_insert(unquoted);
        }
        "StrictHostKeyChecking" => {
            let mode = match unquoted.to_ascii_lowercase().as_str() {
                "yes" | "ask" => "strict",
                "no" | "off" => "off",
                "accept-new" => "accept-new",
                other => {
                    return Err(format!(
                        "StrictHostKeyChecking `{other}` is not yes, no, ask or accept-new"
                    ))
                }
            };
            spec.host_key_checking.get_or_insert(mode.to_string());
        }
        // kvmforge multiplexes its own connections; these would fight it.
        "ControlMaster" | "ControlPath" | "ControlPersist" | "ConnectTimeout" => {}
        "HostName" => return Err("HostName in ssh arguments: set ansible_host instead".into()),
        _ => {
            if !spec
                .ssh_options
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(key))
            {
                spec.ssh_options
                    .push((key.to_string(), value.trim().to_string()));
            }
        }
    }
    Ok(())
}

/// Options kvmforge reads itself, in their canonical spelling (ssh's names are case-blind).
const KNOWN: [&str; 11] = [
    "User",
    "Port",
    "IdentityFile",
    "ProxyJump",
    "ProxyCommand",
    "UserKnownHostsFile",
    "StrictHostKeyChecking",
    "ControlMaster",
    "ControlPath",
    "ControlPersist",
    "ConnectTimeout",
];

fn canonical(key: &str) -> String {
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(key))
        .map(|k| k.to_string())
        .unwrap_or_else(|| key.to_string())
}

/// `-o Key=Value` (or `-oKey=Value`, `-o "Key Value"`) as a pair.
fn option(text: &str) -> Result<(String, String), String> {
    let t = text.trim();
    let split = t
        .find(|c: char| c == '=' || c.is_whitespace())
        .ok_or_else(|| format!("`-o {t}` has no value"))?;
    let (k, rest) = t.split_at(split);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    if k.is_empty() || rest.is_empty() {
        return Err(format!("`-o {t}` is not Option=value"));
    }
    Ok((canonical(k), rest.to_string()))
}

/// Turn ssh command-line arguments (already split into words) into the options they set.
pub fn ssh_args_to_options(words: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        let Some(flags) = w.strip_prefix('-').filter(|f| !f.is_empty()) else {
            return Err(format!(
                "`{w}` is not an ssh option (only options, no host or command, belong here)"
            ));
        };
        let chars: Vec<char> = flags.chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            let with_arg = "oJilpFcmbBEeISLRDWQOw".contains(c);
            let arg = if with_arg {
                let rest: String = chars[j..].iter().collect();
                j = chars.len();
                if !rest.is_empty() {
                    rest
                } else if i < words.len() {
                    i += 1;
                    words[i - 1].clone()
                } else {
                    return Err(format!("`-{c}` needs a value"));
                }
            } else {
                String::new()
            };
            let set = |k: &str, v: &str| (k.to_string(), v.to_string());
            match c {
                'o' => out.push(option(&arg)?),
                'J' => out.push(set("ProxyJump", &arg)),
                'i' => out.push(set("IdentityFile", &arg)),
                'l' => out.push(set("User", &arg)),
                'p' => out.push(set("Port", &arg)),
                'F' => out.push(set("-F", &arg)),
                'c' => out.push(set("Ciphers", &arg)),
                'm' => out.push(set("MACs", &arg)),
                'b' => out.push(set("BindAddress", &arg)),
                'B' => out.push(set("BindInterface", &arg)),
                'I' => out.push(set("PKCS11Provider", &arg)),
                'S' => out.push(set("ControlPath", &arg)),
                'E' | 'e' => {}
                '4' => out.push(set("AddressFamily", "inet")),
                '6' => out.push(set("AddressFamily", "inet6")),
                'A' => out.push(set("ForwardAgent", "yes")),
                'a' => out.push(set("ForwardAgent", "no")),
                'C' => out.push(set("Compression", "yes")),
                'K' => out.push(set("GSSAPIAuthentication", "yes")),
                'k' => out.push(set("GSSAPIDelegateCredentials", "no")),
                'q' => out.push(set("LogLevel", "QUIET")),
                'x' => out.push(set("ForwardX11", "no")),
                'X' => out.push(set("ForwardX11", "yes")),
                'Y' => out.push(set("ForwardX11Trusted", "yes")),
                // Verbosity and terminal allocation do not change where or how a host is reached.
                'v' | 'T' | 't' => {}
                other => {
                    return Err(format!(
                        "`-{other}` is not supported in ssh arguments (kvmforge keeps options that say how to reach the host: -o, -J, -i, -l, -p, -F, ...)"
                    ))
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(vars: Value) -> Host {
        Host {
            name: "h".into(),
            vars: vars.as_object().unwrap().clone(),
            groups: Default::default(),
            origins: Default::default(),
        }
    }

    #[test]
    fn legacy_names_win_as_in_ansible() {
        let c = host(json!({
            "host": "0.0.0.0", "ansible_host": "1.1.1.1", "ansible_ssh_host": "2.2.2.2",
            "ansible_user": "u1", "ansible_ssh_user": "u2", "ansible_port": 1, "ansible_ssh_port": "2",
        }))
        .connection()
        .unwrap();
        assert_eq!(
            (c.address.as_str(), c.user.as_deref(), c.port),
            ("2.2.2.2", Some("u2"), Some(2))
        );
    }

    #[test]
    fn ssh_args_become_options() {
        let c = host(json!({
            "ansible_user": "admin",
            "ansible_ssh_common_args": "-o ProxyCommand=\"ssh -W %h:%p -q jump\" -o UserKnownHostsFile=/kh -o StrictHostKeyChecking=no",
            "ansible_ssh_extra_args": "-l other -p 2200 -J a@b -oIdentitiesOnly=yes -o 'ServerAliveInterval 5' -4",
        }))
        .connection()
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("admin"), "the variable beats -l");
        assert_eq!(c.port, Some(2200));
        assert_eq!(c.jump.as_deref(), Some("a@b"));
        assert_eq!(c.known_hosts.as_deref(), Some("/kh"));
        assert_eq!(c.host_key_checking.as_deref(), Some("off"));
        assert_eq!(
            c.ssh_options,
            vec![
                (
                    "ProxyCommand".to_string(),
                    "ssh -W %h:%p -q jump".to_string()
                ),
                ("IdentitiesOnly".into(), "yes".into()),
                ("ServerAliveInterval".into(), "5".into()),
                ("AddressFamily".into(), "inet".into()),
            ]
        );
    }

    #[test]
    fn unsupported_ways_to_connect_are_errors() {
        for (vars, want) in [
            (
                json!({"ansible_connection": "winrm"}),
                "ansible_connection`: connection `winrm`",
            ),
            (
                json!({"ansible_become_method": "su"}),
                "ansible_become_method`: become method `su`",
            ),
            (
                json!({"ansible_become_user": "postgres"}),
                "becoming `postgres`",
            ),
            (json!({"ansible_ssh_pass": "x"}), "password logins"),
            (
                json!({"ansible_ssh_extra_args": "-L 80:localhost:80"}),
                "`-L` is not supported",
            ),
            (json!({"ansible_port": "22x"}), "`22x` is not a port"),
            (
                json!({"host_key_checking": "stirct"}),
                "did you mean `strict`",
            ),
            (json!({"connection": "sshh"}), "(did you mean `ssh`?)"),
            (
                json!({"ansible_connection": "lcoal"}),
                "(did you mean `local`?)",
            ),
            (
                json!({"ansible_become_method": "sduo"}),
                "(did you mean `sudo`?)",
            ),
            (json!({"ansible_become": "yse"}), "did you mean `yes`?"),
            (
                json!({"ansible_host_key_checking": "Flase"}),
                "did you mean `false`?",
            ),
            (
                json!({"ansible_port": 70000}),
                "`70000` is not a port number (1-65535)",
            ),
            (json!({"port": "0"}), "`0` is not a port number"),
        ] {
            let e = host(vars.clone()).connection().unwrap_err().to_string();
            assert!(e.contains("host `h`") && e.contains(want), "{vars}: {e}");
        }
        assert!(
            host(json!({"ansible_become_method": "sudo", "ansible_become_user": "root"}))
                .connection()
                .is_ok()
        );
    }

    #[test]
    fn templates_and_secrets() {
        let c = host(
            json!({"ansible_host": "{{ inventory_ip }}", "inventory_ip": "10.1.1.1",
                            "ansible_become_password": "s3cret"}),
        )
        .connection()
        .unwrap();
        assert_eq!(c.address, "10.1.1.1");
        assert_eq!(c.become_password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
