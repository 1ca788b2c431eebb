//! `user`: a local account's existence, login shell and supplementary groups.
//!
//! Group membership is the point for hypervisors (the people who manage guests need `libvirt`,
//! `kvm`, ...), so it is observed precisely: the account, its groups as `id` resolves them, and
//! every wanted group, all in one probe (the [`UserAccount`] fact).

use crate::module::{
    shell_quote, Action, ArgError, Change, Fact, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::modules::args::{absolute_path, Presence};
use crate::modules::facts::accounts::{AccountQuery, UserAccount};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
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
`uid`, `home`, `shell`, `groups` (as observed; for a user the task creates, `uid` and `home` \
are read back once it exists, so later tasks can use them; in check mode they are unset).",
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

/// A `user` task's arguments, typed.
#[derive(Debug, Deserialize)]
pub struct Request {
    name: String,
    state: Presence,
    /// Wanted supplementary groups (de-duplicated by `request`); `None` when not managed.
    groups: Option<Vec<String>>,
    append: bool,
    shell: Option<String>,
    create_home: bool,
    system: bool,
    remove: bool,
}

impl Request {
    /// What the probe looks up: the user and, when managed, the wanted groups.
    fn query(&self) -> AccountQuery {
        AccountQuery {
            user: self.name.clone(),
            groups: self.groups.clone().unwrap_or_default(),
        }
    }
}

impl Module for User {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let mut req: Request = args.parse()?;
        let name = &req.name;
        if !valid_name(name) {
            return Err(
                ArgError::invalid("name", format!("{name:?} is not a valid user name")).into(),
            );
        }
        let present = req.state == Presence::Present;
        if present && req.remove {
            return Err(ArgError::conflict(
                "remove",
                "state",
                "remove only applies to state: absent",
            )
            .into());
        }
        if !present {
            let given = [
                ("groups", req.groups.is_some()),
                ("shell", req.shell.is_some()),
                ("system", req.system),
            ];
            if let Some((param, _)) = given.into_iter().find(|(_, given)| *given) {
                return Err(ArgError::conflict(
                    param,
                    "state",
                    format!("{param} has no meaning with state: absent"),
                )
                .into());
            }
        }
        if let Some(s) = &req.shell {
            absolute_path("shell", s)?;
        }
        if let Some(list) = req.groups.take() {
            let mut gs: Vec<String> = Vec::new();
            for g in list {
                if !valid_name(&g) {
                    return Err(ArgError::invalid(
                        "groups",
                        format!("{g:?} is not a valid group name"),
                    )
                    .into());
                }
                if !gs.contains(&g) {
                    gs.push(g);
                }
            }
            req.groups = Some(gs);
        }
        Ok(req)
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        vec![UserAccount::probe(&req.query())]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let name = req.name.as_str();
        let r = observed.fact::<UserAccount>(&req.query())?;
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

        if req.state == Presence::Absent {
            if r.account.is_some() {
                let (flag, what) = if req.remove {
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
        let shell = req.shell.as_deref();

        let Some(account) = &r.account else {
            let mut cmd = String::from("useradd");
            cmd += if req.create_home { " -m" } else { " -M" };
            if req.system {
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
            // What useradd chose, registered for later tasks (`{{ account.home }}/.profile`).
            plan.data_from("uid", format!("id -u {q}"));
            plan.data_from("home", format!("getent passwd {q} | cut -d: -f6"));
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
            if req.append {
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
    use crate::module::{ArgErrorKind, CommandOutput, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, req, runs};
    use serde_json::json;

    const OPS: &str =
        "passwd\tops:x:1001:1001:Ops:/home/ops:/bin/sh\nprimary\tops\ngroups\tops sudo kvm\n";

    fn groups(gs: &[&str]) -> String {
        gs.iter()
            .map(|g| format!("group\t{g}\t{g}:x:100:ops\n"))
            .collect()
    }

    fn observed(r: &Request, out: CommandOutput) -> Observed {
        Observed::new().with_fact::<UserAccount>(&r.query(), Observation::Command(out))
    }

    fn plan(a: serde_json::Value, stdout: &str) -> Result<Plan, ModuleError> {
        let r = req(&User, a);
        User.plan(&r, &observed(&r, CommandOutput::ok(stdout)))
    }

    #[test]
    fn probe_looks_up_the_user_and_wanted_groups() {
        let r = req(
            &User,
            json!({"name": "ops", "groups": ["libvirt", "kvm", "kvm"]}),
        );
        let query = AccountQuery {
            user: "ops".into(),
            groups: vec!["libvirt".into(), "kvm".into()],
        };
        assert_eq!(User.probes(&r), vec![UserAccount::probe(&query)]);
        let [Probe::Command(c)] = &User.probes(&r)[..] else {
            panic!()
        };
        assert!(c.contains("getent passwd ops)"), "{c}");
        assert!(c.contains("for g in libvirt kvm; do"), "{c}");
        let r = req(&User, json!({"name": "ops", "state": "absent"}));
        let [Probe::Command(c)] = &User.probes(&r)[..] else {
            panic!()
        };
        assert!(!c.contains("getent group"), "{c}");
    }

    #[test]
    fn fresh_host_creates_user_with_groups() {
        let out = groups(&["libvirt", "kvm"]);
        let p = plan(
            json!({"name": "ops", "groups": ["libvirt", "kvm"], "shell": "/bin/bash"}),
            &out,
        )
        .unwrap();
        assert_eq!(runs(&p)[0], "useradd -m -s /bin/bash -G libvirt,kvm ops");
        assert_eq!(
            p.changes[0].summary,
            "create user ops in groups libvirt, kvm"
        );
        assert_eq!(p.data["exists"], json!(false));
        // The new account's uid and home are read back and registered once it exists.
        assert_eq!(
            runs(&p)[1..],
            ["id -u ops", "getent passwd ops | cut -d: -f6"]
        );
        assert_eq!(
            p.data_from_output,
            vec![("uid".to_string(), 1), ("home".to_string(), 2)]
        );
        let p = plan(
            json!({"name": "svc", "system": true, "create_home": false}),
            "",
        )
        .unwrap();
        assert_eq!(runs(&p)[0], "useradd -M -r svc");
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
        assert_eq!(runs(&p)[0], "useradd -m 0");
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
    fn probe_failure_fails_the_task() {
        let r = req(&User, json!({"name": "ops"}));
        let obs = observed(&r, CommandOutput::failed(3, "getent not found"));
        let e = User.plan(&r, &obs).unwrap_err();
        assert!(e.to_string().contains("getent not found"), "{e}");
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let conflict = ArgErrorKind::Conflict { with: "state" };
        for (v, kind, param) in [
            (json!({"name": "-rf"}), ArgErrorKind::Invalid, "name"),
            (json!({"name": "a b"}), ArgErrorKind::Invalid, "name"),
            (
                json!({"name": "ops", "groups": ["ok", "x;y"]}),
                ArgErrorKind::Invalid,
                "groups",
            ),
            (json!({"name": "ops", "remove": true}), conflict, "remove"),
            (
                json!({"name": "ops", "state": "absent", "groups": ["kvm"]}),
                conflict,
                "groups",
            ),
            (
                json!({"name": "ops", "state": "absent", "system": true}),
                conflict,
                "system",
            ),
            (
                json!({"name": "ops", "shell": "bash"}),
                ArgErrorKind::Invalid,
                "shell",
            ),
        ] {
            let e = arg_error(&User, v.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{v}");
        }
    }

    #[test]
    fn lab_host_accounts() {
        let out = fixture("user_account/ops-groups.txt");
        let p = plan(json!({"name": "ops", "groups": ["sudo", "100"]}), &out).unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        assert_eq!(p.data["uid"], json!("1002"));
        let e = plan(json!({"name": "ops", "groups": ["libvirt"]}), &out).unwrap_err();
        assert!(
            e.to_string().starts_with("group libvirt does not exist"),
            "{e}"
        );
        let out = fixture("user_account/missing-user.txt");
        let p = plan(json!({"name": "nosuchuser", "groups": ["sudo"]}), &out).unwrap();
        assert_eq!(runs(&p)[0], "useradd -m -G sudo nosuchuser");
        let out = fixture("user_account/uid-lookalike.txt");
        let p = plan(json!({"name": "0"}), &out).unwrap();
        assert_eq!(runs(&p)[0], "useradd -m 0");
    }
}
