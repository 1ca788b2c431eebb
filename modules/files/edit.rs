//! Planning helpers for modules that manage whole files or lines in them (here and in other
//! families: the kernel modules write their own files with them).

use crate::module::{
    Action, ArgError, Attrs, Change, FileKind, FileState, ModuleError, Observed, Plan,
};

/// Plan for `path` to hold exactly `desired` with `attrs`: a write (with a diff) when the content
/// differs or the file is missing, an attribute change when only those differ, nothing otherwise.
/// A `validate` parameter checked: it must name the staged file with `%s`, as in Ansible.
pub fn validate_command(cmd: Option<String>) -> Result<Option<String>, ArgError> {
    match cmd {
        Some(c) if !c.contains("%s") => Err(ArgError::invalid(
            "validate",
            format!("validate must contain %s (the staged file's path), e.g. \"visudo -cf %s\"; got {c:?}"),
        )),
        c => Ok(c),
    }
}

/// Every file write of `plan` checked by `cmd` before it replaces the old file.
pub fn validate_writes(plan: &mut Plan, cmd: Option<&str>) {
    let Some(cmd) = cmd else { return };
    for a in &mut plan.actions {
        if matches!(a, Action::WriteFile { .. }) {
            *a = a.clone().validated(cmd);
        }
    }
}

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
            return Err(ModuleError::Host(format!(
                "{path} exists and is not a regular file"
            )))
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
            [Action::write(
                path,
                desired,
                attrs.clone(),
                backup && state.exists(),
            )],
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

/// What a module editing `path` in place observes: the file, and its parent when it may create
/// the file.
pub fn edit_probes(path: &str, create: bool) -> Vec<crate::module::Probe> {
    let mut probes = vec![crate::module::Probe::File(path.to_string())];
    if create {
        probes.extend(parent_dir(path).map(crate::module::Probe::File));
    }
    probes
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

/// A file's content as lines for modules that edit lines in place (`lineinfile`, `blockinfile`).
///
/// Lines are bytes without their `\n` (a `\r` stays part of its line), so files that are not
/// UTF-8 survive untouched and an edit changes only the lines it means to. [`Lines::to_bytes`]
/// reproduces the original exactly; a file missing its final newline keeps it missing unless an
/// edit reaches the end of the file, after which the file ends with a newline.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lines {
    pub lines: Vec<Vec<u8>>,
    /// Whether the last line is terminated by `\n`.
    pub final_newline: bool,
}

impl Lines {
    pub fn parse(content: &[u8]) -> Self {
        if content.is_empty() {
            return Lines::default();
        }
        let final_newline = content.ends_with(b"\n");
        let body = if final_newline {
            &content[..content.len() - 1]
        } else {
            content
        };
        Lines {
            lines: body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect(),
            final_newline,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.lines.join(&b'\n');
        if !self.lines.is_empty() && self.final_newline {
            out.push(b'\n');
        }
        out
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Replace the lines in `range` with `new`.
    pub fn splice(&mut self, range: std::ops::Range<usize>, new: Vec<Vec<u8>>) {
        if range.end == self.lines.len() {
            self.final_newline = true;
        }
        self.lines.splice(range, new);
    }

    /// Remove every line `matches` accepts; returns how many were removed.
    pub fn remove_matching(&mut self, matches: impl FnMut(&[u8]) -> bool) -> usize {
        self.remove_matching_in(0..self.lines.len(), matches)
    }

    /// Remove the lines within `range` that `matches` accepts (a section of an INI file);
    /// returns how many were removed.
    pub fn remove_matching_in(
        &mut self,
        range: std::ops::Range<usize>,
        mut matches: impl FnMut(&[u8]) -> bool,
    ) -> usize {
        let (mut i, mut end, mut removed) = (range.start, range.end.min(self.lines.len()), 0);
        while i < end {
            if matches(&self.lines[i]) {
                self.splice(i..i + 1, Vec::new());
                end -= 1;
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Make `line` the only line within `range` that `matches` accepts (a `KEY=value` setting):
    /// the first match becomes `line` unless it already is, later matches are removed, and
    /// without any match `line` is inserted at the end of `range`. Returns whether anything
    /// changed.
    pub fn set_line(
        &mut self,
        range: std::ops::Range<usize>,
        mut matches: impl FnMut(&[u8]) -> bool,
        line: &[u8],
    ) -> bool {
        let end = range.end.min(self.lines.len());
        match (range.start..end).find(|&i| matches(&self.lines[i])) {
            Some(first) => {
                let mut changed = strip_cr(&self.lines[first]) != line;
                if changed {
                    self.splice(first..first + 1, vec![line.to_vec()]);
                }
                changed |= self.remove_matching_in(first + 1..end, matches) > 0;
                changed
            }
            None => {
                self.splice(end..end, vec![line.to_vec()]);
                true
            }
        }
    }
}

/// A line without a trailing `\r` (so CRLF files compare like LF ones).
pub fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where to insert new lines when the text is not in the file yet (`insertafter` /
/// `insertbefore`, as in Ansible).
#[derive(Debug, Clone)]
pub enum InsertAt {
    Bof,
    Eof,
    /// After the last matching line (the first with `firstmatch`); at the end if none matches.
    After(regex::bytes::Regex),
    /// Before the last matching line (the first with `firstmatch`); at the end if none matches.
    Before(regex::bytes::Regex),
}

impl InsertAt {
    /// From the `insertafter` / `insertbefore` parameters: `EOF` and `BOF` are keywords (either
    /// keyword is accepted by either parameter, as Ansible does), anything else a regular
    /// expression. Giving both is an error.
    pub fn from_params(after: Option<&str>, before: Option<&str>) -> Result<Self, ModuleError> {
        match (after, before) {
            (Some(_), Some(_)) => Err(ArgError::conflict(
                "insertafter",
                "insertbefore",
                "insertafter and insertbefore are mutually exclusive",
            )
            .into()),
            (None, None) | (Some("EOF"), None) => Ok(InsertAt::Eof),
            (Some("BOF"), None) | (None, Some("BOF")) => Ok(InsertAt::Bof),
            (Some(re), None) => Ok(InsertAt::After(regex(re, "insertafter")?)),
            (None, Some(re)) => Ok(InsertAt::Before(regex(re, "insertbefore")?)),
        }
    }

    /// The index at which to insert into `lines`.
    pub fn position(&self, lines: &Lines, firstmatch: bool) -> usize {
        let find = |re: &regex::bytes::Regex| {
            let mut hits = lines
                .lines
                .iter()
                .enumerate()
                .filter(|(_, l)| re.is_match(l));
            if firstmatch {
                hits.next().map(|(i, _)| i)
            } else {
                hits.next_back().map(|(i, _)| i)
            }
        };
        match self {
            InsertAt::Bof => 0,
            InsertAt::Eof => lines.len(),
            InsertAt::After(re) => find(re).map_or(lines.len(), |i| i + 1),
            InsertAt::Before(re) => find(re).unwrap_or(lines.len()),
        }
    }
}

/// Compile a user-supplied regular expression (matched against single lines, unanchored like
/// Python's `re.search`), naming the parameter in the error.
/// Compiled once per run: the same pattern is used for every host, and compiling costs far more
/// than matching a file's lines.
pub fn regex(pattern: &str, param: &'static str) -> Result<regex::bytes::Regex, ModuleError> {
    static COMPILED: crate::memo::Memo<String, regex::bytes::Regex> = crate::memo::Memo::new();
    COMPILED.get_or_try(pattern, || {
        regex::bytes::Regex::new(pattern).map_err(|e| {
            ArgError::invalid(
                param,
                format!("{param} `{pattern}` is not a valid regular expression: {e}"),
            )
            .into()
        })
    })
}

/// The directory containing `path`, unless that is `/` or nothing.
pub fn parent_dir(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let (parent, _) = trimmed.rsplit_once('/')?;
    let parent = parent.trim_end_matches('/');
    (!parent.is_empty()).then(|| parent.to_string())
}

/// The path to write new content to so that an edited symlink stays a symlink: its target
/// (relative targets resolve against the link's directory), else `path` itself. Only one level
/// is resolved, which is all a [`FileState`] tells.
pub fn write_target(path: &str, state: &FileState) -> String {
    match &state.link_target {
        Some(t) if t.starts_with('/') => t.clone(),
        Some(t) => match parent_dir(path) {
            Some(dir) => format!("{dir}/{t}"),
            None if path.starts_with('/') => format!("/{t}"),
            None => t.clone(),
        },
        None => path.to_string(),
    }
}

/// Check that an observed path can be edited line by line: a regular file (possibly through a
/// symlink) whose content was read, or nothing at all.
pub fn editable(path: &str, state: &FileState) -> Result<(), ModuleError> {
    match state.kind {
        FileKind::Absent => Ok(()),
        FileKind::Dir => Err(ModuleError::Host(format!("{path} is a directory"))),
        FileKind::Other => Err(ModuleError::Host(match &state.link_target {
            Some(t) => {
                format!("{path} is a symlink to {t}, which does not exist or is not a regular file")
            }
            None => format!("{path} exists and is not a regular file"),
        })),
        FileKind::File if state.content.is_none() => Err(ModuleError::Host(format!(
            "{path} is too large to edit ({} bytes)",
            state.size
        ))),
        FileKind::File => Ok(()),
    }
}

/// Plan writing the edited content of a file that [`editable`] accepted: to an existing file
/// through a symlink to its target, or a new file after making its missing parent directory
/// (whose state the module must have probed).
pub fn write_edited(
    plan: &mut Plan,
    path: &str,
    state: &FileState,
    observed: &Observed,
    content: &[u8],
    attrs: &Attrs,
    backup: bool,
) -> Result<(), ModuleError> {
    if !state.exists() {
        if let Some(parent) = parent_dir(path) {
            if !observed.file(&parent)?.exists() {
                plan.change(
                    Change::new(format!("create directory {parent}")),
                    [Action::MakeDir {
                        path: parent,
                        attrs: Attrs::default(),
                    }],
                );
            }
        }
    }
    ensure_content(
        plan,
        &write_target(path, state),
        state,
        content,
        attrs,
        backup,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_equal_is_ok() {
        let mut p = Plan::ok();
        ensure_content(
            &mut p,
            "/x",
            &FileState::file("a\n"),
            b"a\n",
            &Attrs::default(),
            false,
        )
        .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn content_differs_writes_with_diff_and_backup_only_if_existing() {
        let mut p = Plan::ok();
        ensure_content(
            &mut p,
            "/x",
            &FileState::absent(),
            b"a\n",
            &Attrs::default(),
            true,
        )
        .unwrap();
        assert_eq!(p.changes[0].summary, "create /x");
        assert!(matches!(
            &p.actions[0],
            Action::WriteFile { backup: false, .. }
        ));
        let mut p = Plan::ok();
        ensure_content(
            &mut p,
            "/x",
            &FileState::file("b\n"),
            b"a\n",
            &Attrs::default(),
            true,
        )
        .unwrap();
        assert!(matches!(
            &p.actions[0],
            Action::WriteFile { backup: true, .. }
        ));
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!((d.before.as_str(), d.after.as_str()), ("b\n", "a\n"));
    }

    #[test]
    fn only_mode_differs() {
        let mut p = Plan::ok();
        let attrs = Attrs {
            mode: Some(0o600),
            ..Attrs::default()
        };
        ensure_content(&mut p, "/x", &FileState::file("a"), b"a", &attrs, false).unwrap();
        assert_eq!(p.changes[0].summary, "/x: mode 0644 -> 0600");
        assert!(matches!(&p.actions[0], Action::SetAttrs { .. }));
    }

    #[test]
    fn byte_lines_roundtrip_exactly() {
        for text in [&b""[..], b"a", b"a\n", b"a\r\nb", b"\n\n", b"x\xff\ny\n"] {
            assert_eq!(Lines::parse(text).to_bytes(), text, "{text:?}");
        }
        assert_eq!(Lines::parse(b"\n").lines, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn edits_keep_a_missing_final_newline_unless_they_reach_the_end() {
        let mut l = Lines::parse(b"a\nb");
        l.splice(0..0, vec![b"x".to_vec()]);
        assert_eq!(l.to_bytes(), b"x\na\nb");
        l.splice(3..3, vec![b"y".to_vec()]);
        assert_eq!(l.to_bytes(), b"x\na\nb\ny\n");
        let mut l = Lines::parse(b"a\nb");
        assert_eq!(l.remove_matching(|x| x == b"b"), 1);
        assert_eq!(l.to_bytes(), b"a\n");
        let mut l = Lines::parse(b"a\nb");
        l.remove_matching(|x| x == b"a");
        assert_eq!(l.to_bytes(), b"b");
    }

    #[test]
    fn settings_are_set_once_within_their_range() {
        let mut l = Lines::parse(b"[main]\nx=1\nproxy=a\nproxy=b\n[repo]\nproxy=c");
        let proxy = |l: &[u8]| l.starts_with(b"proxy=");
        assert!(l.set_line(0..4, proxy, b"proxy=z"));
        assert_eq!(l.to_bytes(), b"[main]\nx=1\nproxy=z\n[repo]\nproxy=c");
        assert!(!l.set_line(0..3, proxy, b"proxy=z"));
        let mut l = Lines::parse(b"[main]\nx=1\n[repo]\n");
        assert!(l.set_line(0..2, proxy, b"proxy=z"));
        assert_eq!(l.to_bytes(), b"[main]\nx=1\nproxy=z\n[repo]\n");
        assert_eq!(l.remove_matching_in(0..3, proxy), 1);
        assert_eq!(l.to_bytes(), b"[main]\nx=1\n[repo]\n");
        // A file without a final newline gains one only when the edit reaches its end.
        let mut l = Lines::parse(b"A=1");
        assert!(l.set_line(0..1, proxy, b"proxy=z"));
        assert_eq!(l.to_bytes(), b"A=1\nproxy=z\n");
    }

    #[test]
    fn insert_positions() {
        let l = Lines::parse(b"a1\nb\na2\n");
        let re = || regex::bytes::Regex::new("^a").unwrap();
        assert_eq!(InsertAt::Bof.position(&l, false), 0);
        assert_eq!(InsertAt::Eof.position(&l, false), 3);
        assert_eq!(InsertAt::After(re()).position(&l, false), 3);
        assert_eq!(InsertAt::After(re()).position(&l, true), 1);
        assert_eq!(InsertAt::Before(re()).position(&l, false), 2);
        assert_eq!(InsertAt::Before(re()).position(&l, true), 0);
        let none = regex::bytes::Regex::new("^zzz").unwrap();
        assert_eq!(InsertAt::Before(none.clone()).position(&l, false), 3);
        assert_eq!(InsertAt::After(none).position(&l, true), 3);
    }

    #[test]
    fn paths() {
        assert_eq!(parent_dir("/etc/x.conf").as_deref(), Some("/etc"));
        assert_eq!(parent_dir("/etc/a/b/").as_deref(), Some("/etc/a"));
        assert_eq!(parent_dir("/x"), None);
        assert_eq!(parent_dir("x"), None);
        let link = |t: &str| FileState {
            link_target: Some(t.into()),
            ..FileState::file("")
        };
        assert_eq!(
            write_target("/etc/resolv.conf", &link("../run/r.conf")),
            "/etc/../run/r.conf"
        );
        assert_eq!(
            write_target("/etc/resolv.conf", &link("/run/r.conf")),
            "/run/r.conf"
        );
        assert_eq!(write_target("/x", &link("y")), "/y");
        assert_eq!(write_target("/etc/x", &FileState::file("")), "/etc/x");
    }

    #[test]
    fn lines_roundtrip() {
        assert_eq!(
            lines("a\nb\n"),
            (vec!["a".to_string(), "b".to_string()], true)
        );
        assert_eq!(
            lines("a\nb"),
            (vec!["a".to_string(), "b".to_string()], false)
        );
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
}
