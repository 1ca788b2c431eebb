//! Accounts: a local user as `getent passwd` and `id` report it, and groups as `getent group`
//! resolves them.

use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, Observation, Probe};

/// The user to look up and the groups to resolve with it, so one probe answers both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountQuery {
    /// The login name.
    pub user: String,
    /// Group names or numeric ids to resolve (none: groups are not looked up).
    pub groups: Vec<String>,
}

/// A user as `getent passwd` and `id` report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub uid: String,
    pub home: String,
    pub shell: String,
    /// The primary group's name (`id -gn`).
    pub primary: String,
    /// Every group the user is in, primary included (`id -nG`).
    pub groups: Vec<String>,
}

/// What one probe of an [`AccountQuery`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAccount {
    /// The user, when it exists.
    pub account: Option<Account>,
    /// Each queried group that exists → its name on the host (a numeric id resolves to the
    /// group's name).
    pub groups: Vec<(String, String)>,
    /// The queried groups that do not exist.
    pub unknown_groups: Vec<String>,
}

impl Fact for UserAccount {
    const NAME: &'static str = "user account";
    type Key = AccountQuery;

    /// `passwd`, `primary`, `groups` lines when the user exists, then `group WANTED ENTRY` or
    /// `nogroup WANTED` per queried group. Tab separated.
    fn probe(query: &AccountQuery) -> Probe {
        let n = shell_quote(&query.user);
        let mut s = String::from(
            "command -v getent >/dev/null 2>&1 || { echo 'getent not found' >&2; exit 3; }; ",
        );
        s += &format!(
            "if e=$(getent passwd {n}); then printf 'passwd\\t%s\\n' \"$e\"; \
printf 'primary\\t%s\\n' \"$(id -gn {n})\"; printf 'groups\\t%s\\n' \"$(id -nG {n})\"; fi"
        );
        if !query.groups.is_empty() {
            let list = query
                .groups
                .iter()
                .map(|g| shell_quote(g))
                .collect::<Vec<_>>()
                .join(" ");
            s += &format!(
                "; for g in {list}; do if e=$(getent group \"$g\"); then printf 'group\\t%s\\t%s\\n' \"$g\" \"$e\"; \
else printf 'nogroup\\t%s\\n' \"$g\"; fi; done"
            );
        }
        Probe::Command(s)
    }

    fn parse(query: &AccountQuery, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        if out.rc != 0 {
            return Err(format!(
                "user probe failed (rc {}): {}",
                out.rc,
                out.stderr.trim()
            ));
        }
        let mut r = UserAccount::default();
        let mut account = Account::default();
        let mut seen = false;
        for line in out.stdout.lines() {
            let (kind, rest) = line.split_once('\t').unwrap_or((line, ""));
            match kind {
                "passwd" => {
                    let f: Vec<&str> = rest.split(':').collect();
                    // getent looks a numeric key up as a UID: only an entry with this name counts.
                    if f.len() >= 7 && f[0] == query.user {
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
                        return Err(format!("unexpected group entry for {wanted}: {entry:?}"));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::{fixture, run_here};

    fn query(user: &str, groups: &[&str]) -> AccountQuery {
        AccountQuery {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn parse(q: &AccountQuery, file: &str) -> UserAccount {
        let out = CommandOutput::ok(&fixture(&format!("user_account/{file}")));
        UserAccount::parse(q, &Observation::Command(out)).unwrap()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn probe_quotes_and_lists_groups() {
        let Probe::Command(c) = UserAccount::probe(&query("ops", &["libvirt", "kvm"])) else {
            panic!()
        };
        assert!(c.contains("getent passwd ops)"), "{c}");
        assert!(c.contains("for g in libvirt kvm; do"), "{c}");
        let Probe::Command(c) = UserAccount::probe(&query("o'ps", &[])) else {
            panic!()
        };
        assert!(c.contains(r"getent passwd 'o'\''ps')"), "{c}");
        assert!(!c.contains("getent group"), "{c}");
    }

    #[test]
    fn probe_runs_in_a_real_shell() {
        let q = query("root", &["root", "no-such-group-kf"]);
        let r = UserAccount::parse(&q, &run_here(&UserAccount::probe(&q))).unwrap();
        let acct = r.account.expect("root exists");
        assert_eq!((acct.uid.as_str(), acct.primary.as_str()), ("0", "root"));
        assert_eq!(r.groups, pairs(&[("root", "root")]));
        assert_eq!(r.unknown_groups, vec!["no-such-group-kf"]);
    }

    #[test]
    fn existing_user_with_groups() {
        let r = parse(&query("ops", &["sudo", "100", "libvirt"]), "ops-groups.txt");
        let a = r.account.unwrap();
        assert_eq!(
            (a.uid.as_str(), a.home.as_str(), a.shell.as_str()),
            ("1002", "/home/ops", "/bin/sh")
        );
        assert_eq!(a.primary, "ops");
        assert_eq!(a.groups, ["ops", "sudo", "users"]);
        // A numeric request resolves to the group's name.
        assert_eq!(r.groups, pairs(&[("sudo", "sudo"), ("100", "users")]));
        assert_eq!(r.unknown_groups, ["libvirt"]);
    }

    #[test]
    fn missing_user() {
        let r = parse(&query("nosuchuser", &["sudo"]), "missing-user.txt");
        assert_eq!(r.account, None);
        assert_eq!(r.groups, pairs(&[("sudo", "sudo")]));
    }

    #[test]
    fn uid_lookalike_is_not_the_user() {
        // `getent passwd 0` finds root by its UID.
        let r = parse(&query("0", &[]), "uid-lookalike.txt");
        assert_eq!(r.account, None);
    }

    #[test]
    fn failed_probe_and_garbled_group() {
        let q = query("x", &[]);
        let o = Observed::new()
            .with_fact::<UserAccount>(
                &q,
                Observation::Command(CommandOutput::failed(3, "getent not found\n")),
            )
            .with_fact::<UserAccount>(
                &query("y", &[]),
                Observation::Command(CommandOutput::ok("group\tkvm\t\n")),
            );
        for (key, says) in [
            (q, "user probe failed (rc 3): getent not found"),
            (query("y", &[]), "unexpected group entry for kvm: \"\""),
        ] {
            match o.fact::<UserAccount>(&key) {
                Err(ModuleError::Host(m)) => assert_eq!(m, says),
                other => panic!("{other:?}"),
            }
        }
    }
}
