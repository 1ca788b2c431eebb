//! `package`: distribution packages installed or removed, with apt or dnf.
//!
//! One probe (the [`Packages`] fact) decides everything: it picks the package manager the host
//! has and reports the installed state of every requested package (plus, for apt, how old the
//! package lists are and, for `latest`, which upgrades the lists offer). The lists are only
//! refreshed when something is going to be installed, so a converged host never touches the
//! network.

use crate::module::{
    shell_quote, Action, ArgError, Change, Fact, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::modules::facts::packages::{Manager, PackageQuery, Packages};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::Value;

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

pub const APT_ENV: &str = "DEBIAN_FRONTEND=noninteractive";
/// Waiting for the dpkg lock (up to 10 minutes) rides out unattended-upgrades on a fresh host.
pub const APT_OPTS: &str = "-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
pub const APT_UPDATE: &str = "apt-get update -q -o DPkg::Lock::Timeout=600 && { touch /var/lib/apt/periodic/update-success-stamp 2>/dev/null || true; }";

/// The state asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Present,
    Absent,
    Latest,
}

/// A `package` task's arguments, typed.
#[derive(Debug, Deserialize)]
pub struct Request {
    name: Vec<String>,
    state: State,
    update_cache: bool,
    cache_valid_time: i64,
    install_recommends: Option<bool>,
}

impl Request {
    /// What the probe asks about: the packages and, for `latest`, their upgrades.
    fn query(&self) -> PackageQuery {
        PackageQuery {
            names: self.name.clone(),
            latest: self.state == State::Latest,
            cache_age: self.update_cache,
        }
    }
}

/// A plain package name, optionally with an architecture: nothing apt or dnf would read as a
/// version, a glob, a file, a group or an option.
fn valid_name(n: &str) -> bool {
    n.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+:~-".contains(c))
}

fn list_value(v: &[String]) -> Value {
    Value::from(v.to_vec())
}

impl Module for Package {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let req: Request = args.parse()?;
        if req.name.is_empty() {
            return Err(ArgError::invalid("name", "name lists no packages").into());
        }
        if let Some(n) = req.name.iter().find(|n| !valid_name(n)) {
            return Err(ArgError::invalid(
                "name",
                format!(
                    "{n:?} is not a package name (versions, globs, paths and groups are not supported)"
                ),
            )
            .into());
        }
        if req.cache_valid_time < 0 {
            return Err(ArgError::invalid(
                "cache_valid_time",
                "cache_valid_time must not be negative",
            )
            .into());
        }
        Ok(req)
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        vec![Packages::probe(&req.query())]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let r = observed.fact::<Packages>(&req.query())?;
        let names = &req.name;
        let state = req.state;
        let apt = match r.manager {
            Manager::Apt => true,
            Manager::Dnf => false,
            Manager::Rpm => {
                return Err(ModuleError::Host(
                    "rpm-based host without dnf: not supported".into(),
                ))
            }
            Manager::None => {
                return Err(ModuleError::Host(
                    "no supported package manager (need apt or dnf)".into(),
                ))
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
        let cache_age = r.cache_age();
        if apt {
            plan = plan.with_data("cache_age", cache_age.map_or(Value::Null, Value::from));
        }
        let refresh = req.update_cache;

        if state == State::Absent {
            // Every installed instance of a requested name, arch-qualified where dpkg does so.
            let mut remove: Vec<String> = Vec::new();
            for n in names {
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
        if state == State::Latest {
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
            Some(age) => age > req.cache_valid_time,
        };

        if apt {
            // Refresh before installing when there are no lists, or when asked and they are old.
            // `latest` with stale lists cannot know what is new until after the refresh.
            let blind_latest = state == State::Latest && refresh && stale;
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
                let recommends = match req.install_recommends {
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
    use crate::module::{ArgErrorKind, CommandOutput, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, req, runs};
    use serde_json::json;

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

    fn observed(r: &Request, out: CommandOutput) -> Observed {
        Observed::new().with_fact::<Packages>(&r.query(), Observation::Command(out))
    }

    fn plan(a: serde_json::Value, stdout: &str) -> Result<Plan, ModuleError> {
        let r = req(&Package, a);
        Package.plan(&r, &observed(&r, CommandOutput::ok(stdout)))
    }

    const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --";

    #[test]
    fn probe_is_the_packages_fact() {
        let query = |names: &[&str], latest| PackageQuery {
            names: names.iter().map(|n| n.to_string()).collect(),
            latest,
            cache_age: false,
        };
        let r = req(&Package, json!({"name": ["qemu-system-x86", "libc6:i386"]}));
        assert_eq!(
            Package.probes(&r),
            vec![Packages::probe(&query(
                &["qemu-system-x86", "libc6:i386"],
                false
            ))]
        );
        let r = req(&Package, json!({"name": "x", "state": "latest"}));
        assert_eq!(
            Package.probes(&r),
            vec![Packages::probe(&query(&["x"], true))]
        );
        // The lists' age is read only for update_cache.
        let text = |r| match &Package.probes(&r)[0] {
            Probe::Command(c) => c.clone(),
            p => panic!("{p:?}"),
        };
        assert!(!text(req(&Package, json!({"name": "x"}))).contains("date"));
        let with_age = text(req(&Package, json!({"name": "x", "update_cache": true})));
        assert!(with_age.contains("date +%s") && with_age.contains("cache_mtime=%Y"));
    }

    /// `stat` prints one line per path that exists: the newest counts.
    #[test]
    fn lists_age_is_the_newest_path() {
        let out = format!(
            "mgr=apt\nnow={NOW}\ncache_mtime={}\ncache_mtime={}\nlists=present\n[installed]\n",
            NOW - 5000,
            NOW - 50
        );
        let p = plan(
            json!({"name": "ovmf", "update_cache": true, "cache_valid_time": 100}),
            &out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec![format!("{INSTALL} ovmf")]);
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
    fn unusable_hosts_fail_clearly() {
        let e = plan(json!({"name": "x"}), "mgr=none\n").unwrap_err();
        assert!(e.to_string().contains("need apt or dnf"), "{e}");
        assert!(plan(json!({"name": "x"}), "mgr=rpm\n[installed]\n").is_err());
        assert!(plan(json!({"name": "x"}), "").is_err());
        let r = req(&Package, json!({"name": "x"}));
        let e = Package
            .plan(&r, &observed(&r, CommandOutput::failed(2, "syntax")))
            .unwrap_err();
        assert_eq!(
            e,
            ModuleError::Host("package probe failed (rc 2): syntax".into())
        );
    }

    #[test]
    fn bad_names_are_caught_before_contact() {
        for n in ["nginx=1.2", "lib*", "-f", "./x.deb", "@core", "a b"] {
            let e = arg_error(&Package, json!({"name": [n]}));
            assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "name"), "{n}");
        }
        let e = arg_error(&Package, json!({"name": []}));
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "name"));
        let e = arg_error(&Package, json!({"name": "x", "cache_valid_time": -1}));
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Invalid, "cache_valid_time")
        );
    }

    #[test]
    fn real_debian_probe_output() {
        let a = json!({"name": ["bash", "libc6", "nonexist", "ovmf"], "state": "latest"});
        let out = fixture("packages/bookworm-latest.txt");
        let p = plan(a, &out).unwrap();
        assert_eq!(runs(&p), vec![format!("{INSTALL} nonexist ovmf bash")]);
        assert_eq!(p.data["cache_age"], json!(882));
        assert_eq!(
            p.data["versions"],
            json!({"bash": "5.2.15-2+b8", "libc6": "2.36-9+deb12u14"})
        );
        let a = json!({"name": ["bash", "libc6"]});
        let out = out.split("[policy]").next().unwrap();
        assert!(!plan(a, out).unwrap().changed());
    }

    #[test]
    fn lab_host_without_lists() {
        let out = fixture("packages/bookworm-no-lists.txt");
        let p = plan(json!({"name": ["bash", "libc6", "less", "dbus"]}), &out).unwrap();
        assert_eq!(
            runs(&p),
            vec![APT_UPDATE.to_string(), format!("{INSTALL} dbus")]
        );
        assert_eq!(
            p.changes[0].summary,
            "update package lists (no package lists)"
        );
        assert_eq!(p.data["cache_age"], Value::Null);
        let p = plan(
            json!({"name": ["less", "dbus", "nonexist"], "state": "absent"}),
            &out,
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec!["DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- less"]
        );
    }
}
