//! The remote side of one invocation: a POSIX shell script that applies actions, observes probes
//! and gathers facts, and the parser for what it prints.
//!
//! Everything a round trip does is one script sent on stdin to `sh -s`, so a host needs nothing
//! but a shell and coreutils. The script prints one line per item, `KF <id> <kind> <fields>`,
//! with every free-form field base64-encoded (prefixed `=` so an empty value is still a field):
//! file contents, command output and paths with any bytes survive unharmed, and nothing the host
//! prints can be mistaken for a record. The whole body is one brace group reading from
//! /dev/null, so no command inside can swallow the rest of the script from stdin.

use crate::facts::{self, Facts};
use crate::module::shell_quote;
use crate::module::{
    Action, Attrs, CommandOutput, FileKind, FileState, Observation, Probe, MAX_CONTENT,
};
use base64::Engine as _;
use std::fmt::Write as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Shell functions every script defines.
const PRELUDE: &str = r#"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
umask 022
kf_b64() { base64 -w0 2>/dev/null || base64 | tr -d '\n'; }
kf_file() {
  kf_l=-
  [ -L "$2" ] && kf_l="=$(printf %s "$(readlink -- "$2")" | kf_b64)"
  if [ ! -e "$2" ]; then printf 'KF %s absent %s\n' "$1" "$kf_l"; return; fi
  if ! kf_s=$(stat -L -c '%a %U %G %s' -- "$2" 2>&1); then
    printf 'KF %s error =%s\n' "$1" "$(printf %s "$kf_s" | kf_b64)"; return
  fi
  if [ -d "$2" ]; then printf 'KF %s dir %s %s\n' "$1" "$kf_l" "$kf_s"; return; fi
  if [ ! -f "$2" ]; then printf 'KF %s other %s %s\n' "$1" "$kf_l" "$kf_s"; return; fi
  set -- "$1" "$2" $kf_s
  if [ "$6" -gt MAXCONTENT ]; then printf 'KF %s big %s %s %s %s %s\n' "$1" "$kf_l" "$3" "$4" "$5" "$6"; return; fi
  if [ ! -r "$2" ]; then printf 'KF %s error =%s\n' "$1" "$(printf 'permission denied' | kf_b64)"; return; fi
  printf 'KF %s file %s %s %s %s %s =' "$1" "$kf_l" "$3" "$4" "$5" "$6"; kf_b64 < "$2"; echo
}
kf_cmd() {
  [ -n "$kf_sd" ] || kf_sd=$(mktemp -d) || { kf_sd=; printf 'KF %s error =%s\n' "$1" "$(printf 'mktemp failed' | kf_b64)"; return; }
  ( eval "$2" ) >"$kf_sd/o" 2>"$kf_sd/e" </dev/null
  kf_rc=$?
  printf 'KF %s %s %s =' "$1" "$3" "$kf_rc"; [ ! -s "$kf_sd/o" ] || kf_b64 < "$kf_sd/o"
  printf ' ='; [ ! -s "$kf_sd/e" ] || kf_b64 < "$kf_sd/e"; echo
}
kf_fail() { printf 'KF %s fail %s =%s\n' "$1" "$2" "$(printf %s "$3" | kf_b64)"; exit 0; }
kf_try() { kf_i=$1; shift; kf_m=$("$@" 2>&1) || kf_fail "$kf_i" 1 "$kf_m"; }
kf_tmp=
kf_sd=
trap '[ -n "$kf_tmp" ] && rm -f "$kf_tmp"; [ -n "$kf_sd" ] && rm -rf "$kf_sd"' EXIT HUP INT TERM
"#;

/// One invocation's work: actions first (in order, stopping at the first failure), then probes,
/// then facts.
#[derive(Debug, Default)]
pub struct Script {
    pub actions: Vec<Action>,
    pub probes: Vec<Probe>,
    pub facts: bool,
    /// Run as root (through sudo when the login user is not root).
    pub become_: bool,
}

impl Script {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.probes.is_empty() && !self.facts
    }

    /// The shell text to send.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("{\n");
        s.push_str(&PRELUDE.replace("MAXCONTENT", &MAX_CONTENT.to_string()));
        for (i, a) in self.actions.iter().enumerate() {
            render_action(&mut s, &format!("a{i}"), a);
        }
        render_file_batch(&mut s, &self.probes);
        for (i, p) in self.probes.iter().enumerate() {
            match p {
                Probe::File(path) if !batched(path) => {
                    writeln!(s, "kf_file p{i} {}", shell_quote(path)).unwrap()
                }
                Probe::File(_) => {}
                Probe::Command(cmd) => writeln!(s, "kf_cmd p{i} {} cmd", shell_quote(cmd)).unwrap(),
            }
        }
        if self.facts {
            s.push_str(facts::SCRIPT);
        }
        s.push_str("echo 'KF end'\n} </dev/null\n");
        s
    }
}

/// Absolute paths are observed together (see [`render_file_batch`]); others one by one.
fn batched(path: &str) -> bool {
    path.starts_with('/')
}

/// Observe many files with a handful of processes instead of two per file: shell builtins sort
/// the paths, one `find` prints the metadata of all of them, one `cat` streams the contents of
/// the non-empty readable regular files (split on the controller by their sizes). Symlinks and
/// empty-looking files (`/proc/sys/...` report size 0) are read one by one with `kf_file`.
/// Prints `KF fs MARKS =STREAM`, one mark per batched path: `1` in the stream, `0` metadata
/// only, `s` observed alone.
fn render_file_batch(s: &mut String, probes: &[Probe]) {
    let paths: Vec<(usize, &String)> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Probe::File(path) if batched(path) => Some((i, path)),
            _ => None,
        })
        .collect();
    if paths.is_empty() {
        return;
    }
    s.push_str("set --; kf_x=m\n");
    for (i, path) in &paths {
        let q = shell_quote(path);
        writeln!(
            s,
            "if [ -L {q} ]; then kf_file p{i} {q}; kf_x=${{kf_x}}s; \
             elif [ -f {q} ] && [ -r {q} ] && [ -s {q} ]; then set -- \"$@\" {q}; kf_x=${{kf_x}}1; \
             elif [ -f {q} ]; then kf_file p{i} {q}; kf_x=${{kf_x}}s; else kf_x=${{kf_x}}0; fi"
        )
        .unwrap();
    }
    let all: Vec<String> = paths.iter().map(|(_, p)| shell_quote(p)).collect();
    // Metadata records, a sentinel record (its "path" is not absolute, so no real record can
    // look like it), then the contents: one stream, one base64 process.
    writeln!(
        s,
        "printf 'KF fs %s =' \"$kf_x\"; {{ find {} -maxdepth 0 -printf '%p\\0%y\\0%m\\0%u\\0%g\\0%s\\0' 2>/dev/null; \
         printf 'KF-DATA\\0\\0\\0\\0\\0\\0'; if [ $# -gt 0 ]; then cat -- \"$@\" 2>/dev/null; fi; }} | kf_b64; echo",
        all.join(" ")
    )
    .unwrap();
}

/// Turn a `KF fs` record into observations for the batched file probes.
fn parse_file_batch(
    probes: &[Probe],
    marks: &str,
    stream: &[u8],
    out: &mut [Option<Observation>],
) -> Result<(), ProtocolError> {
    let bad = |m: &str| ProtocolError::Malformed(format!("file batch: {m}"));
    // Six NUL-terminated fields per record, up to the sentinel; the rest is file contents.
    let mut by_path = std::collections::HashMap::new();
    let mut pos = 0;
    let data = loop {
        let mut rec: Vec<&[u8]> = Vec::with_capacity(6);
        for _ in 0..6 {
            let end = stream[pos..]
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| bad("truncated"))?;
            rec.push(&stream[pos..pos + end]);
            pos += end + 1;
        }
        if rec[0] == b"KF-DATA" {
            break &stream[pos..];
        }
        by_path.insert(String::from_utf8_lossy(rec[0]).into_owned(), rec);
    };
    let marks = marks.strip_prefix('m').ok_or_else(|| bad("marks"))?;
    let batched: Vec<(usize, &String)> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Probe::File(path) if batched(path) => Some((i, path)),
            _ => None,
        })
        .collect();
    if marks.len() != batched.len() {
        return Err(bad("wrong number of marks"));
    }
    let mut offset = 0usize;
    let mut streamed: Vec<(usize, FileState)> = Vec::new();
    for ((i, path), mark) in batched.into_iter().zip(marks.chars()) {
        if mark == 's' {
            continue; // observed alone: its own record
        }
        let Some(rec) = by_path.get(path.as_str()) else {
            out[i] = Some(Observation::File(FileState::absent()));
            continue;
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mode = u32::from_str_radix(&text(rec[2]), 8).map_err(|_| bad("mode"))?;
        let size: u64 = text(rec[5]).parse().map_err(|_| bad("size"))?;
        let kind = match rec[1] {
            b"f" => FileKind::File,
            b"d" => FileKind::Dir,
            _ => FileKind::Other,
        };
        let mut st = FileState {
            kind,
            mode,
            owner: text(rec[3]),
            group: text(rec[4]),
            size,
            link_target: None,
            content: None,
        };
        if mark == '1' && kind == FileKind::File {
            let end = offset + size as usize;
            if size <= MAX_CONTENT {
                st.content = data.get(offset..end).map(<[u8]>::to_vec);
            }
            offset = end;
            streamed.push((i, st));
        } else {
            out[i] = Some(Observation::File(st));
        }
    }
    // A file that changed size between `find` and `cat` shifts every later one: then none of
    // the streamed contents can be trusted.
    let consistent = offset == data.len()
        && streamed
            .iter()
            .all(|(_, st)| st.content.is_some() || st.size > MAX_CONTENT);
    for (i, st) in streamed {
        out[i] = Some(if consistent {
            Observation::File(st)
        } else {
            Observation::Error("the file changed while it was read; run again".into())
        });
    }
    Ok(())
}

fn render_attrs(s: &mut String, id: &str, path_var: &str, attrs: &Attrs) {
    if let Some(m) = attrs.mode {
        writeln!(s, "kf_try {id} chmod {:04o} -- \"{path_var}\"", m).unwrap();
    }
    match (&attrs.owner, &attrs.group) {
        (Some(o), Some(g)) => writeln!(
            s,
            "kf_try {id} chown -h -- {} \"{path_var}\"",
            shell_quote(&format!("{o}:{g}"))
        ),
        (Some(o), None) => writeln!(
            s,
            "kf_try {id} chown -h -- {} \"{path_var}\"",
            shell_quote(o)
        ),
        (None, Some(g)) => writeln!(
            s,
            "kf_try {id} chgrp -h -- {} \"{path_var}\"",
            shell_quote(g)
        ),
        (None, None) => Ok(()),
    }
    .unwrap();
}

fn render_action(s: &mut String, id: &str, action: &Action) {
    match action {
        Action::WriteFile {
            path,
            content,
            attrs,
            backup,
            validate,
        } => {
            // Every process started on the host costs: the common path (text content, no
            // backup) starts only `mv`, plus `chmod`/`chown` where attributes are set or copied.
            let p = shell_quote(path);
            writeln!(s, "kf_p={p}; kf_d=${{kf_p%/*}}; [ -n \"$kf_d\" ] || kf_d=/").unwrap();
            writeln!(s, "[ -d \"$kf_d\" ] || kf_try {id} mkdir -p -- \"$kf_d\"").unwrap();
            // A fresh name next to the target; noclobber refuses to follow anything already there.
            writeln!(s, "kf_tmp=\"$kf_d/.kvmforge.$$.{id}\"; set -C").unwrap();
            match std::str::from_utf8(content) {
                Ok(text) if !text.contains('\0') => {
                    writeln!(
                        s,
                        "{{ printf '%s' {} > \"$kf_tmp\"; }} 2>/dev/null",
                        shell_quote(text)
                    )
                    .unwrap();
                }
                _ => {
                    s.push_str("base64 -d > \"$kf_tmp\" 2>/dev/null <<'KF_EOF_'\n");
                    let encoded = B64.encode(content);
                    for chunk in encoded.as_bytes().chunks(76) {
                        s.push_str(std::str::from_utf8(chunk).unwrap());
                        s.push('\n');
                    }
                    s.push_str("KF_EOF_\n");
                }
            }
            writeln!(
                s,
                "kf_rc=$?; set +C; [ $kf_rc -eq 0 ] || {{ [ -e \"$kf_tmp\" ] || kf_tmp=; kf_fail {id} 1 \"cannot write a temporary file in $kf_d\"; }}"
            )
            .unwrap();
            // An existing file keeps its mode and owner unless they are given; a new one is 0644
            // (umask 022) and owned by whoever runs the script.
            let keep_mode = attrs.mode.is_none();
            let keep_owner = attrs.owner.is_none() || attrs.group.is_none();
            if keep_mode || keep_owner {
                writeln!(s, "if [ -e \"$kf_p\" ]; then").unwrap();
                if keep_mode {
                    writeln!(s, "kf_try {id} chmod --reference=\"$kf_p\" \"$kf_tmp\"").unwrap();
                }
                if keep_owner {
                    writeln!(s, "kf_try {id} chown --reference=\"$kf_p\" \"$kf_tmp\"").unwrap();
                }
                writeln!(s, "fi").unwrap();
            }
            if *backup {
                writeln!(
                    s,
                    "if [ -e \"$kf_p\" ]; then kf_try {id} cp -p -- \"$kf_p\" \"$kf_p.$(date +%Y%m%dT%H%M%S)~\"; fi"
                )
                .unwrap();
            }
            render_attrs(s, id, "$kf_tmp", attrs);
            if let Some(check) = validate {
                // `%s` is the staged file; the check runs in its own shell with the path as $1.
                let check = check.replace("%s", "\"$1\"");
                writeln!(
                    s,
                    "kf_m=$(sh -c {} kf \"$kf_tmp\" 2>&1) || kf_fail {id} 1 \"the new content of $kf_p failed its check ($kf_p is unchanged): $kf_m\"",
                    shell_quote(&check)
                )
                .unwrap();
            }
            writeln!(s, "kf_try {id} mv -f -- \"$kf_tmp\" \"$kf_p\"; kf_tmp=").unwrap();
            writeln!(s, "printf 'KF {id} ok\\n'").unwrap();
        }
        Action::SetAttrs { path, attrs } => {
            writeln!(s, "kf_p={}", shell_quote(path)).unwrap();
            render_attrs(s, id, "$kf_p", attrs);
            writeln!(s, "printf 'KF {id} ok\\n'").unwrap();
        }
        Action::MakeDir { path, attrs } => {
            writeln!(s, "kf_p={}", shell_quote(path)).unwrap();
            writeln!(s, "kf_try {id} mkdir -p -- \"$kf_p\"").unwrap();
            render_attrs(s, id, "$kf_p", attrs);
            writeln!(s, "printf 'KF {id} ok\\n'").unwrap();
        }
        Action::Remove { path } => {
            writeln!(s, "kf_p={}", shell_quote(path)).unwrap();
            writeln!(
                s,
                "case \"$kf_p\" in /|''|/.|/..) kf_fail {id} 1 \"refusing to remove $kf_p\";; esac"
            )
            .unwrap();
            writeln!(s, "kf_try {id} rm -rf -- \"$kf_p\"").unwrap();
            writeln!(s, "printf 'KF {id} ok\\n'").unwrap();
        }
        Action::Symlink { target, link } => {
            writeln!(
                s,
                "kf_p={}; kf_d=$(dirname -- \"$kf_p\")",
                shell_quote(link)
            )
            .unwrap();
            writeln!(s, "kf_tmp=\"$kf_d/.kvmforge.$$.lnk\"").unwrap();
            writeln!(
                s,
                "kf_try {id} ln -s -- {} \"$kf_tmp\"",
                shell_quote(target)
            )
            .unwrap();
            writeln!(s, "kf_try {id} mv -Tf -- \"$kf_tmp\" \"$kf_p\"; kf_tmp=").unwrap();
            writeln!(s, "printf 'KF {id} ok\\n'").unwrap();
        }
        Action::Run { cmd, chdir } => {
            let full = match chdir {
                Some(d) => format!("cd {} && {}", shell_quote(d), cmd),
                None => cmd.clone(),
            };
            writeln!(s, "kf_cmd {id} {} run", shell_quote(&full)).unwrap();
            writeln!(s, "[ \"$kf_rc\" -eq 0 ] || exit 0").unwrap();
        }
    }
}

/// What one action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    Done,
    /// A command ran (its exit code is in the output; non-zero stops the script).
    Ran(CommandOutput),
    Failed(String),
    /// The script stopped before reaching this action.
    NotRun,
}

/// Everything one invocation reported.
#[derive(Debug, Default)]
pub struct Report {
    pub actions: Vec<ActionOutcome>,
    pub observations: Vec<Observation>,
    pub facts: Option<Facts>,
    /// The script ran to its end.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed reply from host: {0}")]
    Malformed(String),
}

fn decode(field: Option<&str>) -> Result<Vec<u8>, ProtocolError> {
    let f = field.ok_or_else(|| ProtocolError::Malformed("missing field".into()))?;
    let f = f
        .strip_prefix('=')
        .ok_or_else(|| ProtocolError::Malformed(format!("bad field {f:?}")))?;
    B64.decode(f.as_bytes())
        .map_err(|e| ProtocolError::Malformed(format!("bad base64: {e}")))
}

fn decode_str(field: Option<&str>) -> Result<String, ProtocolError> {
    Ok(String::from_utf8_lossy(&decode(field)?).into_owned())
}

fn parse_file(kind: &str, mut f: std::str::SplitWhitespace) -> Result<Observation, ProtocolError> {
    let link = match f.next() {
        Some("-") | None => None,
        l => Some(decode_str(l)?),
    };
    if kind == "absent" {
        let mut st = FileState::absent();
        st.link_target = link;
        return Ok(Observation::File(st));
    }
    let bad = || ProtocolError::Malformed("bad stat fields".into());
    let mode = u32::from_str_radix(f.next().ok_or_else(bad)?, 8).map_err(|_| bad())?;
    let owner = f.next().ok_or_else(bad)?.to_string();
    let group = f.next().ok_or_else(bad)?.to_string();
    let size: u64 = f.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let (kind, content) = match kind {
        "dir" => (FileKind::Dir, None),
        "other" => (FileKind::Other, None),
        "big" => (FileKind::File, None),
        "file" => {
            let c = decode(f.next())?;
            (FileKind::File, Some(c))
        }
        k => return Err(ProtocolError::Malformed(format!("unknown file kind {k}"))),
    };
    let size = content.as_ref().map_or(size, |c| c.len() as u64);
    Ok(Observation::File(FileState {
        kind,
        mode,
        owner,
        group,
        size,
        link_target: link,
        content,
    }))
}

fn parse_command(mut f: std::str::SplitWhitespace) -> Result<CommandOutput, ProtocolError> {
    let rc = f
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| ProtocolError::Malformed("bad exit code".into()))?;
    Ok(CommandOutput {
        rc,
        stdout: decode_str(f.next())?,
        stderr: decode_str(f.next())?,
    })
}

/// Parse what a [`Script`] printed.
pub fn parse(script: &Script, stdout: &[u8]) -> Result<Report, ProtocolError> {
    let text = String::from_utf8_lossy(stdout);
    let mut report = Report {
        actions: vec![ActionOutcome::NotRun; script.actions.len()],
        observations: Vec::with_capacity(script.probes.len()),
        facts: None,
        complete: false,
    };
    let mut observations: Vec<Option<Observation>> = vec![None; script.probes.len()];
    let mut fact_lines = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("KF ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let id = f.next().unwrap_or_default();
        if id == "end" {
            report.complete = true;
            continue;
        }
        if id == "facts" {
            let key = f.next().unwrap_or_default().to_string();
            fact_lines.push((key, decode_str(f.next())?));
            continue;
        }
        if id == "fs" {
            let marks = f.next().unwrap_or_default();
            let stream = decode(f.next())?;
            parse_file_batch(&script.probes, marks, &stream, &mut observations)?;
            continue;
        }
        let kind = f.next().unwrap_or_default();
        let index = |prefix: char| -> Result<usize, ProtocolError> {
            id.strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ProtocolError::Malformed(format!("bad id {id}")))
        };
        if id.starts_with('a') {
            let i = index('a')?;
            let outcome = match kind {
                "ok" => ActionOutcome::Done,
                "run" => ActionOutcome::Ran(parse_command(f)?),
                "fail" => {
                    f.next();
                    ActionOutcome::Failed(decode_str(f.next())?)
                }
                k => {
                    return Err(ProtocolError::Malformed(format!(
                        "unknown action record {k}"
                    )))
                }
            };
            *report
                .actions
                .get_mut(i)
                .ok_or_else(|| ProtocolError::Malformed(format!("unexpected {id}")))? = outcome;
        } else {
            let i = index('p')?;
            let obs = match kind {
                "cmd" => Observation::Command(parse_command(f)?),
                "error" => Observation::Error(decode_str(f.next())?),
                k => parse_file(k, f)?,
            };
            *observations
                .get_mut(i)
                .ok_or_else(|| ProtocolError::Malformed(format!("unexpected {id}")))? = Some(obs);
        }
    }
    if script.facts && report.complete {
        report.facts = Some(facts::parse(&fact_lines));
    }
    if report.complete || observations.iter().all(Option::is_some) {
        for (i, o) in observations.into_iter().enumerate() {
            report.observations.push(o.ok_or_else(|| {
                ProtocolError::Malformed(format!("no answer for probe {:?}", script.probes[i]))
            })?);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Run a script with the local shell: the protocol is exercised for real.
    fn run(script: &Script) -> Report {
        let mut child = Command::new("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.render().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        parse(script, &out.stdout).unwrap()
    }

    #[test]
    fn observes_files_and_commands() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("it's a \"file\"");
        std::fs::write(&f, b"line1\n\x00binary\xff\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let s = Script {
            probes: vec![
                Probe::File(f.to_str().unwrap().into()),
                Probe::File(dir.path().join("missing").to_str().unwrap().into()),
                Probe::File(dir.path().to_str().unwrap().into()),
                Probe::File(link.to_str().unwrap().into()),
                Probe::Command("echo out; echo err >&2; exit 3".into()),
                Probe::Command("cat".into()),
            ],
            ..Default::default()
        };
        let r = run(&s);
        assert!(r.complete);
        let Observation::File(st) = &r.observations[0] else {
            panic!()
        };
        assert_eq!(st.kind, FileKind::File);
        assert_eq!(st.content.as_deref(), Some(&b"line1\n\x00binary\xff\n"[..]));
        assert_eq!(r.observations[1], Observation::File(FileState::absent()));
        let Observation::File(d) = &r.observations[2] else {
            panic!()
        };
        assert_eq!(d.kind, FileKind::Dir);
        let Observation::File(l) = &r.observations[3] else {
            panic!()
        };
        assert_eq!(l.link_target.as_deref(), f.to_str());
        assert_eq!(l.kind, FileKind::File);
        assert_eq!(
            r.observations[4],
            Observation::Command(CommandOutput {
                rc: 3,
                stdout: "out\n".into(),
                stderr: "err\n".into()
            })
        );
        // stdin is /dev/null: a probe cannot eat the script.
        assert_eq!(
            r.observations[5],
            Observation::Command(CommandOutput::ok(""))
        );
    }

    /// Command probes write their output into one scratch directory per script (not two temp
    /// files each: three processes less per probe); each probe sees only its own output, and
    /// the directory is gone when the script ends. Empty output is reported without running
    /// base64 on it.
    #[test]
    fn command_probes_share_one_scratch_dir_removed_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dirs");
        let l = log.to_str().unwrap();
        let s = Script {
            probes: vec![
                // where the probe's stdout goes, as fd 3, is logged
                Probe::Command(format!("echo first; echo e1 >&2; readlink /proc/self/fd/3 3>&1 >> '{l}'")),
                Probe::Command(format!("echo second; readlink /proc/self/fd/3 3>&1 >> '{l}'")),
                Probe::Command("exit 4".into()),
            ],
            ..Default::default()
        };
        let r = run(&s);
        assert!(r.complete);
        assert_eq!(
            r.observations[0],
            Observation::Command(CommandOutput { rc: 0, stdout: "first\n".into(), stderr: "e1\n".into() })
        );
        assert_eq!(
            r.observations[1],
            Observation::Command(CommandOutput { rc: 0, stdout: "second\n".into(), stderr: "".into() })
        );
        assert_eq!(
            r.observations[2],
            Observation::Command(CommandOutput { rc: 4, stdout: "".into(), stderr: "".into() })
        );
        let outs = std::fs::read_to_string(&log).unwrap();
        let dirs: Vec<&std::path::Path> =
            outs.lines().map(|l| std::path::Path::new(l).parent().unwrap()).collect();
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0], dirs[1], "one scratch directory for the script");
        assert!(dirs[0].is_absolute() && dirs[0] != std::path::Path::new("/"));
        assert!(!dirs[0].exists(), "removed when the script ends");
    }

    #[test]
    fn applies_actions_atomically_and_stops_at_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        std::fs::write(p("old"), "old\n").unwrap();
        std::fs::set_permissions(
            p("old"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let s = Script {
            actions: vec![
                Action::write(
                    &p("sub/new"),
                    "quote ' \" $HOME `x`\n",
                    Attrs {
                        mode: Some(0o600),
                        ..Default::default()
                    },
                    false,
                ),
                Action::write(&p("old"), "new\n", Attrs::default(), true),
                Action::run("echo hi"),
                Action::run("exit 4"),
                Action::Remove { path: p("old") },
            ],
            probes: vec![Probe::File(p("old"))],
            ..Default::default()
        };
        let r = run(&s);
        assert_eq!(r.actions[0], ActionOutcome::Done);
        assert_eq!(
            std::fs::read_to_string(p("sub/new")).unwrap(),
            "quote ' \" $HOME `x`\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(p("sub/new"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // mode kept on rewrite, backup made
        assert_eq!(
            std::fs::metadata(p("old")).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read_to_string(p("old")).unwrap(), "new\n");
        let backups: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with('~'))
            .collect();
        assert_eq!(backups.len(), 1);
        assert_eq!(r.actions[2], ActionOutcome::Ran(CommandOutput::ok("hi\n")));
        assert!(matches!(&r.actions[3], ActionOutcome::Ran(c) if c.rc == 4));
        assert_eq!(r.actions[4], ActionOutcome::NotRun);
        assert!(!r.complete);
        assert!(std::path::Path::new(&p("old")).exists());
        // No temporary files left behind.
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".kvmforge"))
            .count();
        assert_eq!(leftovers, 0);
    }

    /// A write with a check: the staged file is what the check reads; a refusal keeps the old
    /// file, fails with the checker's words, stops the script and leaves no temporary file.
    #[test]
    fn validated_writes_replace_only_what_passes_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        std::fs::write(p("conf"), "good 1\n").unwrap();
        let check = "grep -q '^good' %s || { echo \"bad line in $(basename %s)\" >&2; exit 1; }";
        let s = Script {
            actions: vec![
                Action::write(&p("conf"), "good 2\n", Attrs::default(), false).validated(check),
                Action::write(&p("conf"), "bad 3\n", Attrs::default(), false).validated(check),
                Action::run("echo never"),
            ],
            ..Default::default()
        };
        let r = run(&s);
        assert_eq!(r.actions[0], ActionOutcome::Done);
        let ActionOutcome::Failed(why) = &r.actions[1] else {
            panic!("{:?}", r.actions[1])
        };
        assert!(
            why.contains("failed its check") && why.contains("bad line in .kvmforge."),
            "{why}"
        );
        assert_eq!(r.actions[2], ActionOutcome::NotRun);
        assert_eq!(std::fs::read_to_string(p("conf")).unwrap(), "good 2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn batched_file_probes_split_contents_correctly() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        std::fs::write(p("a"), "first\n").unwrap();
        std::fs::write(p("empty"), "").unwrap();
        std::fs::write(p("c"), "third file\n").unwrap();
        std::fs::create_dir(p("d")).unwrap();
        let probes: Vec<Probe> = ["a", "missing", "empty", "d", "c"]
            .iter()
            .map(|n| Probe::File(p(n)))
            .chain([
                Probe::File("/proc/sys/kernel/ostype".into()),
                Probe::Command("echo between".into()),
                Probe::File("relative/path".into()),
            ])
            .collect();
        let r = run(&Script {
            probes,
            ..Default::default()
        });
        let text = |i: usize| match &r.observations[i] {
            Observation::File(st) => st
                .content
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(0).as_deref(), Some("first\n"));
        assert_eq!(r.observations[1], Observation::File(FileState::absent()));
        assert_eq!(text(2).as_deref(), Some(""));
        assert!(matches!(&r.observations[3], Observation::File(st) if st.kind == FileKind::Dir));
        assert_eq!(text(4).as_deref(), Some("third file\n"));
        assert_eq!(
            text(5).as_deref(),
            Some("Linux\n"),
            "size-0 /proc files are read alone"
        );
        assert_eq!(
            r.observations[6],
            Observation::Command(CommandOutput::ok("between\n"))
        );
        assert_eq!(r.observations[7], Observation::File(FileState::absent()));
    }

    #[test]
    fn binary_and_text_contents_are_written_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin").to_str().unwrap().to_string();
        let text = dir.path().join("text").to_str().unwrap().to_string();
        let empty = dir.path().join("empty").to_str().unwrap().to_string();
        let binary = b"\x00\xff\xfe KF_EOF_\n'\"%s\\".to_vec();
        let odd = "100% \\n %s %b '\"' \u{e9}\n\n";
        let s = Script {
            actions: vec![
                Action::write(&bin, binary.clone(), Attrs::default(), false),
                Action::write(&text, odd, Attrs::default(), false),
                Action::write(&empty, "", Attrs::default(), false),
            ],
            ..Default::default()
        };
        let r = run(&s);
        assert!(
            r.actions.iter().all(|a| *a == ActionOutcome::Done),
            "{:?}",
            r.actions
        );
        assert_eq!(std::fs::read(&bin).unwrap(), binary);
        assert_eq!(std::fs::read_to_string(&text).unwrap(), odd);
        assert_eq!(std::fs::read(&empty).unwrap(), b"");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&text).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn write_failure_is_reported_not_half_done() {
        let s = Script {
            actions: vec![Action::write(
                "/proc/kvmforge-cannot/x",
                "a",
                Attrs::default(),
                false,
            )],
            ..Default::default()
        };
        let r = run(&s);
        assert!(
            matches!(&r.actions[0], ActionOutcome::Failed(_)),
            "{:?}",
            r.actions
        );
    }

    #[test]
    fn refuses_to_remove_root() {
        let s = Script {
            actions: vec![Action::Remove { path: "/".into() }],
            ..Default::default()
        };
        let r = run(&s);
        assert!(matches!(&r.actions[0], ActionOutcome::Failed(m) if m.contains("refusing")));
    }
}
