//! Packages: which package manager a host has and what its database says about some packages.

use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, Observation, Probe};
use std::collections::BTreeMap;

/// The packages to report on. Upgrade candidates cost an `apt-cache policy` or a `dnf
/// repoquery`, so they are only asked for when `latest` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageQuery {
    /// Package names as the user gave them (`bash`, `libc6:i386`, `glibc.i686`).
    pub names: Vec<String>,
    /// Also report the upgrades the host's current package lists offer.
    pub latest: bool,
    /// Also report the apt lists' age (the host's clock and the lists' newest mtime): only
    /// `update_cache` needs it, and it costs two programs on every run.
    pub cache_age: bool,
}

/// The package manager the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// apt-get and dpkg-query.
    Apt,
    /// rpm and dnf.
    Dnf,
    /// rpm without dnf.
    Rpm,
    /// Neither dpkg nor rpm.
    None,
}

/// One package instance dpkg or rpm knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The name to pass to the package manager for exactly this instance (`libc6:amd64`,
    /// `glibc.x86_64`, or just `bash` for a package dpkg does not qualify).
    pub id: String,
    pub name: String,
    pub arch: String,
    /// dpkg's abbreviated status (`ii`, `rc`, `hi`, ...); always `ii` for rpm.
    pub status: String,
    pub version: String,
}

impl Instance {
    /// Fully installed.
    pub fn installed(&self) -> bool {
        self.status.chars().nth(1) == Some('i')
    }
    /// Anything on disk beyond configuration files (half-installed counts: remove cleans it).
    pub fn on_disk(&self) -> bool {
        !matches!(self.status.chars().nth(1), Some('n' | 'c') | None)
    }
    pub fn held(&self) -> bool {
        self.status.starts_with('h')
    }
    /// Does this instance answer the request `req` (`name`, `name:arch` or `name.arch`)?
    pub fn matches(&self, req: &str) -> bool {
        req == self.name
            || req == self.id
            || req == format!("{}:{}", self.name, self.arch)
            || req == format!("{}.{}", self.name, self.arch)
    }
}

/// What one probe of a [`PackageQuery`] reports: the manager, the installed state of the
/// packages, how old apt's package lists are and, for `latest`, the upgrade candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packages {
    pub manager: Manager,
    /// The host's clock (apt), seconds since the epoch.
    pub now: Option<i64>,
    /// When apt's lists were last refreshed (apt), seconds since the epoch.
    pub cache_mtime: Option<i64>,
    /// apt has package lists at all.
    pub lists: bool,
    /// Every instance of the queried names that dpkg or rpm knows about.
    pub instances: Vec<Instance>,
    /// apt-cache policy: name → (installed, candidate).
    pub policy: BTreeMap<String, (String, String)>,
    /// dnf: `name.arch` of packages with an upgrade available.
    pub upgrades: Vec<String>,
}

impl Packages {
    /// The instances answering the request `req`.
    pub fn of<'a>(&'a self, req: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.matches(req))
    }
    pub fn installed(&self, req: &str) -> bool {
        self.of(req).any(Instance::installed)
    }
    /// The age of apt's package lists in seconds, when there are lists and it is known.
    pub fn cache_age(&self) -> Option<i64> {
        match (self.now, self.cache_mtime) {
            (Some(now), Some(m)) if self.lists => Some(now - m),
            _ => None,
        }
    }
    /// An upgrade `latest` should install, or why not (`Err(note)`).
    pub fn upgradable(&self, req: &str) -> Result<bool, String> {
        if self.manager == Manager::Apt {
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

/// The probe: which manager, the installed state of each package, apt list age and, for
/// `latest`, the upgrade candidates. Sections are introduced by `[name]` lines; every tool's
/// "not found" exit is tolerated so a rc other than 0 means the probe itself broke.
fn probe_cmd(names: &[String], latest: bool, cache_age: bool) -> String {
    let n = names
        .iter()
        .map(|s| shell_quote(s))
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = String::from("LC_ALL=C; export LC_ALL; ");
    s += "if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then ";
    s += "echo mgr=apt; ";
    if cache_age {
        s += "echo now=$(date +%s); stat -c cache_mtime=%Y /var/lib/apt/lists /var/lib/apt/periodic/update-success-stamp 2>/dev/null; ";
    }
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

impl Fact for Packages {
    const NAME: &'static str = "packages";
    type Key = PackageQuery;

    fn probe(query: &PackageQuery) -> Probe {
        Probe::Command(probe_cmd(&query.names, query.latest, query.cache_age))
    }

    fn parse(_query: &PackageQuery, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        if out.rc != 0 {
            return Err(format!(
                "package probe failed (rc {}): {}",
                out.rc,
                out.stderr.trim()
            ));
        }
        let mut mgr = "";
        let mut r = Packages {
            manager: Manager::None,
            now: None,
            cache_mtime: None,
            lists: false,
            instances: Vec::new(),
            policy: BTreeMap::new(),
            upgrades: Vec::new(),
        };
        let mut section = "";
        let mut current: Option<String> = None;
        for line in out.stdout.lines() {
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
                    Some(("mgr", v)) => mgr = v.trim(),
                    Some(("now", v)) => r.now = v.trim().parse().ok(),
                    Some(("cache_mtime", v)) => {
                        // the newest of the paths that exist
                        let t: Option<i64> = v.trim().parse().ok();
                        r.cache_mtime = r.cache_mtime.max(t);
                    }
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
        r.manager = match mgr {
            "apt" => Manager::Apt,
            "dnf" => Manager::Dnf,
            "rpm" => Manager::Rpm,
            "none" => Manager::None,
            _ => {
                return Err(format!(
                    "unexpected package probe output: {:?}",
                    out.stdout.trim()
                ))
            }
        };
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::{fixture, run_here};

    fn query(names: &[&str], latest: bool) -> PackageQuery {
        PackageQuery {
            names: names.iter().map(|n| n.to_string()).collect(),
            latest,
            cache_age: true,
        }
    }

    fn parse_output(q: &PackageQuery, stdout: &str) -> Packages {
        Packages::parse(q, &Observation::Command(CommandOutput::ok(stdout))).unwrap()
    }

    fn parse(names: &[&str], latest: bool, file: &str) -> Packages {
        parse_output(&query(names, latest), &fixture(&format!("packages/{file}")))
    }

    #[test]
    fn probe_quotes_names_and_branches_on_the_manager() {
        let Probe::Command(c) = Packages::probe(&query(&["qemu-system-x86", "libc6:i386"], false))
        else {
            panic!()
        };
        assert!(
            c.contains("-- qemu-system-x86 libc6:i386 2>/dev/null || true"),
            "{c}"
        );
        assert!(c.contains("-f='${binary:Package}\\t${Package}"), "{c}");
        assert!(c.contains("elif command -v rpm"), "{c}");
        assert!(!c.contains("apt-cache policy"), "{c}");
        let Probe::Command(c) = Packages::probe(&query(&["x"], true)) else {
            panic!()
        };
        assert!(
            c.contains("apt-cache policy -- x") && c.contains("repoquery --upgrades"),
            "{c}"
        );
        let Probe::Command(c) = Packages::probe(&query(&["a b"], false)) else {
            panic!()
        };
        assert!(c.contains("-- 'a b' 2>/dev/null"), "{c}");
    }

    #[test]
    fn probe_runs_in_a_real_shell() {
        let q = query(&["sh", "no-such-package-kf"], true);
        let r = Packages::parse(&q, &run_here(&Packages::probe(&q))).unwrap();
        assert!(!r.installed("no-such-package-kf"));
    }

    #[test]
    fn bookworm_without_lists() {
        let r = parse(
            &["bash", "libc6", "less", "dbus", "nonexist"],
            false,
            "bookworm-no-lists.txt",
        );
        assert_eq!(r.manager, Manager::Apt);
        assert!(!r.lists && r.cache_age().is_none() && r.now.is_some());
        assert!(r.installed("bash") && r.installed("libc6") && r.installed("libc6:amd64"));
        assert_eq!(r.of("libc6").next().unwrap().id, "libc6:amd64");
        assert!(!r.installed("nonexist") && r.of("nonexist").next().is_none());
        // Held, still installed.
        let less = r.of("less").next().unwrap();
        assert!(less.held() && less.installed() && less.on_disk());
        // Removed with its configuration left: absent, nothing on disk to remove.
        let dbus = r.of("dbus").next().unwrap();
        assert_eq!(dbus.status, "rc");
        assert!(!r.installed("dbus") && !dbus.on_disk());
    }

    #[test]
    fn bookworm_latest_without_lists_offers_nothing() {
        let r = parse(
            &["bash", "libc6:amd64", "less", "nonexist"],
            true,
            "bookworm-latest-no-lists.txt",
        );
        assert_eq!(
            r.policy["less"],
            ("590-2.1~deb12u2".to_string(), "590-2.1~deb12u2".to_string())
        );
        for n in ["bash", "libc6:amd64", "less"] {
            assert_eq!(r.upgradable(n), Ok(false), "{n}");
        }
    }

    #[test]
    fn bookworm_latest_with_lists() {
        let r = parse(
            &["bash", "libc6", "nonexist", "ovmf"],
            true,
            "bookworm-latest.txt",
        );
        assert_eq!(r.cache_age(), Some(882));
        assert_eq!(
            r.policy["bash"],
            ("5.2.15-2+b8".to_string(), "5.2.15-2+b13".to_string())
        );
        assert_eq!(r.upgradable("bash"), Ok(true));
        assert_eq!(r.upgradable("libc6:amd64"), Ok(false));
        assert_eq!(r.policy["ovmf"].0, "(none)");
        assert!(!r.installed("ovmf"));
    }

    #[test]
    fn held_packages_are_not_upgradable() {
        let out = "mgr=apt\n[installed]\nvim\tvim\tamd64\thi \t9.0\n[policy]\nvim:\n  Installed: 9.0\n  Candidate: 9.1\n";
        let r = parse_output(&query(&["vim"], true), out);
        assert_eq!(
            r.upgradable("vim"),
            Err("vim is held at 9.0 (9.1 available)".into())
        );
    }

    #[test]
    fn dnf_output() {
        let out = "mgr=dnf\n[installed]\npackage qemu-kvm is not installed\nbash.x86_64\tbash\tx86_64\tii\t5.1-9\n[upgrades]\nbash.x86_64\n";
        let r = parse_output(&query(&["bash", "qemu-kvm"], true), out);
        assert_eq!(r.manager, Manager::Dnf);
        assert!(r.installed("bash") && r.installed("bash.x86_64") && !r.installed("qemu-kvm"));
        assert_eq!(r.upgradable("bash"), Ok(true));
        assert_eq!(r.cache_age(), None);
    }

    #[test]
    fn failed_probe_and_garbage() {
        let q = query(&["x"], false);
        let o = Observed::new()
            .with_fact::<Packages>(
                &q,
                Observation::Command(CommandOutput::failed(2, "sh: syntax error\n")),
            )
            .with_fact::<Packages>(
                &query(&["y"], false),
                Observation::Command(CommandOutput::ok("")),
            );
        for (key, says) in [
            (q, "package probe failed (rc 2): sh: syntax error"),
            (
                query(&["y"], false),
                "unexpected package probe output: \"\"",
            ),
        ] {
            match o.fact::<Packages>(&key) {
                Err(ModuleError::Host(m)) => assert_eq!(m, says),
                other => panic!("{other:?}"),
            }
        }
    }
}
