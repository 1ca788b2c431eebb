//! Planning helpers shared by modules that manage whole files or lines in them.

use crate::module::{shell_quote, Action, Attrs, Change, FileKind, FileState, ModuleError, Plan};

/// Plan for `path` to hold exactly `desired` with `attrs`: a write (with a diff) when the content
/// differs or the file is missing, an attribute change when only those differ, nothing otherwise.
pub fn ensure_content(
    plan: &mut Plan,
    path: &str,
    state: &FileState,
    desired: &[u8],
    attrs: &Attrs,
    backup: bool,
) -> Result<(), ModuleError> {
    match state.kind {
        FileKind::Dir => return Err(ModuleError::Host(format!("{path} is a directory"))),
        FileKind::Other if state.link_target.is_none() => {
            return Err(ModuleError::Host(format!("{path} exists and is not a regular file")))
        }
        _ => {}
    }
    if state.kind == FileKind::File && state.content.is_none() {
        return Err(ModuleError::Host(format!(
            "{path} is too large to compare ({} bytes)",
            state.size
        )));
    }
    let current = state.content.as_deref();
    if current != Some(desired) {
        let summary = if state.exists() {
            format!("update {path}")
        } else {
            format!("create {path}")
        };
        plan.change(
            Change::new(summary).with_diff(
                path,
                String::from_utf8_lossy(current.unwrap_or_default()),
                String::from_utf8_lossy(desired),
            ),
            [Action::write(path, desired, attrs.clone(), backup && state.exists())],
        );
    } else {
        ensure_attrs(plan, path, state, attrs);
    }
    Ok(())
}

/// Plan attribute changes for an existing path.
pub fn ensure_attrs(plan: &mut Plan, path: &str, state: &FileState, attrs: &Attrs) {
    let diffs = attrs.differences(state);
    if !diffs.is_empty() {
        plan.change(
            Change::new(format!("{path}: {}", diffs.join(", "))),
            [Action::SetAttrs {
                path: path.into(),
                attrs: attrs.clone(),
            }],
        );
    }
}

/// Plan for `path` not to exist.
pub fn ensure_absent(plan: &mut Plan, path: &str, state: &FileState) {
    if state.exists() || state.link_target.is_some() {
        plan.change(
            Change::new(format!("remove {path}")).with_diff(path, state.text(), ""),
            [Action::Remove { path: path.into() }],
        );
    }
}

/// Split text into lines, remembering whether it ended with a newline.
pub fn lines(text: &str) -> (Vec<String>, bool) {
    let trailing = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return (Vec::new(), false);
    }
    (body.split('\n').map(str::to_string).collect(), trailing)
}

/// Join lines back; a non-empty file always ends with a newline (what every config tool expects).
pub fn unlines(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The text of a file a module edits in place: `None` when it does not exist (a dangling symlink
/// counts as missing, as for [`ensure_content`]); an error when it is not a regular file whose
/// content was observed.
pub fn existing_text(path: &str, state: &FileState) -> Result<Option<String>, ModuleError> {
    match state.kind {
        FileKind::Absent => Ok(None),
        FileKind::Other if state.link_target.is_some() => Ok(None),
        FileKind::Other => Err(ModuleError::Host(format!(
            "{path} exists and is not a regular file"
        ))),
        FileKind::Dir => Err(ModuleError::Host(format!("{path} is a directory"))),
        FileKind::File => match &state.content {
            Some(c) => Ok(Some(String::from_utf8_lossy(c).into_owned())),
            None => Err(ModuleError::Host(format!(
                "{path} is too large to compare ({} bytes)",
                state.size
            ))),
        },
    }
}

/// A sysctl key in `/proc/sys`-relative path form, as sysctl(8) reads keys: when the first
/// separator is a dot, dots and slashes swap (`net.ipv4.conf.eth0/100.rp_filter` is
/// `net/ipv4/conf/eth0.100/rp_filter`, the VLAN interface `eth0.100`); a key whose first
/// separator is a slash is a path already.
pub fn sysctl_path(key: &str) -> String {
    swap_separators(key, '/')
}

/// A sysctl key in dotted form (`net.ipv4.ip_forward`), the inverse of [`sysctl_path`].
pub fn sysctl_dotted(key: &str) -> String {
    swap_separators(key, '.')
}

fn swap_separators(key: &str, wanted: char) -> String {
    match key.chars().find(|c| *c == '.' || *c == '/') {
        Some(c) if c != wanted => key
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => key.to_string(),
    }
}

/// A sysctl value as the kernel reports it, whitespace-normalised: `/proc/sys` separates fields
/// with tabs (`32768\t60999\n`), files and users with any spaces.
pub fn sysctl_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `sysctl -w` setting the given dotted keys, each `key=value` quoted as one word.
pub fn sysctl_set_cmd(pairs: &[(String, String)]) -> String {
    let words: Vec<String> = pairs
        .iter()
        .map(|(k, v)| shell_quote(&format!("{k}={v}")))
        .collect();
    format!("sysctl -w {}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_equal_is_ok() {
        let mut p = Plan::ok();
        ensure_content(&mut p, "/x", &FileState::file("a\n"), b"a\n", &Attrs::default(), false).unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn content_differs_writes_with_diff_and_backup_only_if_existing() {
        let mut p = Plan::ok();
        ensure_content(&mut p, "/x", &FileState::absent(), b"a\n", &Attrs::default(), true).unwrap();
        assert_eq!(p.changes[0].summary, "create /x");
        assert!(matches!(&p.actions[0], Action::WriteFile { backup: false, .. }));
        let mut p = Plan::ok();
        ensure_content(&mut p, "/x", &FileState::file("b\n"), b"a\n", &Attrs::default(), true).unwrap();
        assert!(matches!(&p.actions[0], Action::WriteFile { backup: true, .. }));
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!((d.before.as_str(), d.after.as_str()), ("b\n", "a\n"));
    }

    #[test]
    fn only_mode_differs() {
        let mut p = Plan::ok();
        let attrs = Attrs { mode: Some(0o600), ..Attrs::default() };
        ensure_content(&mut p, "/x", &FileState::file("a"), b"a", &attrs, false).unwrap();
        assert_eq!(p.changes[0].summary, "/x: mode 0644 -> 0600");
        assert!(matches!(&p.actions[0], Action::SetAttrs { .. }));
    }

    #[test]
    fn lines_roundtrip() {
        assert_eq!(lines("a\nb\n"), (vec!["a".to_string(), "b".to_string()], true));
        assert_eq!(lines("a\nb"), (vec!["a".to_string(), "b".to_string()], false));
        assert_eq!(unlines(&lines("a\nb").0), "a\nb\n");
        assert_eq!(lines(""), (vec![], false));
    }

    #[test]
    fn existing_text_of_missing_file_and_errors() {
        assert_eq!(existing_text("/x", &FileState::absent()), Ok(None));
        assert_eq!(
            existing_text("/x", &FileState::file("a\n")),
            Ok(Some("a\n".into()))
        );
        assert!(existing_text("/x", &FileState::dir()).is_err());
        let mut big = FileState::file("");
        big.content = None;
        assert!(existing_text("/x", &big).is_err());
    }

    #[test]
    fn sysctl_key_forms() {
        assert_eq!(sysctl_path("net.ipv4.ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(sysctl_path("net/ipv4/ip_forward"), "net/ipv4/ip_forward");
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/100.rp_filter"),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/rp_filter"),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            sysctl_dotted("net/ipv4/conf/eth0.100/rp_filter"),
            "net.ipv4.conf.eth0/100.rp_filter"
        );
        assert_eq!(sysctl_dotted("vm.swappiness"), "vm.swappiness");
    }

    #[test]
    fn sysctl_values_and_command() {
        assert_eq!(sysctl_value("32768\t60999\n"), "32768 60999");
        assert_eq!(
            sysctl_set_cmd(&[("net.ipv4.ip_local_port_range".into(), "32768 60999".into())]),
            "sysctl -w 'net.ipv4.ip_local_port_range=32768 60999'"
        );
    }
}
