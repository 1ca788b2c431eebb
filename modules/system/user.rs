//! `user`: a local account's existence, login shell and supplementary groups.
//!
//! Group membership is the point for hypervisors (the people who manage guests need `libvirt`,
//! `kvm`, ...), so it is observed precisely: the account, its groups as `id` resolves them, and
//! every wanted group, all in one probe.

use crate::module::{
    shell_quote, Action, Change, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext,
    Probe,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde_json::Value;

pub struct User;

static SPEC: ModuleSpec = ModuleSpec {
    name: "user",
    summary: "Ensure a local user exists (with shell and groups) or does not",
    description: "Observes `getent passwd NAME`, `id -gn`/`id -nG NAME` and `getent group G` for \
each wanted group. A missing user is created with `useradd` (`-m` unless `create_home: false`, \
`-r` for `system`, `-s`, `-G`); `create_home` and `system` only apply at creation. For an \
existing user the login shell is compared with the passwd entry and changed with `usermod -s`. \
`groups` are supplementary groups, compared with what `id -nG` reports: with `append: true` \
(the default) missing ones are added (`usermod -a -G`) and others are left alone; with \
`append: false` the supplementary groups are set to exactly the list (`usermod -G`; an empty list \
removes all), the user's primary group being ignored on both sides. A wanted group that does not \
exist fails the task, naming it: groups are never created implicitly (they usually come with the \
package that needs them, so install it first). `state: absent` runs `userdel` when the user \
exists; the home directory is kept unless `remove: true` (`userdel -r`). Results: `exists`, \
`uid`, `home`, `shell`, `groups` (as observed).",
    params: &[
        ParamSpec::required("name", ParamKind::Str, "Login name").aliases(&["user"]),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "Wanted state",
        ),
        ParamSpec::optional("groups", ParamKind::List, "Supplementary groups"),
        ParamSpec::with_default(
            "append",
            ParamKind::Bool,
            "true",
            "Add to groups (true) or set exactly (false)",
        ),
        ParamSpec::optional("shell", ParamKind::Str, "Login shell"),
        ParamSpec::with_default(
            "create_home",
            ParamKind::Bool,
            "true",
            "Create the home directory when creating the user",
        )
        .aliases(&["createhome"]),
        ParamSpec::with_default(
            "system",
            ParamKind::Bool,
            "false",
            "Create a system account",
        ),
        ParamSpec::with_default(
            "remove",
            ParamKind::Bool,
            "false",
            "With state absent, also delete the home directory",
        ),
    ],
    free_form: None,
    example: r#"- name: Operators manage guests
  user:
    name: ops
    groups: [libvirt, libvirt-qemu, kvm]
    shell: /bin/bash
"#,
};

/// Names `useradd`/`groupadd` accept everywhere (and nothing a shell or getent could misread).
fn valid_name(n: &str) -> bool {
    let body = n.strip_suffix('$').unwrap_or(n);
    !body.is_empty()
        && n.len() <= 32
        && !body.starts_with('-')
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

struct Request<'a> {
    name: &'a str,
    present: bool,
    /// Wanted supplementary groups, de-duplicated; `None` when not managed.
    groups: Option<Vec<String>>,
}

fn request(args: &Args) -> Result<Request<'_>, ModuleError> {
    let name = args.req_str("name");
    if !valid_name(name) {
        return Err(ModuleError::Args(format!(
            "{name:?} is not a valid user name"
        )));
    }
    let present = args.req_str("state") == "present";
    if present && args.bool("remove") {
        return Err(ModuleError::Args(
            "remove only applies to state: absent".into(),
        ));
    }
    if !present {
        if let Some(p) = ["groups", "shell"].into_iter().find(|p| args.has(p)) {
            return Err(ModuleError::Args(format!(
                "{p} has no meaning with state: absent"
            )));
        }
        if args.bool("system") {
            return Err(ModuleError::Args(
                "system has no meaning with state: absent".into(),
            ));
        }
    }
    if let Some(s) = args.str("shell") {
        if !s.starts_with('/') {
            return Err(ModuleError::Args(format!(
                "shell must be an absolute path, got {s:?}"
            )));
        }
    }
    let groups = if args.has("groups") {
        let mut gs: Vec<String> = Vec::new();
        for g in args.list("groups") {
            if !valid_name(&g) {
                return Err(ModuleError::Args(format!(
                    "{g:?} is not a valid group name"
                )));
            }
            if !gs.contains(&g) {
                gs.push(g);
            }
        }
        Some(gs)
    } else {
        None
    };
    Ok(Request {
        name,
        present,
        groups,
    })
}

/// One probe: `passwd`, `primary`, `groups` lines when the user exists, then `group WANTED ENTRY`
/// or `nogroup WANTED` per wanted group. Tab separated.
fn probe_cmd(r: &Request) -> String {
    let n = shell_quote(r.name);
    let mut s = String::from(
        "command -v getent >/dev/null 2>&1 || { echo 'getent not found' >&2; exit 3; }; ",
    );
    s += &format!(
        "if e=$(getent passwd {n}); then printf 'passwd\\t%s\\n' \"$e\"; \
printf 'primary\\t%s\\n' \"$(id -gn {n})\"; printf 'groups\\t%s\\n' \"$(id -nG {n})\"; fi"
    );
    if let Some(gs) = r.groups.as_ref().filter(|g| r.present && !g.is_empty()) {
        let list = gs
            .iter()
            .map(|g| shell_quote(g))
            .collect::<Vec<_>>()
            .join(" ");
        s += &format!(
            "; for g in {list}; do if e=$(getent group \"$g\"); then printf 'group\\t%s\\t%s\\n' \"$g\" \"$e\"; \
else printf 'nogroup\\t%s\\n' \"$g\"; fi; done"
        );
    }
    s
}

#[derive(Debug, Default)]
struct Account {
    uid: String,
    home: String,
    shell: String,
    primary: String,
    groups: Vec<String>,
}

#[derive(Debug, Default)]
struct Report {
    account: Option<Account>,
    /// Wanted group → its name on the host (a numeric request resolves to the group's name).
    groups: Vec<(String, String)>,
    unknown_groups: Vec<String>,
}

fn parse(name: &str, out: &str) -> Result<Report, ModuleError> {
    let mut r = Report::default();
    let mut account = Account::default();
    let mut seen = false;
    for line in out.lines() {
        let (kind, rest) = line.split_once('\t').unwrap_or((line, ""));
        match kind {
            "passwd" => {
                let f: Vec<&str> = rest.split(':').collect();
                // getent looks a numeric key up as a UID: only an entry with this name counts.
                if f.len() >= 7 && f[0] == name {
                    account.uid = f[2].into();
                    account.home = f[5].into();
                    account.shell = f[6].into();
                    seen = true;
                }
            }
            "primary" => account.primary = rest.trim().into(),
            "groups" => account.groups = rest.split_whitespace().map(str::to_string).collect(),
            "group" => {
                let (wanted, entry) = rest.split_once('\t').unwrap_or((rest, ""));
                let actual = entry.split(':').next().unwrap_or_default();
                if actual.is_empty() {
                    return Err(ModuleError::Host(format!(
                        "unexpected group entry for {wanted}: {entry:?}"
                    )));
                }
                r.groups.push((wanted.into(), actual.into()));
            }
            "nogroup" => r.unknown_groups.push(rest.into()),
            _ => {}
        }
    }
    if seen {
        r.account = Some(account);
    }
    Ok(r)
}

impl Module for User {
    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn probes(&self, args: &Args, _ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError> {
        Ok(vec![Probe::Command(probe_cmd(&request(args)?))])
    }

    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        _ctx: &PlanContext,
    ) -> Result<Plan, ModuleError> {
        let req = request(args)?;
        let name = req.name;
        let out = observed.command(&probe_cmd(&req))?;
        if out.rc != 0 {
            return Err(ModuleError::Host(format!(
                "user probe failed (rc {}): {}",
                out.rc,
                out.stderr.trim()
            )));
        }
        let r = parse(name, &out.stdout)?;
        let mut plan = Plan::ok()
            .with_data("name", name)
            .with_data("exists", r.account.is_some());
        if let Some(a) = &r.account {
            plan = plan
                .with_data("uid", a.uid.clone())
                .with_data("home", a.home.clone())
                .with_data("shell", a.shell.clone())
                .with_data("groups", Value::from(a.groups.clone()));
        }
        let q = shell_quote(name);

        if !req.present {
            if r.account.is_some() {
                let (flag, what) = if args.bool("remove") {
                    (" -r", " and its home directory")
                } else {
                    ("", "")
                };
                plan.change(
                    Change::new(format!("remove user {name}{what}")),
                    [Action::run(format!("userdel{flag} {q}"))],
                );
            }
            return Ok(plan);
        }

        // Every wanted group must exist: resolve to host names or fail naming the missing ones.
        let wanted: Option<Vec<String>> = match &req.groups {
            None => None,
            Some(gs) => {
                let missing: Vec<&str> = gs
                    .iter()
                    .filter(|g| !r.groups.iter().any(|(w, _)| w == *g))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(ModuleError::Host(format!(
                        "group{} {} do{} not exist on this host (create {} or install the package that does before this task)",
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(", "),
                        if missing.len() == 1 { "es" } else { "" },
                        if missing.len() == 1 { "it" } else { "them" },
                    )));
                }
                let mut names: Vec<String> = Vec::new();
                for g in gs {
                    let actual = &r.groups.iter().find(|(w, _)| w == g).expect("checked").1;
                    if !names.contains(actual) {
                        names.push(actual.clone());
                    }
                }
                Some(names)
            }
        };
        let shell = args.str("shell");

        let Some(account) = &r.account else {
            let mut cmd = String::from("useradd");
            cmd += if args.bool("create_home") {
                " -m"
            } else {
                " -M"
            };
            if args.bool("system") {
                cmd += " -r";
            }
            if let Some(s) = shell {
                cmd += &format!(" -s {}", shell_quote(s));
            }
            let mut summary = format!("create user {name}");
            if let Some(gs) = wanted.as_ref().filter(|g| !g.is_empty()) {
                cmd += &format!(" -G {}", shell_quote(&gs.join(",")));
                summary += &format!(" in groups {}", gs.join(", "));
            }
            cmd += &format!(" {q}");
            plan.change(Change::new(summary), [Action::run(cmd)]);
            return Ok(plan);
        };

        if let Some(s) = shell {
            if account.shell != s {
                plan.change(
                    Change::new(format!("{name}: shell {} -> {s}", account.shell)),
                    [Action::run(format!("usermod -s {} {q}", shell_quote(s)))],
                );
            }
        }

        if let Some(want) = wanted {
            if args.bool("append") {
                let add: Vec<String> = want
                    .iter()
                    .filter(|g| !account.groups.contains(g))
                    .cloned()
                    .collect();
                if !add.is_empty() {
                    plan.change(
                        Change::new(format!("add {name} to groups {}", add.join(", "))),
                        [Action::run(format!(
                            "usermod -a -G {} {q}",
                            shell_quote(&add.join(","))
                        ))],
                    );
                }
            } else {
                let supplementary = |gs: &[String]| -> Vec<String> {
                    let mut v: Vec<String> = gs
                        .iter()
                        .filter(|g| **g != account.primary)
                        .cloned()
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                };
                let (cur, new) = (supplementary(&account.groups), supplementary(&want));
                if cur != new {
                    plan.change(
                        Change::new(format!("set {name}'s groups to {}", new.join(", ")))
                            .with_diff(
                                &format!("groups of {name}"),
                                cur.join("\n"),
                                new.join("\n"),
                            ),
                        [Action::run(format!(
                            "usermod -G {} {q}",
                            shell_quote(&new.join(","))
                        ))],
                    );
                }
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::support::sim::runs;
    use serde_json::json;

    fn args(v: serde_json::Value) -> Args {
        Args::from_json(SPEC.params, v).unwrap()
    }

    const OPS: &str =
        "passwd\tops:x:1001:1001:Ops:/home/ops:/bin/sh\nprimary\tops\ngroups\tops sudo kvm\n";

    fn groups(gs: &[&str]) -> String {
        gs.iter()
            .map(|g| format!("group\t{g}\t{g}:x:100:ops\n"))
            .collect()
    }

    fn plan(a: serde_json::Value, stdout: &str) -> Result<Plan, ModuleError> {
        let a = args(a);
        let cmd = probe_cmd(&request(&a).unwrap());
        let obs = Observed::new().with_command(&cmd, CommandOutput::ok(stdout));
        User.plan(&a, &obs, &PlanContext::default())
    }

    #[test]
    fn probe_quotes_and_lists_wanted_groups() {
        let a = args(json!({"name": "ops", "groups": ["libvirt", "kvm", "kvm"]}));
        let [Probe::Command(c)] = &User.probes(&a, &PlanContext::default()).unwrap()[..] else {
            panic!()
        };
        assert!(c.contains("getent passwd ops)"), "{c}");
        assert!(c.contains("for g in libvirt kvm; do"), "{c}");
        let a = args(json!({"name": "ops", "state": "absent"}));
        let [Probe::Command(c)] = &User.probes(&a, &PlanContext::default()).unwrap()[..] else {
            panic!()
        };
        assert!(!c.contains("getent group"), "{c}");
    }

    #[test]
    fn probe_runs_in_a_real_shell() {
        let a = args(json!({"name": "root", "groups": ["root", "no-such-group-kf"]}));
        let cmd = probe_cmd(&request(&a).unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert!(out.status.success());
        let r = parse("root", &String::from_utf8_lossy(&out.stdout)).unwrap();
        let acct = r.account.expect("root exists");
        assert_eq!((acct.uid.as_str(), acct.primary.as_str()), ("0", "root"));
        assert_eq!(r.groups, vec![("root".to_string(), "root".to_string())]);
        assert_eq!(r.unknown_groups, vec!["no-such-group-kf"]);
    }

    #[test]
    fn fresh_host_creates_user_with_groups() {
        let out = groups(&["libvirt", "kvm"]);
        let p = plan(
            json!({"name": "ops", "groups": ["libvirt", "kvm"], "shell": "/bin/bash"}),
            &out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["useradd -m -s /bin/bash -G libvirt,kvm ops"]);
        assert_eq!(
            p.changes[0].summary,
            "create user ops in groups libvirt, kvm"
        );
        assert_eq!(p.data["exists"], json!(false));
        let p = plan(
            json!({"name": "svc", "system": true, "create_home": false}),
            "",
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["useradd -M -r svc"]);
    }

    #[test]
    fn converged_user_is_ok() {
        let out = format!("{OPS}{}", groups(&["kvm", "sudo"]));
        let p = plan(
            json!({"name": "ops", "groups": ["kvm", "sudo"], "shell": "/bin/sh"}),
            &out,
        )
        .unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        assert_eq!(p.data["groups"], json!(["ops", "sudo", "kvm"]));
        // Exact mode: the primary group listed or not makes no difference.
        let out = format!("{OPS}{}", groups(&["kvm", "sudo", "ops"]));
        let p = plan(
            json!({"name": "ops", "groups": ["kvm", "sudo", "ops"], "append": false}),
            &out,
        )
        .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn append_adds_only_missing_groups() {
        let out = format!("{OPS}{}", groups(&["libvirt", "kvm", "libvirt-qemu"]));
        let p = plan(
            json!({"name": "ops", "groups": ["libvirt", "kvm", "libvirt-qemu"]}),
            &out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["usermod -a -G libvirt,libvirt-qemu ops"]);
        assert_eq!(
            p.changes[0].summary,
            "add ops to groups libvirt, libvirt-qemu"
        );
    }

    #[test]
    fn exact_groups_replace_the_list() {
        let out = format!("{OPS}{}", groups(&["kvm", "libvirt"]));
        let p = plan(
            json!({"name": "ops", "groups": ["kvm", "libvirt"], "append": false}),
            &out,
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["usermod -G kvm,libvirt ops"]);
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("kvm\nsudo", "kvm\nlibvirt")
        );
        let p = plan(json!({"name": "ops", "groups": [], "append": false}), OPS).unwrap();
        assert_eq!(runs(&p), vec!["usermod -G '' ops"]);
    }

    #[test]
    fn shell_drift_is_corrected() {
        let p = plan(json!({"name": "ops", "shell": "/bin/bash"}), OPS).unwrap();
        assert_eq!(runs(&p), vec!["usermod -s /bin/bash ops"]);
        assert_eq!(p.changes[0].summary, "ops: shell /bin/sh -> /bin/bash");
    }

    #[test]
    fn missing_groups_fail_naming_them() {
        let out = format!(
            "{OPS}{}nogroup\tlibvirt\nnogroup\tlibvirt-qemu\n",
            groups(&["kvm"])
        );
        let e = plan(
            json!({"name": "ops", "groups": ["kvm", "libvirt", "libvirt-qemu"]}),
            &out,
        )
        .unwrap_err();
        assert!(matches!(e, ModuleError::Host(_)));
        assert!(
            e.to_string()
                .starts_with("groups libvirt, libvirt-qemu do not exist"),
            "{e}"
        );
        let e = plan(
            json!({"name": "new", "groups": ["libvirt"]}),
            "nogroup\tlibvirt\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("group libvirt does not exist"),
            "{e}"
        );
    }

    #[test]
    fn numeric_group_resolves_to_its_name() {
        let out = format!("{OPS}group\t108\tlibvirt:x:108:\n");
        let p = plan(json!({"name": "ops", "groups": ["108"]}), &out).unwrap();
        assert_eq!(runs(&p), vec!["usermod -a -G libvirt ops"]);
    }

    #[test]
    fn uid_lookalike_is_not_the_user() {
        let out = "passwd\troot:x:0:0:root:/root:/bin/bash\nprimary\troot\ngroups\troot\n";
        let p = plan(json!({"name": "0"}), out).unwrap();
        assert_eq!(runs(&p), vec!["useradd -m 0"]);
    }

    #[test]
    fn absent_removes_existing_user_only() {
        let p = plan(json!({"name": "ops", "state": "absent"}), OPS).unwrap();
        assert_eq!(runs(&p), vec!["userdel ops"]);
        let p = plan(
            json!({"name": "ops", "state": "absent", "remove": true}),
            OPS,
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["userdel -r ops"]);
        assert!(!plan(json!({"name": "ops", "state": "absent"}), "")
            .unwrap()
            .changed());
    }

    #[test]
    fn probe_failure_is_a_host_error() {
        let a = args(json!({"name": "ops"}));
        let cmd = probe_cmd(&request(&a).unwrap());
        let obs = Observed::new().with_command(&cmd, CommandOutput::failed(3, "getent not found"));
        let e = User.plan(&a, &obs, &PlanContext::default()).unwrap_err();
        assert!(e.to_string().contains("getent not found"), "{e}");
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let ctx = PlanContext::default();
        for v in [
            json!({"name": "-rf"}),
            json!({"name": "a b"}),
            json!({"name": "ops", "groups": ["ok", "x;y"]}),
            json!({"name": "ops", "remove": true}),
            json!({"name": "ops", "state": "absent", "groups": ["kvm"]}),
            json!({"name": "ops", "state": "absent", "system": true}),
            json!({"name": "ops", "shell": "bash"}),
        ] {
            assert!(
                matches!(
                    User.probes(&args(v.clone()), &ctx),
                    Err(ModuleError::Args(_))
                ),
                "{v}"
            );
        }
    }
}
