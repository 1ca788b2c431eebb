//! Planning helpers shared by modules that manage whole files or lines in them.

use crate::module::{Action, Attrs, Change, FileKind, FileState, ModuleError, Plan};

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
}
