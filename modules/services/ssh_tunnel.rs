//! `ssh_tunnel`: an SSH port forward kept open by systemd, in place of an `ssh -fNL` typed by
//! hand on a jump host, which dies at the next reboot or network hiccup.
//!
//! Each tunnel is one unit, `kvmforge-tunnel-NAME.service`, running `ssh -N` in the foreground
//! with `Restart=always`: systemd is the supervisor that brings it back, at boot and whenever
//! ssh exits (a dropped connection noticed by the keepalives, a forward that cannot bind). The
//! tunnel logs in with a key of its own, generated on the host, whose public half is returned
//! for `register` so a later play can authorize it on the far end (`authorized_key`), and pins
//! the far end's host key in a known_hosts file of its own.

use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, FileKind, Module, ModuleError, ModuleSpec,
    Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::{absolute_path, Presence};
use crate::modules::facts::ssh::SshKey;
use crate::modules::facts::systemd::UnitState;
use crate::modules::files::edit::{ensure_attrs, parent_dir};
use crate::modules::system::unit_file::UnitFile;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use std::net::{Ipv4Addr, Ipv6Addr};

pub struct SshTunnel;

/// Each tunnel's own directory: its default key and its known_hosts.
const TUNNELS_DIR: &str = "/etc/kvmforge/tunnels";
/// The OpenSSH client, where every distribution's package installs it.
const SSH: &str = "/usr/bin/ssh";
/// How long one connection attempt may take before ssh gives up (and systemd retries).
const CONNECT_TIMEOUT: u32 = 10;

static SPEC: ModuleSpec = ModuleSpec {
    name: "ssh_tunnel",
    summary: "An SSH port forward kept open by systemd (ssh -N -L/-R as a service)",
    description: "Makes `ssh -fNL LISTEN:TARGET USER@HOST` a service of the host it runs on: \
the unit `/etc/systemd/system/kvmforge-tunnel-NAME.service` runs `ssh -N` with \
`ExitOnForwardFailure=yes`, `BatchMode=yes`, keepalives (`ServerAliveInterval`, \
`ServerAliveCountMax`) and `Restart=always` after `restart_sec` seconds, without a start limit, \
after `network-online.target`. So the tunnel comes back at boot, when the far end drops it, and \
when its port cannot be bound; the unit is enabled, started, and restarted only when its \
definition (the unit or the key) changes. `state: absent` stops, disables and removes it.\n\n\
`direction: local` (`-L`, the default) listens on this host at `listen` and connects to \
`target` as the far end sees it (`localhost:22` is the far end's own sshd); `remote` (`-R`) \
listens on the far end and connects to `target` as this host sees it. `listen` is `PORT` \
(loopback only, per ssh's GatewayPorts), `ADDRESS:PORT` or `*:PORT` (every address; for \
`remote` the far end's sshd must allow it with `GatewayPorts clientspecified`).\n\n\
The tunnel logs in with its own key: `key`, by default \
`/etc/kvmforge/tunnels/NAME/id_ed25519`, generated on the host when missing \
(`ssh-keygen -t ed25519 -N ''`, mode 0600; the private key never leaves the host). Its public \
key is in the result as `public_key`, on the first run too (read back from the host after it \
is generated), so a later play can authorize it with `authorized_key`. In check mode a key \
that does not exist yet has no public key to report: `public_key` is not set, and a task that \
uses it is skipped as not checkable before the key exists. The far end's host \
key is pinned in `/etc/kvmforge/tunnels/NAME/known_hosts` (`StrictHostKeyChecking=accept-new`: \
learnt on first contact, refused if it ever changes; remove its line to accept a new one). \
`state: absent` also removes that directory (a `key` given elsewhere is kept). Results: `name`, \
`unit`, `key`, `known_hosts`, `public_key`, `listen`, `target`, `via`, `direction`.",
    params: &[
        ParamSpec::required(
            "name",
            ParamKind::Str,
            "The tunnel (letters, digits, `.`, `_`, `-`): its unit is kvmforge-tunnel-NAME.service",
        ),
        ParamSpec::optional(
            "listen",
            ParamKind::Str,
            "Where the forward listens: `PORT`, `ADDRESS:PORT` or `*:PORT` (required with state: present)",
        ),
        ParamSpec::optional(
            "target",
            ParamKind::Str,
            "`HOST:PORT` the forward connects to, as the far end sees it (`remote`: as this host sees it); required with state: present",
        ),
        ParamSpec::optional(
            "via",
            ParamKind::Str,
            "The SSH server carrying the tunnel: `USER@HOST` or `USER@HOST:PORT` (required with state: present)",
        ),
        ParamSpec::with_default(
            "direction",
            ParamKind::Choice(&["local", "remote"]),
            "local",
            "local: listen here (-L); remote: listen on the far end (-R)",
        ),
        ParamSpec::optional(
            "key",
            ParamKind::Str,
            "Private key to log in with, generated when missing (default: /etc/kvmforge/tunnels/NAME/id_ed25519)",
        ),
        ParamSpec::with_default(
            "restart_sec",
            ParamKind::Int,
            "5",
            "Seconds systemd waits before starting ssh again after it exits",
        ),
        ParamSpec::with_default(
            "server_alive_interval",
            ParamKind::Int,
            "15",
            "Seconds between keepalives over the connection (ssh's ServerAliveInterval)",
        ),
        ParamSpec::with_default(
            "server_alive_count_max",
            ParamKind::Int,
            "3",
            "Unanswered keepalives after which ssh drops the connection (and systemd restarts it)",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "absent stops, disables and removes the tunnel",
        ),
    ],
    free_form: None,
    example: r#"# The jump host: a port per KVM host behind it, for tools that cannot hop.
- name: jump-host port 12105 reaches kvm1's sshd
  ssh_tunnel:
    name: kvm1
    listen: "*:12105"
    target: 192.168.121.105:22
    via: root@192.168.121.105
  register: tunnel_kvm1
"#,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Direction {
    Local,
    Remote,
}

#[derive(Debug, Deserialize)]
struct Raw {
    name: String,
    listen: Option<String>,
    target: Option<String>,
    via: Option<String>,
    direction: Direction,
    key: Option<String>,
    restart_sec: i64,
    server_alive_interval: i64,
    server_alive_count_max: i64,
    state: Presence,
}

/// What the unit runs.
#[derive(Debug, Clone, PartialEq)]
struct Forward {
    /// `[ADDRESS:]PORT`, as ssh takes it.
    listen: String,
    /// `HOST:PORT`.
    target: String,
    user: String,
    host: String,
    port: u16,
    direction: Direction,
    restart_sec: u32,
    alive_interval: u32,
    alive_count: u32,
}

/// An `ssh_tunnel` task's arguments, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    name: String,
    key: String,
    /// Only with state: present.
    forward: Option<Forward>,
}

impl Request {
    fn unit_file(&self) -> UnitFile {
        UnitFile::new(format!("kvmforge-tunnel-{}.service", self.name))
    }
    fn dir(&self) -> String {
        format!("{TUNNELS_DIR}/{}", self.name)
    }
    fn known_hosts(&self) -> String {
        format!("{}/known_hosts", self.dir())
    }
    /// The key's directory when it is not the tunnel's own.
    fn key_dir(&self) -> Option<String> {
        parent_dir(&self.key).filter(|d| *d != self.dir())
    }
}

fn invalid(param: &'static str, msg: String) -> ModuleError {
    ArgError::invalid(param, msg).into()
}

/// A word that needs no quoting in a shell nor in a systemd unit, and is no specifier there.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A host as ssh takes it: a name, an IPv4 address, or an IPv6 address in brackets; `*` too
/// where `star` (a listening address).
fn host_part(param: &'static str, host: &str, star: bool) -> Result<(), ModuleError> {
    let ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<Ipv6Addr>().is_ok()
    } else {
        (star && host == "*")
            || host.parse::<Ipv4Addr>().is_ok()
            || (plain(host) && !host.starts_with(['-', '.']))
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            param,
            format!(
                "{param}: {host:?} is not a host name or address (IPv6 in brackets: [fd00::5])"
            ),
        ))
    }
}

fn port_part(param: &'static str, port: &str, whole: &str) -> Result<u16, ModuleError> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(invalid(
            param,
            format!("{param}: {whole:?} needs a port, 1 to 65535, after the last `:`"),
        )),
    }
}

/// `HOST:PORT`, the host in brackets if it is an IPv6 address.
fn host_port(param: &'static str, s: &str, star: bool) -> Result<(String, u16), ModuleError> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(invalid(
            param,
            format!("{param} must be HOST:PORT, got {s:?}"),
        ));
    };
    host_part(param, host, star)?;
    Ok((host.to_string(), port_part(param, port, s)?))
}

fn seconds(param: &'static str, v: i64, max: i64) -> Result<u32, ModuleError> {
    if (1..=max).contains(&v) {
        Ok(v as u32)
    } else {
        Err(invalid(
            param,
            format!("{param} must be 1 to {max}, got {v}"),
        ))
    }
}

impl Module for SshTunnel {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: Raw = args.parse()?;
        if !plain(&raw.name) || raw.name.starts_with(['-', '.']) || raw.name.len() > 64 {
            return Err(invalid(
                "name",
                format!(
                    "name {:?} must be 1 to 64 letters, digits, `.`, `_`, `-`, not starting with `-` or `.` (it names the unit and a directory)",
                    raw.name
                ),
            ));
        }
        let key = match raw.key {
            Some(k) => {
                absolute_path("key", &k)?;
                let ok = k.len() > 1
                    && !k.ends_with('/')
                    && k.split('/').skip(1).all(|part| plain(part) && part != "..");
                if !ok {
                    return Err(invalid(
                        "key",
                        format!("key {k:?} must be a file path of letters, digits, `.`, `_`, `-` and `/`"),
                    ));
                }
                k
            }
            None => format!("{TUNNELS_DIR}/{}/id_ed25519", raw.name),
        };
        let restart_sec = seconds("restart_sec", raw.restart_sec, 3600)?;
        let alive_interval = seconds("server_alive_interval", raw.server_alive_interval, 3600)?;
        let alive_count = seconds("server_alive_count_max", raw.server_alive_count_max, 100)?;
        if raw.state == Presence::Absent {
            return Ok(Request {
                name: raw.name,
                key,
                forward: None,
            });
        }
        let need = |param: &'static str, v: Option<String>, form: &str| {
            v.ok_or_else(|| -> ModuleError {
                ArgError::requires(
                    "state",
                    param,
                    format!("state: present needs {param} ({form})"),
                )
                .into()
            })
        };
        let listen = need("listen", raw.listen, "PORT, ADDRESS:PORT or *:PORT")?;
        let target = need("target", raw.target, "HOST:PORT")?;
        let via = need("via", raw.via, "USER@HOST[:PORT]")?;
        // listen: PORT alone, or ADDRESS:PORT.
        if listen.contains(':') {
            host_port("listen", &listen, true)?;
        } else {
            port_part("listen", &listen, &listen)?;
        }
        host_port("target", &target, false)?;
        let Some((user, server)) = via.split_once('@') else {
            return Err(invalid(
                "via",
                format!("via must be USER@HOST or USER@HOST:PORT, got {via:?}"),
            ));
        };
        if !plain(user) || user.starts_with('-') {
            return Err(invalid("via", format!("via: {user:?} is not a user name")));
        }
        // HOST, HOST:PORT, [V6] or [V6]:PORT.
        let (host, port) = if server.ends_with(']') || !server.contains(':') {
            host_part("via", server, false)?;
            (server.to_string(), 22)
        } else {
            host_port("via", server, false)?
        };
        Ok(Request {
            name: raw.name,
            key,
            forward: Some(Forward {
                listen,
                target,
                user: user.to_string(),
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                direction: raw.direction,
                restart_sec,
                alive_interval,
                alive_count,
            }),
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        let mut probes = req.unit_file().probes();
        probes.push(Probe::File(req.dir()));
        if req.forward.is_some() {
            probes.push(UnitState::probe(&req.unit_file().unit));
            probes.push(SshKey::probe(&req.key));
            probes.extend(req.key_dir().map(Probe::File));
        }
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let unit = req.unit_file();
        let dir = req.dir();
        let mut plan = Plan::ok();
        let Some(fwd) = &req.forward else {
            unit.remove(&mut plan, observed)?;
            let seen = observed.file(&dir)?;
            if seen.exists() {
                plan.change(
                    Change::new(format!("remove {dir} (the tunnel's key and known_hosts)")),
                    [Action::Remove { path: dir.clone() }],
                );
            }
            return Ok(plan
                .with_data("name", req.name.as_str())
                .with_data("unit", unit.unit));
        };
        if !UnitFile::systemd_running(observed)? {
            return Err(ModuleError::Host(
                "this host does not run systemd: the tunnel is kept open by a systemd unit".into(),
            ));
        }
        let private = Attrs {
            mode: Some(0o700),
            owner: Some("root".into()),
            group: Some("root".into()),
        };
        for d in std::iter::once(dir.clone()).chain(req.key_dir()) {
            let seen = observed.file(&d)?;
            match seen.kind {
                FileKind::Absent => plan.change(
                    Change::new(format!("create {d} (0700)")),
                    [Action::MakeDir {
                        path: d.clone(),
                        attrs: private.clone(),
                    }],
                ),
                // Only the tunnel's own directory is made private: a key's may be shared.
                FileKind::Dir if d == dir => ensure_attrs(&mut plan, &d, seen, &private),
                FileKind::Dir => {}
                _ => {
                    return Err(ModuleError::Host(format!(
                        "{d} exists and is not a directory"
                    )))
                }
            }
        }

        // The key: generated when missing, its public half read back for `register`.
        let key = shell_quote(&req.key);
        let read_back = format!("ssh-keygen -y -P '' -f {key}");
        let mut public_key = None;
        let mut new_key = false;
        match &*observed.fact::<SshKey>(&req.key)? {
            SshKey::Absent => {
                plan.change(
                    Change::new(format!(
                        "generate the tunnel's key {} (ed25519; its public key is registered as public_key)",
                        req.key
                    )),
                    [Action::run(format!(
                        "rm -f -- {key}.pub && ssh-keygen -q -t ed25519 -N '' -C {} -f {key} </dev/null",
                        shell_quote(&format!("kvmforge-tunnel-{}", req.name))
                    ))],
                );
                plan.data_from("public_key", read_back);
                new_key = true;
            }
            SshKey::Present {
                problem: Some(why), ..
            } => {
                return Err(ModuleError::Host(format!(
                    "the key {} cannot be used: {why} (a tunnel needs a private key without a passphrase)",
                    req.key
                )))
            }
            SshKey::Present { mode, public, .. } => {
                if mode & 0o077 != 0 {
                    plan.change(
                        Change::new(format!(
                            "{}: mode {mode:04o} -> 0600 (a private key others can read)",
                            req.key
                        )),
                        [Action::SetAttrs {
                            path: req.key.clone(),
                            attrs: Attrs {
                                mode: Some(0o600),
                                ..Attrs::default()
                            },
                        }],
                    );
                }
                public_key = public.clone();
            }
        }

        let text = unit_text(req, fwd);
        let changed = unit.install(
            &mut plan,
            observed,
            &text,
            &format!("keeps the tunnel {} open", req.name),
        )?;
        let state = observed.fact::<UnitState>(&unit.unit)?;
        if changed || new_key {
            let (verb, why) = if state.running() {
                ("restart", "its definition changed")
            } else {
                ("start", "new")
            };
            let why = if state.exists() && !state.running() {
                format!("was {}", state.active_state)
            } else {
                why.to_string()
            };
            plan.change(
                Change::new(format!("{verb} {} ({why})", unit.unit)),
                [unit.systemctl("restart")],
            );
        } else if !state.running() {
            plan.change(
                Change::new(format!("start {} (was {})", unit.unit, state.active_state)),
                [unit.systemctl("start")],
            );
        }

        let mut plan = plan
            .with_data("name", req.name.as_str())
            .with_data("unit", unit.unit.as_str())
            .with_data("key", req.key.as_str())
            .with_data("known_hosts", req.known_hosts())
            .with_data("listen", fwd.listen.as_str())
            .with_data("target", fwd.target.as_str())
            .with_data("via", format!("{}@{}:{}", fwd.user, fwd.host, fwd.port))
            .with_data(
                "direction",
                match fwd.direction {
                    Direction::Local => "local",
                    Direction::Remote => "remote",
                },
            );
        if let Some(k) = public_key {
            plan = plan.with_data("public_key", k);
        }
        Ok(plan)
    }
}

/// The unit: `ssh -N` in the foreground, restarted by systemd whenever it exits.
fn unit_text(req: &Request, f: &Forward) -> String {
    let (flag, arrow) = match f.direction {
        Direction::Local => ("-L", format!("{} -> {}", f.listen, f.target)),
        Direction::Remote => ("-R", format!("{} on {} -> {}", f.listen, f.host, f.target)),
    };
    // A bare IPv6 address is what ssh takes as a destination.
    format!(
        "# Written by kvmforge (ssh_tunnel): keeps the SSH tunnel {name} open.\n\
         # The next run overwrites changes made here: change the playbook instead.\n\
         [Unit]\n\
         Description=SSH tunnel {name}: {arrow} through {user}@{host}:{port}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         # Never give up: a far end that is down for a while is retried every RestartSec.\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         ExecStart={SSH} -N -F /dev/null -i {key} -o IdentitiesOnly=yes \\\n\
         \x20 -o BatchMode=yes -o ExitOnForwardFailure=yes -o ConnectTimeout={CONNECT_TIMEOUT} \\\n\
         \x20 -o ServerAliveInterval={alive} -o ServerAliveCountMax={count} \\\n\
         \x20 -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null \\\n\
         \x20 -p {port} {flag} {listen}:{target} {user}@{host}\n\
         Restart=always\n\
         RestartSec={restart}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        name = req.name,
        user = f.user,
        host = f.host,
        port = f.port,
        key = req.key,
        alive = f.alive_interval,
        count = f.alive_count,
        known = req.known_hosts(),
        listen = f.listen,
        target = f.target,
        restart = f.restart_sec,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::system::unit_file::{SYSTEMD_RUNNING, WANTS_DIR};
    use crate::modules::testing::{arg_error, commands, req, written};
    use serde_json::{json, Value};

    /// The seed's tunnel: jump-host port 12105 to kvm1's sshd, through kvm1 itself.
    fn seed() -> Value {
        json!({"name": "v1", "listen": "*:12105", "target": "192.168.121.105:22",
               "via": "root@192.168.121.105"})
    }

    const PUBLIC: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf1 kvmforge-tunnel-v1";

    fn show(active: &str) -> Observation {
        let load = if active == "none" {
            "not-found"
        } else {
            "loaded"
        };
        let active = if active == "none" { "inactive" } else { active };
        Observation::Command(CommandOutput::ok(&format!(
            "Id=kvmforge-tunnel-v1.service\nLoadState={load}\nActiveState={active}\nSubState=x\nUnitFileState=enabled\nNeedDaemonReload=no\n"
        )))
    }

    fn key_seen(stdout: &str) -> Observation {
        Observation::Command(CommandOutput::ok(stdout))
    }

    /// A host where the module never ran.
    fn fresh(r: &Request) -> Observed {
        let u = r.unit_file();
        Observed::new()
            .with_file(&u.path(), FileState::absent())
            .with_file(&u.wants_path(), FileState::absent())
            .with_file(WANTS_DIR, FileState::dir())
            .with_file(SYSTEMD_RUNNING, FileState::dir())
            .with_file(&r.dir(), FileState::absent())
            .with_fact::<UnitState>(&u.unit, show("none"))
            .with_fact::<SshKey>(&r.key, key_seen("absent\n"))
    }

    /// The same host after a first run: directory, key, unit and link, the tunnel running.
    fn done(r: &Request, unit: &str) -> Observed {
        let u = r.unit_file();
        fresh(r)
            .with_file(&u.path(), FileState::file(unit))
            .with_file(
                &u.wants_path(),
                FileState {
                    link_target: Some(u.path()),
                    ..FileState::file(unit)
                },
            )
            .with_file(&r.dir(), FileState::dir().with_mode(0o700))
            .with_fact::<UnitState>(&u.unit, show("active"))
            .with_fact::<SshKey>(
                &r.key,
                key_seen(&format!("mode 600 regular file\n{PUBLIC}\n")),
            )
    }

    const FIXTURE: &str = include_str!("ssh_tunnel/kvmforge-tunnel-v1.service");

    #[test]
    fn fresh_host_gets_a_key_the_unit_and_a_running_tunnel() {
        let r = req(&SshTunnel, seed());
        let p = SshTunnel.plan(&r, &fresh(&r)).unwrap();
        assert_eq!(written(&p), FIXTURE);
        assert_eq!(
            p.changes.iter().map(|c| c.summary.as_str()).collect::<Vec<_>>(),
            [
                "create /etc/kvmforge/tunnels/v1 (0700)",
                "generate the tunnel's key /etc/kvmforge/tunnels/v1/id_ed25519 (ed25519; its public key is registered as public_key)",
                "create /etc/systemd/system/kvmforge-tunnel-v1.service (keeps the tunnel v1 open)",
                "enable kvmforge-tunnel-v1.service at boot",
                "start kvmforge-tunnel-v1.service (new)",
            ]
        );
        assert_eq!(
            commands(&p),
            [
                "rm -f -- /etc/kvmforge/tunnels/v1/id_ed25519.pub && ssh-keygen -q -t ed25519 -N '' -C kvmforge-tunnel-v1 -f /etc/kvmforge/tunnels/v1/id_ed25519 </dev/null",
                "ssh-keygen -y -P '' -f /etc/kvmforge/tunnels/v1/id_ed25519",
                "systemctl daemon-reload",
                "systemctl restart -- kvmforge-tunnel-v1.service",
            ]
        );
        // The public key comes from the command that reads it back, once it has run.
        let n = p
            .actions
            .iter()
            .position(|a| {
                *a == Action::run("ssh-keygen -y -P '' -f /etc/kvmforge/tunnels/v1/id_ed25519")
            })
            .unwrap();
        assert_eq!(p.data_from_output, vec![("public_key".to_string(), n)]);
        assert!(!p.data.contains_key("public_key"));
        assert_eq!(p.data["via"], json!("root@192.168.121.105:22"));
        assert!(p.actions.contains(&Action::MakeDir {
            path: "/etc/kvmforge/tunnels/v1".into(),
            attrs: Attrs {
                mode: Some(0o700),
                owner: Some("root".into()),
                group: Some("root".into())
            }
        }));
    }

    #[test]
    fn second_run_is_ok_and_reports_the_key() {
        let r = req(&SshTunnel, seed());
        let p = SshTunnel.plan(&r, &done(&r, FIXTURE)).unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        assert!(p.actions.is_empty());
        assert_eq!(p.data["public_key"], json!(PUBLIC));
        // A tunnel between restarts (activating) is left to systemd.
        let o = done(&r, FIXTURE).with_fact::<UnitState>(&r.unit_file().unit, show("activating"));
        assert!(!SshTunnel.plan(&r, &o).unwrap().changed());
    }

    #[test]
    fn restarted_only_when_its_definition_changes() {
        let r = req(&SshTunnel, with(seed(), json!({"restart_sec": 2})));
        let p = SshTunnel.plan(&r, &done(&r, FIXTURE)).unwrap();
        assert_eq!(
            commands(&p),
            [
                "systemctl daemon-reload",
                "systemctl restart -- kvmforge-tunnel-v1.service"
            ]
        );
        assert_eq!(
            p.changes.last().unwrap().summary,
            "restart kvmforge-tunnel-v1.service (its definition changed)"
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert!(d.before.contains("RestartSec=5\n") && d.after.contains("RestartSec=2\n"));
        // Stopped by hand: started, not rewritten.
        let r = req(&SshTunnel, seed());
        let o = done(&r, FIXTURE).with_fact::<UnitState>(&r.unit_file().unit, show("failed"));
        let p = SshTunnel.plan(&r, &o).unwrap();
        assert_eq!(
            commands(&p),
            ["systemctl start -- kvmforge-tunnel-v1.service"]
        );
        assert_eq!(
            p.changes[0].summary,
            "start kvmforge-tunnel-v1.service (was failed)"
        );
    }

    #[test]
    fn remote_forwards_and_keys_of_their_own() {
        let r = req(
            &SshTunnel,
            json!({"name": "back", "listen": "2222", "target": "localhost:22",
                   "via": "ops@[fd00::5]:2200", "direction": "remote",
                   "key": "/root/.ssh/tunnel_key"}),
        );
        let o = fresh(&r).with_file("/root/.ssh", FileState::dir().with_mode(0o700));
        let p = SshTunnel.plan(&r, &o).unwrap();
        let unit = written(&p);
        assert!(
            unit.contains("  -p 2200 -R 2222:localhost:22 ops@fd00::5\n"),
            "{unit}"
        );
        assert!(unit.contains("-i /root/.ssh/tunnel_key "), "{unit}");
        assert!(unit.contains("Description=SSH tunnel back: 2222 on fd00::5 -> localhost:22 through ops@fd00::5:2200\n"), "{unit}");
        assert_eq!(
            SshTunnel.probes(&r).last(),
            Some(&Probe::File("/root/.ssh".into()))
        );
    }

    #[test]
    fn keys_that_cannot_be_used_or_are_too_open() {
        let r = req(&SshTunnel, seed());
        let o = done(&r, FIXTURE).with_fact::<SshKey>(
            &r.key,
            key_seen("mode 644 regular file\nLoad key \"x\": incorrect passphrase supplied to decrypt private key\n"),
        );
        let e = SshTunnel.plan(&r, &o).unwrap_err();
        assert!(e.to_string().contains("without a passphrase"), "{e}");
        let o = done(&r, FIXTURE).with_fact::<SshKey>(
            &r.key,
            key_seen(&format!("mode 644 regular file\n{PUBLIC}\n")),
        );
        let p = SshTunnel.plan(&r, &o).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "/etc/kvmforge/tunnels/v1/id_ed25519: mode 0644 -> 0600 (a private key others can read)"
        );
        // The key itself did not change: no restart.
        assert_eq!(p.changes.len(), 1);
        let o = fresh(&r).with_file(SYSTEMD_RUNNING, FileState::absent());
        assert!(SshTunnel
            .plan(&r, &o)
            .unwrap_err()
            .to_string()
            .contains("does not run systemd"));
    }

    #[test]
    fn absent_stops_disables_and_removes() {
        let r = req(&SshTunnel, seed());
        let gone = req(&SshTunnel, json!({"name": "v1", "state": "absent"}));
        let p = SshTunnel.plan(&gone, &done(&r, FIXTURE)).unwrap();
        let u = r.unit_file();
        assert_eq!(
            p.actions,
            vec![
                Action::Remove {
                    path: u.wants_path()
                },
                Action::run("systemctl stop -- kvmforge-tunnel-v1.service"),
                Action::Remove { path: u.path() },
                Action::run("systemctl daemon-reload"),
                Action::Remove {
                    path: "/etc/kvmforge/tunnels/v1".into()
                },
            ]
        );
        assert!(!SshTunnel.plan(&gone, &fresh(&r)).unwrap().changed());
        assert!(!SshTunnel.probes(&gone).contains(&SshKey::probe(&r.key)));
    }

    fn with(mut base: Value, extra: Value) -> Value {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn bad_arguments_name_their_parameter() {
        let invalid = |extra: Value, param: &str, says: &str| {
            let e = arg_error(&SshTunnel, with(seed(), extra.clone()));
            assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, param), "{extra}");
            assert!(e.msg.contains(says), "{extra}: {}", e.msg);
        };
        invalid(json!({"name": "a b"}), "name", "letters, digits");
        invalid(json!({"name": "-x"}), "name", "not starting");
        invalid(json!({"listen": "*:0"}), "listen", "1 to 65535");
        invalid(json!({"listen": "http"}), "listen", "1 to 65535");
        invalid(json!({"listen": "a b:80"}), "listen", "not a host name");
        invalid(json!({"target": "192.168.121.105"}), "target", "HOST:PORT");
        invalid(json!({"target": "*:22"}), "target", "not a host name");
        invalid(
            json!({"target": "[fd00::zz]:22"}),
            "target",
            "not a host name",
        );
        invalid(json!({"via": "192.168.121.105"}), "via", "USER@HOST");
        invalid(
            json!({"via": "-oProxyCommand=x@h"}),
            "via",
            "not a user name",
        );
        invalid(json!({"via": "root@h:99999"}), "via", "1 to 65535");
        invalid(
            json!({"via": "root@-oProxyCommand=x"}),
            "via",
            "not a host name",
        );
        invalid(json!({"key": "keys/id"}), "key", "absolute path");
        invalid(json!({"key": "/etc/my key"}), "key", "letters, digits");
        invalid(json!({"key": "/etc/../root/id"}), "key", "letters, digits");
        invalid(json!({"restart_sec": 0}), "restart_sec", "1 to 3600, got 0");
        invalid(
            json!({"server_alive_interval": -1}),
            "server_alive_interval",
            "got -1",
        );
        invalid(
            json!({"server_alive_count_max": 0}),
            "server_alive_count_max",
            "got 0",
        );
        for missing in ["listen", "target", "via"] {
            let mut a = seed();
            a.as_object_mut().unwrap().remove(missing);
            let e = arg_error(&SshTunnel, a);
            assert_eq!(
                (e.kind, e.param),
                (
                    ArgErrorKind::Requires {
                        other: missing_param(missing)
                    },
                    "state"
                )
            );
        }
        // Removal needs only the name; IPv6 and bare ports are fine.
        req(&SshTunnel, json!({"name": "v1", "state": "absent"}));
        req(
            &SshTunnel,
            with(
                seed(),
                json!({"listen": "[::1]:8080", "target": "[fd00::5]:22"}),
            ),
        );
    }

    fn missing_param(p: &str) -> &'static str {
        match p {
            "listen" => "listen",
            "target" => "target",
            _ => "via",
        }
    }
}
