//! `package`: distribution packages installed or removed, with apt or dnf.
//!
//! One probe decides everything: it picks the package manager the host has and reports the
//! installed state of every requested package (plus, for apt, how old the package lists are and,
//! for `latest`, which upgrades the lists offer). The lists are only refreshed when something is
//! going to be installed, so a converged host never touches the network.

use crate::module::{
    shell_quote, Action, Change, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext,
    Probe,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde_json::Value;
use std::collections::BTreeMap;

pub struct Package;

static SPEC: ModuleSpec = ModuleSpec {
    name: "package",
    summary: "Ensure distribution packages are installed, up to date or removed (apt or dnf)",
    description:
        "Uses apt on hosts with apt-get and dpkg-query, else dnf on hosts with rpm; other \
hosts fail. The installed state comes from dpkg-query (only fully installed packages count; \
removed packages with leftover configuration count as absent) or rpm. `name` takes package names \
only: no versions, globs, files or groups; an architecture may be given (`libc6:i386`, \
`glibc.i686`). Name real packages, not virtual ones (`mail-transport-agent`): a virtual name is \
never found installed, so it would be installed on every run.\n\n\
`present` installs the missing packages in one command, `absent` removes the installed ones \
(`apt-get remove`, `dnf remove`: configuration files are kept), `latest` also upgrades installed \
packages whose candidate version (from the host's current package lists: `apt-cache policy`, \
`dnf repoquery --upgrades` from the metadata cache) differs; held apt packages are not upgraded. \
apt runs non-interactively, waits up to 10 minutes for the dpkg lock (e.g. while \
unattended-upgrades runs) and keeps changed configuration files (`--force-confdef \
--force-confold`).\n\n\
The apt package lists are refreshed (`apt-get update`) only when something is to be installed, \
and then only when there are no lists at all or `update_cache` is true and the lists are older \
than `cache_valid_time` seconds (age: the newest of /var/lib/apt/lists and \
/var/lib/apt/periodic/update-success-stamp, which the refresh touches). With `latest`, \
`update_cache` and stale lists, the lists are refreshed and all named packages are passed to \
`apt-get install`, which is reported as a change since the outcome is only known after the \
refresh. With dnf, `update_cache` adds `--refresh` to the commands that run; dnf expires its \
metadata itself. Results: `manager`, `installed`, `missing`, and what was acted on.",
    params: &[
        ParamSpec::required("name", ParamKind::List, "Package names")
            .aliases(&["pkg", "names", "package"]),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent", "latest"]),
            "present",
            "Wanted state",
        ),
        ParamSpec::with_default(
            "update_cache",
            ParamKind::Bool,
            "false",
            "Refresh package lists older than cache_valid_time before installing",
        )
        .aliases(&["update-cache"]),
        ParamSpec::with_default(
            "cache_valid_time",
            ParamKind::Int,
            "3600",
            "Age in seconds under which apt lists count as fresh",
        ),
        ParamSpec::optional(
            "install_recommends",
            ParamKind::Bool,
            "apt: install recommended packages (default: apt's setting)",
        ),
    ],
    free_form: None,
    example: r#"- name: KVM and libvirt
  package:
    name: [qemu-system-x86, libvirt-daemon-system, bridge-utils]
    update_cache: true
"#,
};

const APT_ENV: &str = "DEBIAN_FRONTEND=noninteractive";
/// Waiting for the dpkg lock (up to 10 minutes) rides out unattended-upgrades on a fresh host.
const APT_OPTS: &str = "-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
const APT_UPDATE: &str = "apt-get update -q -o DPkg::Lock::Timeout=600 && { touch /var/lib/apt/periodic/update-success-stamp 2>/dev/null || true; }";

fn names(args: &Args) -> Result<Vec<String>, ModuleError> {
    let names = args.list("name");
    if names.is_empty() {
        return Err(ModuleError::Args("name lists no packages".into()));
    }
    for n in &names {
        let ok = n
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.+:~-".contains(c));
        if !ok {
            return Err(ModuleError::Args(format!(
                "{n:?} is not a package name (versions, globs, paths and groups are not supported)"
            )));
        }
    }
    if args.int("cache_valid_time").is_some_and(|t| t < 0) {
        return Err(ModuleError::Args(
            "cache_valid_time must not be negative".into(),
        ));
    }
    Ok(names)
}

/// The probe: which manager, the installed state of each package, apt list age and, for
/// `latest`, the upgrade candidates. Sections are introduced by `[name]` lines; every tool's
/// "not found" exit is tolerated so a rc other than 0 means the probe itself broke.
fn probe_cmd(names: &[String], latest: bool) -> String {
    let n = names
        .iter()
        .map(|s| shell_quote(s))
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = String::from("LC_ALL=C; export LC_ALL; ");
    s += "if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then ";
    s += "echo mgr=apt; echo now=$(date +%s); ";
    s += "echo cache_mtime=$(stat -c %Y /var/lib/apt/lists /var/lib/apt/periodic/update-success-stamp 2>/dev/null | sort -n | tail -n 1); ";
    s += "for f in /var/lib/apt/lists/*_Packages*; do [ -e \"$f\" ] && echo lists=present; break; done; ";
    s += "echo '[installed]'; ";
    s += &format!(
        "dpkg-query -W -f='${{binary:Package}}\\t${{Package}}\\t${{Architecture}}\\t${{db:Status-Abbrev}}\\t${{Version}}\\n' -- {n} 2>/dev/null || true; "
    );
    if latest {
        s += &format!("echo '[policy]'; apt-cache policy -- {n} 2>/dev/null || true; ");
    }
    s += "elif command -v rpm >/dev/null 2>&1; then ";
    s += "if command -v dnf >/dev/null 2>&1; then echo mgr=dnf; else echo mgr=rpm; fi; ";
    s += "echo '[installed]'; ";
    s += &format!("rpm -q --qf '%{{NAME}}.%{{ARCH}}\\t%{{NAME}}\\t%{{ARCH}}\\tii\\t%{{VERSION}}-%{{RELEASE}}\\n' -- {n} 2>/dev/null || true; ");
    if latest {
        s += &format!(
            "echo '[upgrades]'; dnf -q -C repoquery --upgrades --qf '%{{name}}.%{{arch}}\\n' -- {n} 2>/dev/null || true; "
        );
    }
    s += "else echo mgr=none; fi";
    s
}

/// One package instance dpkg or rpm knows about.
#[derive(Debug, Clone, PartialEq)]
struct Instance {
    /// The name to pass to the package manager for exactly this instance (`libc6:amd64`,
    /// `glibc.x86_64`, or just `bash` for a package dpkg does not qualify).
    id: String,
    name: String,
    arch: String,
    /// dpkg's abbreviated status (`ii`, `rc`, `hi`, ...); always `ii` for rpm.
    status: String,
    version: String,
}

impl Instance {
    /// Fully installed.
    fn installed(&self) -> bool {
        self.status.chars().nth(1) == Some('i')
    }
    /// Anything on disk beyond configuration files (half-installed counts: remove cleans it).
    fn on_disk(&self) -> bool {
        !matches!(self.status.chars().nth(1), Some('n' | 'c') | None)
    }
    fn held(&self) -> bool {
        self.status.starts_with('h')
    }
    /// Does this instance answer the request `req` (`name`, `name:arch` or `name.arch`)?
    fn matches(&self, req: &str) -> bool {
        req == self.name
            || req == self.id
            || req == format!("{}:{}", self.name, self.arch)
            || req == format!("{}.{}", self.name, self.arch)
    }
}

#[derive(Debug, Default)]
struct Report {
    mgr: String,
    now: Option<i64>,
    cache_mtime: Option<i64>,
    lists: bool,
    instances: Vec<Instance>,
    /// apt-cache policy: name → (installed, candidate).
    policy: BTreeMap<String, (String, String)>,
    /// dnf: `name.arch` of packages with an upgrade available.
    upgrades: Vec<String>,
}

fn parse(out: &str) -> Report {
    let mut r = Report::default();
    let mut section = "";
    let mut current: Option<String> = None;
    for line in out.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = match s {
                "installed" => "installed",
                "policy" => "policy",
                "upgrades" => "upgrades",
                _ => "",
            };
            continue;
        }
        match section {
            "" => match line.split_once('=') {
                Some(("mgr", v)) => r.mgr = v.trim().to_string(),
                Some(("now", v)) => r.now = v.trim().parse().ok(),
                Some(("cache_mtime", v)) => r.cache_mtime = v.trim().parse().ok(),
                Some(("lists", "present")) => r.lists = true,
                _ => {}
            },
            "installed" => {
                let f: Vec<&str> = line.split('\t').collect();
                if let [id, name, arch, status, version] = f[..] {
                    r.instances.push(Instance {
                        id: id.into(),
                        name: name.into(),
                        arch: arch.into(),
                        status: status.trim().into(),
                        version: version.into(),
                    });
                }
            }
            "policy" => {
                if !line.starts_with(' ') {
                    current = line.strip_suffix(':').map(str::to_string);
                    continue;
                }
                let Some(pkg) = &current else { continue };
                let entry = r.policy.entry(pkg.clone()).or_default();
                if let Some(v) = line.trim().strip_prefix("Installed:") {
                    entry.0 = v.trim().to_string();
                } else if let Some(v) = line.trim().strip_prefix("Candidate:") {
                    entry.1 = v.trim().to_string();
                }
            }
            "upgrades" => {
                let l = line.trim();
                let l = l.strip_suffix("\\n").unwrap_or(l);
                if !l.is_empty() {
                    r.upgrades.push(l.to_string());
                }
            }
            _ => {}
        }
    }
    r
}

impl Report {
    fn of<'a>(&'a self, req: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.matches(req))
    }
    fn installed(&self, req: &str) -> bool {
        self.of(req).any(Instance::installed)
    }
    /// An upgrade `latest` should install, or why not (`Err(note)`).
    fn upgradable(&self, req: &str) -> Result<bool, String> {
        if self.mgr == "apt" {
            let base = req.split(':').next().unwrap_or(req);
            let Some((inst, cand)) = self.policy.get(req).or_else(|| self.policy.get(base)) else {
                return Ok(false);
            };
            let newer = inst != cand && cand != "(none)" && !cand.is_empty();
            if newer && self.of(req).any(Instance::held) {
                return Err(format!("{req} is held at {inst} ({cand} available)"));
            }
            Ok(newer)
        } else {
            Ok(self
                .upgrades
                .iter()
                .any(|u| u == req || u.rsplit_once('.').is_some_and(|(name, _)| name == req)))
        }
    }
}

fn list_value(v: &[String]) -> Value {
    Value::from(v.to_vec())
}

impl Module for Package {
    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn probes(&self, args: &Args, _ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError> {
        let names = names(args)?;
        Ok(vec![Probe::Command(probe_cmd(
            &names,
            args.req_str("state") == "latest",
        ))])
    }

    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        _ctx: &PlanContext,
    ) -> Result<Plan, ModuleError> {
        let names = names(args)?;
        let state = args.req_str("state");
        let cmd = probe_cmd(&names, state == "latest");
        let out = observed.command(&cmd)?;
        if out.rc != 0 {
            return Err(ModuleError::Host(format!(
                "package probe failed (rc {}): {}",
                out.rc,
                out.stderr.trim()
            )));
        }
        let r = parse(&out.stdout);
        let apt = match r.mgr.as_str() {
            "apt" => true,
            "dnf" => false,
            "rpm" => {
                return Err(ModuleError::Host(
                    "rpm-based host without dnf: not supported".into(),
                ))
            }
            "none" => {
                return Err(ModuleError::Host(
                    "no supported package manager (need apt or dnf)".into(),
                ))
            }
            _ => {
                return Err(ModuleError::Host(format!(
                    "unexpected package probe output: {:?}",
                    out.stdout.trim()
                )))
            }
        };

        let installed: Vec<String> = names.iter().filter(|n| r.installed(n)).cloned().collect();
        let missing: Vec<String> = names.iter().filter(|n| !r.installed(n)).cloned().collect();
        let versions: serde_json::Map<String, Value> = installed
            .iter()
            .filter_map(|n| {
                r.of(n)
                    .find(|i| i.installed())
                    .map(|i| (n.clone(), Value::from(i.version.clone())))
            })
            .collect();
        let mut plan = Plan::ok()
            .with_data("manager", if apt { "apt" } else { "dnf" })
            .with_data("versions", versions)
            .with_data("installed", list_value(&installed))
            .with_data("missing", list_value(&missing));
        let cache_age = match (r.now, r.cache_mtime) {
            (Some(now), Some(m)) if r.lists => Some(now - m),
            _ => None,
        };
        if apt {
            plan = plan.with_data("cache_age", cache_age.map_or(Value::Null, Value::from));
        }
        let refresh = args.bool("update_cache");

        if state == "absent" {
            // Every installed instance of a requested name, arch-qualified where dpkg does so.
            let mut remove: Vec<String> = Vec::new();
            for n in &names {
                for i in r.of(n).filter(|i| i.on_disk()) {
                    if !remove.contains(&i.id) {
                        remove.push(i.id.clone());
                    }
                }
            }
            if !remove.is_empty() {
                let q = quoted(&remove);
                let cmd = if apt {
                    format!("{APT_ENV} apt-get remove {APT_OPTS} -- {q}")
                } else {
                    format!("dnf remove -y -q -- {q}")
                };
                plan.change(
                    Change::new(format!("remove {}", remove.join(", "))),
                    [Action::run(cmd)],
                );
            }
            return Ok(plan.with_data("removed", list_value(&remove)));
        }

        let mut upgrade = Vec::new();
        let mut notes = Vec::new();
        if state == "latest" {
            for n in &installed {
                match r.upgradable(n) {
                    Ok(true) => upgrade.push(n.clone()),
                    Ok(false) => {}
                    Err(note) => notes.push(note),
                }
            }
        }
        let stale = match cache_age {
            None => true,
            Some(age) => age > args.int("cache_valid_time").unwrap_or(3600),
        };

        if apt {
            // Refresh before installing when there are no lists, or when asked and they are old.
            // `latest` with stale lists cannot know what is new until after the refresh.
            let blind_latest = state == "latest" && refresh && stale;
            let targets: Vec<String> = if blind_latest {
                names.clone()
            } else {
                missing.iter().chain(upgrade.iter()).cloned().collect()
            };
            if !targets.is_empty() {
                let no_lists = !r.lists;
                if no_lists || (refresh && stale) {
                    let why = match cache_age {
                        _ if no_lists => "no package lists".to_string(),
                        Some(age) => format!("lists are {age}s old"),
                        None => "lists age unknown".to_string(),
                    };
                    plan.change(
                        Change::new(format!("update package lists ({why})")),
                        [Action::run(APT_UPDATE)],
                    );
                    plan = plan.with_data("cache_updated", true);
                }
                let recommends = match args.opt_bool("install_recommends") {
                    Some(true) => " -o APT::Install-Recommends=true",
                    Some(false) => " -o APT::Install-Recommends=false",
                    None => "",
                };
                let cmd = format!(
                    "{APT_ENV} apt-get install {APT_OPTS}{recommends} -- {}",
                    quoted(&targets)
                );
                let summary = if blind_latest {
                    format!(
                        "install or upgrade to the newest version: {}",
                        targets.join(", ")
                    )
                } else {
                    install_summary(&missing, &upgrade)
                };
                plan.change(Change::new(summary), [Action::run(cmd)]);
            }
        } else {
            let refresh_flag = if refresh { " --refresh" } else { "" };
            let mut actions = Vec::new();
            if !missing.is_empty() {
                actions.push(Action::run(format!(
                    "dnf install -y -q{refresh_flag} -- {}",
                    quoted(&missing)
                )));
            }
            if !upgrade.is_empty() {
                actions.push(Action::run(format!(
                    "dnf upgrade -y -q{refresh_flag} -- {}",
                    quoted(&upgrade)
                )));
            }
            if !actions.is_empty() {
                plan.change(Change::new(install_summary(&missing, &upgrade)), actions);
            }
        }
        if !notes.is_empty() {
            plan.msg = Some(notes.join("; "));
        }
        Ok(plan.with_data("upgraded", list_value(&upgrade)))
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|s| shell_quote(s))
        .collect::<Vec<_>>()
        .join(" ")
}

fn install_summary(missing: &[String], upgrade: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("install {}", missing.join(", ")));
    }
    if !upgrade.is_empty() {
        parts.push(format!("upgrade {}", upgrade.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use serde_json::json;

    fn args(v: serde_json::Value) -> Args {
        Args::from_json(SPEC.params, v).unwrap()
    }

    const NOW: i64 = 1_700_000_000;

    /// Probe output of an apt host whose lists are `age` seconds old (`None`: no lists).
    fn apt(age: Option<i64>, dpkg: &[&str]) -> String {
        let mut s = format!("mgr=apt\nnow={NOW}\n");
        if let Some(a) = age {
            s += &format!("cache_mtime={}\nlists=present\n", NOW - a);
        } else {
            s += &format!("cache_mtime={}\n", NOW - 10);
        }
        s += "[installed]\n";
        for l in dpkg {
            s += l;
            s.push('\n');
        }
        s
    }

    fn plan(a: serde_json::Value, stdout: &str) -> Result<Plan, ModuleError> {
        let a = args(a);
        let cmd = probe_cmd(&a.list("name"), a.req_str("state") == "latest");
        let obs = Observed::new().with_command(&cmd, CommandOutput::ok(stdout));
        Package.plan(&a, &obs, &PlanContext::default())
    }

    fn runs(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Run { cmd, .. } => cmd.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --";

    #[test]
    fn probe_quotes_names_and_branches_on_the_manager() {
        let a = args(json!({"name": ["qemu-system-x86", "libc6:i386"]}));
        let probes = Package.probes(&a, &PlanContext::default()).unwrap();
        let [Probe::Command(c)] = &probes[..] else {
            panic!()
        };
        assert!(
            c.contains("-- qemu-system-x86 libc6:i386 2>/dev/null || true"),
            "{c}"
        );
        assert!(c.contains("-f='${binary:Package}\\t${Package}"), "{c}");
        assert!(c.contains("elif command -v rpm"), "{c}");
        assert!(!c.contains("apt-cache policy"), "{c}");
        let a = args(json!({"name": "x", "state": "latest"}));
        let [Probe::Command(c)] = &Package.probes(&a, &PlanContext::default()).unwrap()[..] else {
            panic!()
        };
        assert!(
            c.contains("apt-cache policy -- x") && c.contains("repoquery --upgrades"),
            "{c}"
        );
    }

    #[test]
    fn fresh_host_installs_missing_without_update_when_lists_are_fresh() {
        let out = apt(Some(100), &["bash\tbash\tamd64\tii \t5.2"]);
        let p = plan(
            json!({"name": ["bash", "qemu-system-x86", "ovmf"], "update_cache": true}),
            &out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec![format!("{INSTALL} qemu-system-x86 ovmf")]);
        assert_eq!(p.changes[0].summary, "install qemu-system-x86, ovmf");
        assert_eq!(p.data["missing"], json!(["qemu-system-x86", "ovmf"]));
        assert_eq!(p.data["installed"], json!(["bash"]));
        assert_eq!(p.data["versions"], json!({"bash": "5.2"}));
        assert_eq!(p.data["cache_age"], json!(100));
    }

    #[test]
    fn stale_or_missing_lists_are_refreshed_before_installing() {
        let p = plan(
            json!({"name": "ovmf", "update_cache": true}),
            &apt(Some(7200), &[]),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec![APT_UPDATE.to_string(), format!("{INSTALL} ovmf")]
        );
        assert_eq!(
            p.changes[0].summary,
            "update package lists (lists are 7200s old)"
        );
        // No lists at all: refreshed even without update_cache.
        let p = plan(json!({"name": "ovmf"}), &apt(None, &[])).unwrap();
        assert_eq!(
            runs(&p),
            vec![APT_UPDATE.to_string(), format!("{INSTALL} ovmf")]
        );
        // Old lists without update_cache: installed from what is there.
        let p = plan(
            json!({"name": "ovmf", "cache_valid_time": 60}),
            &apt(Some(7200), &[]),
        )
        .unwrap();
        assert_eq!(runs(&p), vec![format!("{INSTALL} ovmf")]);
    }

    #[test]
    fn converged_host_is_ok_and_never_refreshes() {
        let out = apt(
            None,
            &[
                "libc6:amd64\tlibc6\tamd64\tii \t2.36",
                "ovmf\tovmf\tall\thi \t1",
            ],
        );
        let p = plan(
            json!({"name": ["libc6", "ovmf"], "update_cache": true}),
            &out,
        )
        .unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        let p = plan(json!({"name": ["libc6:amd64"]}), &out).unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn config_files_only_counts_as_missing_and_install_recommends_is_passed() {
        let out = apt(Some(1), &["ovmf\tovmf\tall\trc \t1"]);
        let p = plan(json!({"name": "ovmf", "install_recommends": false}), &out).unwrap();
        assert_eq!(
            runs(&p),
            vec!["DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o APT::Install-Recommends=false -- ovmf"]
        );
    }

    #[test]
    fn absent_removes_every_installed_instance() {
        let out = apt(
            Some(1),
            &[
                "libfoo:amd64\tlibfoo\tamd64\tii \t1",
                "libfoo:i386\tlibfoo\ti386\tiU \t1",
                "bar\tbar\tall\trc \t1",
            ],
        );
        let p = plan(
            json!({"name": ["libfoo", "bar", "baz"], "state": "absent"}),
            &out,
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec!["DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- libfoo:amd64 libfoo:i386"]
        );
        let out = apt(Some(1), &["bar\tbar\tall\trc \t1"]);
        assert!(
            !plan(json!({"name": ["bar", "baz"], "state": "absent"}), &out)
                .unwrap()
                .changed()
        );
    }

    #[test]
    fn latest_upgrades_from_current_lists() {
        let mut out = apt(
            Some(10),
            &["bash\tbash\tamd64\tii \t5.2-1", "vim\tvim\tamd64\thi \t9.0"],
        );
        out += "[policy]\nbash:\n  Installed: 5.2-1\n  Candidate: 5.2-2\n  Version table:\n     5.2-2 500\n";
        out += "vim:\n  Installed: 9.0\n  Candidate: 9.1\n";
        let p = plan(
            json!({"name": ["bash", "vim", "ovmf"], "state": "latest", "update_cache": true}),
            &out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec![format!("{INSTALL} ovmf bash")]);
        assert_eq!(p.changes[0].summary, "install ovmf; upgrade bash");
        assert!(p.msg.unwrap().contains("vim is held"));
        let mut out = apt(Some(10), &["bash\tbash\tamd64\tii \t5.2-2"]);
        out += "[policy]\nbash:\n  Installed: 5.2-2\n  Candidate: 5.2-2\n";
        assert!(!plan(json!({"name": "bash", "state": "latest"}), &out)
            .unwrap()
            .changed());
    }

    #[test]
    fn latest_with_stale_lists_and_update_cache_refreshes_and_installs_all() {
        let mut out = apt(Some(99999), &["bash\tbash\tamd64\tii \t5.2-2"]);
        out += "[policy]\nbash:\n  Installed: 5.2-2\n  Candidate: 5.2-2\n";
        let p = plan(
            json!({"name": "bash", "state": "latest", "update_cache": true}),
            &out,
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec![APT_UPDATE.to_string(), format!("{INSTALL} bash")]
        );
    }

    #[test]
    fn dnf_host() {
        let out = "mgr=dnf\n[installed]\npackage qemu-kvm is not installed\nbash.x86_64\tbash\tx86_64\tii\t5.1-9\n";
        let p = plan(
            json!({"name": ["bash", "qemu-kvm"], "update_cache": true}),
            out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["dnf install -y -q --refresh -- qemu-kvm"]);
        assert_eq!(p.data["manager"], json!("dnf"));
        assert!(!p.data.contains_key("cache_age"));
        let p = plan(
            json!({"name": ["bash", "glibc.i686"], "state": "absent"}),
            out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["dnf remove -y -q -- bash.x86_64"]);
        let out =
            "mgr=dnf\n[installed]\nbash.x86_64\tbash\tx86_64\tii\t5.1-9\n[upgrades]\nbash.x86_64\n";
        let p = plan(json!({"name": ["bash"], "state": "latest"}), out).unwrap();
        assert_eq!(runs(&p), vec!["dnf upgrade -y -q -- bash"]);
        let out = "mgr=dnf\n[installed]\nbash.x86_64\tbash\tx86_64\tii\t5.1-9\n[upgrades]\n";
        assert!(!plan(json!({"name": ["bash"], "state": "latest"}), out)
            .unwrap()
            .changed());
    }

    #[test]
    fn probe_runs_in_a_real_shell() {
        let cmd = probe_cmd(&["sh".into(), "no-such-package-kf".into()], true);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = parse(&String::from_utf8_lossy(&out.stdout));
        assert!(
            ["apt", "dnf", "rpm", "none"].contains(&r.mgr.as_str()),
            "{r:?}"
        );
        assert!(!r.installed("no-such-package-kf"));
    }

    #[test]
    fn unusable_hosts_fail_clearly() {
        let e = plan(json!({"name": "x"}), "mgr=none\n").unwrap_err();
        assert!(e.to_string().contains("need apt or dnf"), "{e}");
        assert!(plan(json!({"name": "x"}), "mgr=rpm\n[installed]\n").is_err());
        assert!(plan(json!({"name": "x"}), "").is_err());
        let a = args(json!({"name": "x"}));
        let obs = Observed::new().with_command(
            &probe_cmd(&a.list("name"), false),
            CommandOutput::failed(2, "syntax"),
        );
        assert!(matches!(
            Package.plan(&a, &obs, &PlanContext::default()),
            Err(ModuleError::Host(_))
        ));
    }

    #[test]
    fn bad_names_are_caught_before_contact() {
        for n in ["nginx=1.2", "lib*", "-f", "./x.deb", "@core", "a b"] {
            let a = args(json!({"name": [n]}));
            assert!(
                matches!(
                    Package.probes(&a, &PlanContext::default()),
                    Err(ModuleError::Args(_))
                ),
                "{n}"
            );
        }
        let a = args(json!({"name": []}));
        assert!(Package.probes(&a, &PlanContext::default()).is_err());
        let a = args(json!({"name": "x", "cache_valid_time": -1}));
        assert!(Package.probes(&a, &PlanContext::default()).is_err());
    }

    /// Verbatim output of the `latest` probe on a Debian 12 host.
    const DEBIAN_LATEST: &str = "mgr=apt
now=1795314000
cache_mtime=1795313118
lists=present
[installed]
bash\tbash\tamd64\tii \t5.2.15-2+b8
libc6:amd64\tlibc6\tamd64\tii \t2.36-9+deb12u14
[policy]
bash:
  Installed: 5.2.15-2+b8
  Candidate: 5.2.15-2+b13
  Version table:
     5.2.15-2+b13 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 5.2.15-2+b8 100
        100 /var/lib/dpkg/status
libc6:
  Installed: 2.36-9+deb12u14
  Candidate: 2.36-9+deb12u14
  Version table:
 *** 2.36-9+deb12u14 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
ovmf:
  Installed: (none)
  Candidate: 2022.11-6+deb12u2
  Version table:
     2022.11-6+deb12u2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
";

    #[test]
    fn real_debian_probe_output() {
        let a = json!({"name": ["bash", "libc6", "nonexist", "ovmf"], "state": "latest"});
        let p = plan(a, DEBIAN_LATEST).unwrap();
        assert_eq!(runs(&p), vec![format!("{INSTALL} nonexist ovmf bash")]);
        assert_eq!(p.data["cache_age"], json!(882));
        assert_eq!(
            p.data["versions"],
            json!({"bash": "5.2.15-2+b8", "libc6": "2.36-9+deb12u14"})
        );
        let a = json!({"name": ["bash", "libc6"]});
        let out = DEBIAN_LATEST.split("[policy]").next().unwrap();
        assert!(!plan(a, out).unwrap().changed());
    }
}
