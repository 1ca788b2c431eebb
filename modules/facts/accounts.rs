//! Accounts: a local user as `getent passwd` and `id` report it, groups as `getent group`
//! resolves them, and a file under a user's home (whose path is only known on the host).

use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, FileKind, FileState, Observation, Probe};

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

/// A file of a user's, such as `~/.ssh/authorized_keys`: the path may be relative to the home,
/// which only the host knows, so one probe resolves the home and reads the file and its
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFileQuery {
    pub user: String,
    /// An absolute path, or one relative to the user's home (`.ssh/authorized_keys`).
    pub path: String,
}

/// What a [`UserFileQuery`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFile {
    /// The user does not exist.
    NoUser,
    Found {
        /// The user's home.
        home: String,
        /// The user's primary group.
        primary: String,
        /// The file's absolute path.
        path: String,
        /// The directory holding it.
        dir_path: String,
        /// Boxed: a missing user is the small, common case.
        dir: Box<FileState>,
        file: Box<FileState>,
    },
}

/// The directory part of an absolute path (`/` for a file at the root).
fn dir_of(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((d, _)) => d.into(),
    }
}

impl Fact for UserFile {
    const NAME: &'static str = "user file";
    type Key = UserFileQuery;

    /// `passwd` and `primary` lines, then for the directory and the file a `dir`/`file` line
    /// (`absent`, or mode, owner, group and type), then the file's content after a `content`
    /// line. Tab separated.
    fn probe(q: &UserFileQuery) -> Probe {
        let n = shell_quote(&q.user);
        let file = if q.path.starts_with('/') {
            shell_quote(&q.path)
        } else {
            format!(
                "\"$(printf '%s\\n' \"$e\" | cut -d: -f6)\"/{}",
                shell_quote(&q.path)
            )
        };
        let stat = |label: &str, var: &str| {
            format!(
                "if [ -e \"${var}\" ]; then printf '{label}\\t%s\\n' \"$(stat -L -c '%a\t%U\t%G\t%F' -- \"${var}\")\"; \
else printf '{label}\\tabsent\\n'; fi"
            )
        };
        Probe::Command(format!(
            "command -v getent >/dev/null 2>&1 || {{ echo 'getent not found' >&2; exit 3; }}; \
e=$(getent passwd {n}) || exit 0; printf 'passwd\\t%s\\n' \"$e\"; printf 'primary\\t%s\\n' \"$(id -gn {n})\"; \
f={file}; d=$(dirname -- \"$f\"); {}; {}; \
if [ -f \"$f\" ]; then printf 'content\\n'; cat -- \"$f\"; fi",
            stat("dir", "d"),
            stat("file", "f"),
        ))
    }

    fn parse(q: &UserFileQuery, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        if out.rc != 0 {
            return Err(format!(
                "probe of {}'s {} failed (rc {}): {}",
                q.user,
                q.path,
                out.rc,
                out.stderr.trim()
            ));
        }
        let (head, content) = match out.stdout.split_once("\ncontent\n") {
            Some((h, c)) => (h, Some(c)),
            None => (out.stdout.trim_end_matches('\n'), None),
        };
        let mut home = None;
        let (mut primary, mut dir, mut file) = (String::new(), None, None);
        for line in head.lines() {
            let (kind, rest) = line.split_once('\t').unwrap_or((line, ""));
            match kind {
                "passwd" => {
                    let f: Vec<&str> = rest.split(':').collect();
                    // getent looks a numeric key up as a UID: only an entry with this name counts.
                    if f.len() >= 7 && f[0] == q.user {
                        home = Some(f[5].to_string());
                    }
                }
                "primary" => primary = rest.trim().to_string(),
                "dir" => dir = Some(stat_state(rest)?),
                "file" => file = Some(stat_state(rest)?),
                _ => {}
            }
        }
        let Some(home) = home else {
            return Ok(UserFile::NoUser);
        };
        let path = if q.path.starts_with('/') {
            q.path.clone()
        } else {
            format!("{}/{}", home.trim_end_matches('/'), q.path)
        };
        let (Some(dir), Some(mut file)) = (dir, file) else {
            return Err(format!(
                "unexpected output of the probe of {}'s {}: {:?}",
                q.user, q.path, out.stdout
            ));
        };
        if file.kind == FileKind::File {
            let c = content.unwrap_or_default().as_bytes().to_vec();
            file.size = c.len() as u64;
            file.content = Some(c);
        }
        Ok(UserFile::Found {
            home,
            primary,
            dir_path: dir_of(&path),
            path,
            dir: Box::new(dir),
            file: Box::new(file),
        })
    }
}

/// A `stat` line of the [`UserFile`] probe.
fn stat_state(rest: &str) -> Result<FileState, String> {
    if rest == "absent" {
        return Ok(FileState::absent());
    }
    let f: Vec<&str> = rest.split('\t').collect();
    let mode = f
        .first()
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .filter(|_| f.len() == 4)
        .ok_or_else(|| format!("unexpected stat output: {rest:?}"))?;
    let kind = match f[3] {
        "regular file" | "regular empty file" => FileKind::File,
        "directory" => FileKind::Dir,
        _ => FileKind::Other,
    };
    Ok(FileState {
        kind,
        mode,
        owner: f[1].into(),
        group: f[2].into(),
        size: 0,
        link_target: None,
        content: None,
    })
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
