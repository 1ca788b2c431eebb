//! `blockinfile`: a block of lines between marker lines in a file.

use super::edit::{self, InsertAt, Lines};
use crate::module::{
    ArgError, Attrs, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct BlockInFile;

static SPEC: ModuleSpec = ModuleSpec {
    name: "blockinfile",
    summary: "Ensure a block of lines between marker lines is in a file, or is not",
    description: "Manages the lines between two marker lines, `marker` with `{mark}` replaced by \
`marker_begin` and by `marker_end`. A marker is recognised only on a line of its own that equals \
it (trailing whitespace and `\\r` ignored), so the block is found again on every run and never \
inserted twice. When the markers are there, what is between them is replaced in place if it \
differs from `block`; otherwise the markers and block are inserted at the end of the file, after \
the last line matching `insertafter`, or before the last line matching `insertbefore` (`BOF` \
means the beginning; at the end when nothing matches). `state: absent`, or an empty `block`, \
removes the markers and everything between them. The rest of the file is kept byte for byte and \
the file is only written (atomically) when the block changes.\n\n\
A begin marker without its end marker (or the other way round, the end before the begin, or a \
marker appearing twice) is an error naming the lines: the module does not guess where a damaged \
block ends. A missing file is an error unless `create: true` (missing parent directories are \
created too); with `state: absent` or an empty block a missing file is fine.",
    params: &[
        ParamSpec::required("path", ParamKind::Str, "The file to edit").aliases(&["dest", "name"]),
        ParamSpec::with_default(
            "block",
            ParamKind::Str,
            "\"\"",
            "The lines to put between the markers",
        )
        .aliases(&["content"]),
        ParamSpec::with_default(
            "marker",
            ParamKind::Str,
            "\"# {mark} KVMFORGE MANAGED BLOCK\"",
            "Marker line template; {mark} becomes marker_begin or marker_end",
        ),
        ParamSpec::with_default(
            "marker_begin",
            ParamKind::Str,
            "BEGIN",
            "What {mark} becomes in the first marker",
        ),
        ParamSpec::with_default(
            "marker_end",
            ParamKind::Str,
            "END",
            "What {mark} becomes in the last marker",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "Whether the block must be there",
        ),
        ParamSpec::optional(
            "insertafter",
            ParamKind::Str,
            "Regular expression, or EOF: where a new block goes",
        ),
        ParamSpec::optional(
            "insertbefore",
            ParamKind::Str,
            "Regular expression, or BOF: where a new block goes",
        ),
        ParamSpec::with_default(
            "create",
            ParamKind::Bool,
            "false",
            "Create the file if it is missing",
        ),
        ParamSpec::with_default(
            "backup",
            ParamKind::Bool,
            "false",
            "Keep a timestamped copy of the old file",
        ),
        ParamSpec::optional("mode", ParamKind::Mode, "Permissions, e.g. \"0644\""),
        ParamSpec::optional("owner", ParamKind::Str, "Owning user"),
        ParamSpec::optional("group", ParamKind::Str, "Owning group"),
    ],
    free_form: None,
    example: r##"- name: Hosts of the cluster
  blockinfile:
    path: /etc/hosts
    marker: "# {mark} kvm cluster"
    block: |
      192.168.121.11 hv1
      192.168.121.12 hv2
"##,
};

/// A `blockinfile` task's arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Params {
    path: String,
    block: String,
    marker: String,
    marker_begin: String,
    marker_end: String,
    state: Presence,
    insertafter: Option<String>,
    insertbefore: Option<String>,
    create: bool,
    backup: bool,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
}

/// A `blockinfile` task's arguments, checked, with the lines the block must be.
#[derive(Debug)]
pub struct Request {
    path: String,
    begin: Vec<u8>,
    end: Vec<u8>,
    /// Marker, block lines, marker; empty when the block must not be there.
    wanted: Vec<Vec<u8>>,
    insert: InsertAt,
    create: bool,
    backup: bool,
    attrs: Attrs,
}

/// A line without trailing whitespace (and `\r`), for comparing with a marker.
fn trim_end(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

impl Request {
    fn from_params(p: Params) -> Result<Self, ModuleError> {
        let begin = p.marker.replace("{mark}", &p.marker_begin);
        let end = p.marker.replace("{mark}", &p.marker_end);
        for m in [&begin, &end] {
            if m.contains(['\n', '\r']) {
                return Err(ArgError::invalid(
                    "marker",
                    format!("marker `{m}` must be a single line"),
                )
                .into());
            }
            if m.trim().is_empty() {
                return Err(ArgError::invalid("marker", "the markers must not be empty").into());
            }
        }
        if trim_end(begin.as_bytes()) == trim_end(end.as_bytes()) {
            return Err(ArgError::invalid(
                "marker",
                format!(
                    "begin and end markers are both `{begin}`: marker must contain {{mark}} and marker_begin differ from marker_end"
                ),
            )
            .into());
        }
        let present = p.state == Presence::Present && !p.block.is_empty();
        let mut wanted = Vec::new();
        if present {
            let body = Lines::parse(p.block.as_bytes());
            for (i, l) in body.lines.iter().enumerate() {
                if [&begin, &end]
                    .iter()
                    .any(|m| trim_end(l) == trim_end(m.as_bytes()))
                {
                    return Err(ArgError::invalid(
                        "block",
                        format!(
                            "line {} of block is a marker line; the block would not be found again",
                            i + 1
                        ),
                    )
                    .into());
                }
            }
            wanted.push(begin.as_bytes().to_vec());
            wanted.extend(body.lines);
            wanted.push(end.as_bytes().to_vec());
        }
        Ok(Request {
            path: p.path,
            begin: begin.into_bytes(),
            end: end.into_bytes(),
            wanted,
            insert: InsertAt::from_params(p.insertafter.as_deref(), p.insertbefore.as_deref())?,
            create: present && p.create,
            backup: p.backup,
            attrs: Attrs {
                mode: p.mode,
                owner: p.owner,
                group: p.group,
            },
        })
    }
}

/// The lines (0-based) of the begin and end markers, when there is exactly one well-formed
/// block; an error naming the lines (1-based) when the markers are damaged.
fn find_block(r: &Request, lines: &Lines) -> Result<Option<(usize, usize)>, ModuleError> {
    let at = |marker: &[u8]| -> Vec<usize> {
        let marker = trim_end(marker);
        lines
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| trim_end(l) == marker)
            .map(|(i, _)| i)
            .collect()
    };
    let (begins, ends) = (at(&r.begin), at(&r.end));
    let show = |m: &[u8]| String::from_utf8_lossy(trim_end(m)).into_owned();
    let numbers = |v: &[usize]| {
        v.iter()
            .map(|i| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let path = &r.path;
    let err = |m: String| {
        Err(ModuleError::Host(format!(
            "{path}: {m}; fix the file by hand"
        )))
    };
    match (begins.as_slice(), ends.as_slice()) {
        ([], []) => Ok(None),
        (&[b], &[e]) if b < e => Ok(Some((b, e))),
        (&[b], &[e]) => err(format!(
            "the end marker `{}` (line {}) comes before the begin marker `{}` (line {})",
            show(&r.end),
            e + 1,
            show(&r.begin),
            b + 1
        )),
        (&[b], []) => err(format!("line {} has the begin marker `{}` but there is no end marker `{}`", b + 1, show(&r.begin), show(&r.end))),
        ([], &[e]) => err(format!("line {} has the end marker `{}` but there is no begin marker `{}`", e + 1, show(&r.end), show(&r.begin))),
        _ => err(format!(
            "the begin marker `{}` is on lines [{}] and the end marker `{}` on lines [{}]; expected one of each",
            show(&r.begin),
            numbers(&begins),
            show(&r.end),
            numbers(&ends)
        )),
    }
}

/// Whether the block between `b` and `e` is the wanted one (markers compared like when finding
/// them, the lines between exactly).
fn same_block(r: &Request, lines: &Lines, b: usize, e: usize) -> bool {
    let have = &lines.lines[b..=e];
    let want = &r.wanted;
    have.len() == want.len()
        && have.len() >= 2
        && have[1..have.len() - 1] == want[1..want.len() - 1]
}

impl Module for BlockInFile {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        Request::from_params(args.parse()?)
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        edit::edit_probes(&r.path, r.create)
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let path = r.path.as_str();
        let state = observed.file(path)?;
        edit::editable(path, state)?;
        let mut plan = Plan::ok();
        if !state.exists() {
            if r.wanted.is_empty() {
                plan.msg = Some(format!("{path} does not exist"));
                return Ok(plan);
            }
            if !r.create {
                return Err(ModuleError::Host(format!(
                    "{path} does not exist (set create: true to create it)"
                )));
            }
        }
        let mut lines = Lines::parse(state.content.as_deref().unwrap_or_default());
        let msg = match (find_block(r, &lines)?, r.wanted.is_empty()) {
            (None, true) => None,
            (None, false) => {
                let at = r.insert.position(&lines, false);
                lines.splice(at..at, r.wanted.clone());
                Some("block inserted")
            }
            (Some((b, e)), false) if same_block(r, &lines, b, e) => None,
            (Some((b, e)), wanted_empty) => {
                lines.splice(b..e + 1, r.wanted.clone());
                Some(if wanted_empty {
                    "block removed"
                } else {
                    "block updated"
                })
            }
        };
        match msg {
            Some(msg) => {
                edit::write_edited(
                    &mut plan,
                    path,
                    state,
                    observed,
                    &lines.to_bytes(),
                    &r.attrs,
                    r.backup,
                )?;
                plan.msg = Some(msg.into());
            }
            None => {
                if state.exists() {
                    edit::ensure_attrs(&mut plan, path, state, &r.attrs);
                }
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, ArgErrorKind, FileState};
    use crate::modules::testing::{arg_error, content, converge, req};
    use serde_json::json;

    const P: &str = "/etc/hosts";
    const B: &str = "# BEGIN KVMFORGE MANAGED BLOCK";
    const E: &str = "# END KVMFORGE MANAGED BLOCK";

    /// Content after planning against a file holding `before`; asserts the second run is `ok`.
    fn run(a: serde_json::Value, before: &str) -> (String, Plan) {
        let obs = Observed::new().with_file(P, FileState::file(before));
        let (p, after) = converge(&BlockInFile, &req(&BlockInFile, a), &obs);
        (content(&after, P), p)
    }

    fn after(a: serde_json::Value, before: &str) -> String {
        run(a, before).0
    }

    fn plan(a: serde_json::Value, before: &str) -> Result<Plan, ModuleError> {
        let obs = Observed::new().with_file(P, FileState::file(before));
        BlockInFile.plan(&req(&BlockInFile, a), &obs)
    }

    #[test]
    fn inserts_block_at_end_once() {
        let (text, p) = run(
            json!({"path": P, "block": "10.0.0.1 hv1\n10.0.0.2 hv2\n"}),
            "127.0.0.1 localhost\n",
        );
        assert_eq!(
            text,
            format!("127.0.0.1 localhost\n{B}\n10.0.0.1 hv1\n10.0.0.2 hv2\n{E}\n")
        );
        assert_eq!(p.msg.as_deref(), Some("block inserted"));
        assert_eq!(
            p.actions,
            vec![Action::write(P, text.as_str(), Attrs::default(), false)]
        );
        // A block without final newline is the same block.
        assert_eq!(
            after(
                json!({"path": P, "block": "10.0.0.1 hv1\n10.0.0.2 hv2"}),
                &text
            ),
            text
        );
    }

    #[test]
    fn existing_block_is_replaced_in_place() {
        let before = format!("a\n{B}\nold 1\nold 2\nold 3\n{E}\nz\n");
        let (text, p) = run(
            json!({"path": P, "block": "new \"quoted\" $x \\1\n"}),
            &before,
        );
        assert_eq!(text, format!("a\n{B}\nnew \"quoted\" $x \\1\n{E}\nz\n"));
        assert_eq!(p.msg.as_deref(), Some("block updated"));
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(d.before, before);
        // insertafter/insertbefore only place new blocks.
        let a = json!({"path": P, "block": "x", "insertbefore": "BOF"});
        assert_eq!(after(a, &before), format!("a\n{B}\nx\n{E}\nz\n"));
    }

    #[test]
    fn same_block_is_ok_even_with_trailing_whitespace_or_crlf_on_markers() {
        let before = format!("a\n{B}  \r\nx\ny\n{E}\r\n");
        let (text, p) = run(
            json!({"path": P, "block": "x\ny\n", "mode": "0644"}),
            &before,
        );
        assert_eq!(text, before);
        assert!(!p.changed());
    }

    #[test]
    fn markers_must_be_whole_lines() {
        // The marker text inside another line is not a marker: a block is added.
        let before = format!("echo '{B}'\n# {E} (old)\n");
        let text = after(json!({"path": P, "block": "x"}), &before);
        assert_eq!(text, format!("{before}{B}\nx\n{E}\n"));
    }

    #[test]
    fn custom_markers_with_regex_and_quote_characters() {
        let a = json!({"path": P, "block": "x", "marker": "// {mark} (.*) [kvm] 'q' \"d\"", "marker_begin": "start", "marker_end": "stop"});
        let (text, _) = run(a.clone(), "");
        assert_eq!(
            text,
            "// start (.*) [kvm] 'q' \"d\"\nx\n// stop (.*) [kvm] 'q' \"d\"\n"
        );
        let a2 = json!({"path": P, "block": "y", "marker": "// {mark} (.*) [kvm] 'q' \"d\"", "marker_begin": "start", "marker_end": "stop"});
        assert_eq!(
            after(a2, &text),
            "// start (.*) [kvm] 'q' \"d\"\ny\n// stop (.*) [kvm] 'q' \"d\"\n"
        );
    }

    #[test]
    fn insert_positions() {
        let before = "a\n[s]\nb\n[s]\nc\n";
        let blk = format!("{B}\nx\n{E}\n");
        assert_eq!(
            after(
                json!({"path": P, "block": "x", "insertafter": "EOF"}),
                before
            ),
            format!("{before}{blk}")
        );
        assert_eq!(
            after(
                json!({"path": P, "block": "x", "insertbefore": "BOF"}),
                before
            ),
            format!("{blk}{before}")
        );
        assert_eq!(
            after(
                json!({"path": P, "block": "x", "insertafter": "^\\[s\\]"}),
                before
            ),
            format!("a\n[s]\nb\n[s]\n{blk}c\n")
        );
        assert_eq!(
            after(
                json!({"path": P, "block": "x", "insertbefore": "^\\[s\\]"}),
                before
            ),
            format!("a\n[s]\nb\n{blk}[s]\nc\n")
        );
        assert_eq!(
            after(
                json!({"path": P, "block": "x", "insertbefore": "^nomatch"}),
                before
            ),
            format!("{before}{blk}")
        );
    }

    #[test]
    fn absent_or_empty_block_removes_markers_and_block() {
        let before = format!("a\n{B}\nx\n{E}\nz");
        for a in [
            json!({"path": P, "state": "absent"}),
            json!({"path": P, "block": ""}),
            json!({"path": P, "content": ""}),
        ] {
            let (text, p) = run(a, &before);
            assert_eq!(text, "a\nz");
            assert_eq!(p.msg.as_deref(), Some("block removed"));
        }
        // Removing the last lines leaves the file ending with a newline.
        assert_eq!(
            after(
                json!({"path": P, "state": "absent"}),
                &format!("a\n{B}\nx\n{E}")
            ),
            "a\n"
        );
        // Nothing there: ok, also for a missing file.
        let (_, p) = run(json!({"path": P, "state": "absent", "block": "x"}), "a\n");
        assert!(!p.changed());
        let obs = Observed::new().with_file(P, FileState::absent());
        let p = BlockInFile
            .plan(
                &req(&BlockInFile, json!({"path": P, "state": "absent"})),
                &obs,
            )
            .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn damaged_markers_are_errors_naming_lines() {
        let host_err = |before: String| match plan(json!({"path": P, "block": "x"}), &before) {
            Err(ModuleError::Host(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = host_err(format!("a\n{B}\nx\n"));
        assert!(
            m.contains("line 2 has the begin marker") && m.contains("no end marker"),
            "{m}"
        );
        let m = host_err(format!("a\nb\n{E}\n"));
        assert!(m.contains("line 3 has the end marker"), "{m}");
        let m = host_err(format!("{E}\n{B}\n"));
        assert!(
            m.contains("(line 1) comes before") && m.contains("(line 2)"),
            "{m}"
        );
        let m = host_err(format!("{B}\n{E}\n{B}\nx\n{E}\n"));
        assert!(
            m.contains("lines [1, 3]") && m.contains("lines [2, 5]"),
            "{m}"
        );
        // Also when removing.
        assert!(plan(json!({"path": P, "state": "absent"}), &format!("{B}\n")).is_err());
    }

    #[test]
    fn missing_file_needs_create() {
        let a = req(&BlockInFile, json!({"path": "/etc/d/f", "block": "x"}));
        let obs = Observed::new().with_file("/etc/d/f", FileState::absent());
        assert!(matches!(
            BlockInFile.plan(&a, &obs),
            Err(ModuleError::Host(_))
        ));
        let a = req(
            &BlockInFile,
            json!({"path": "/etc/d/f", "block": "x", "create": true, "mode": "0600"}),
        );
        assert_eq!(
            BlockInFile.probes(&a),
            vec![Probe::File("/etc/d/f".into()), Probe::File("/etc/d".into())]
        );
        let obs = obs.with_file("/etc/d", FileState::dir());
        let (p, state) = converge(&BlockInFile, &a, &obs);
        assert_eq!(
            p.actions,
            vec![Action::write(
                "/etc/d/f",
                format!("{B}\nx\n{E}\n"),
                Attrs {
                    mode: Some(0o600),
                    ..Attrs::default()
                },
                false
            )]
        );
        assert_eq!(state.file("/etc/d/f").unwrap().mode, 0o600);
        // An empty block creates nothing.
        let a = req(&BlockInFile, json!({"path": "/etc/d/f", "create": true}));
        assert!(!BlockInFile.plan(&a, &obs).unwrap().changed());
    }

    #[test]
    fn rest_of_file_is_kept_byte_for_byte() {
        let before: &[u8] = b"\xff\xfe binary-ish\r\n\n  spaced  \nlast-without-newline";
        let a = req(
            &BlockInFile,
            json!({"path": P, "block": "x", "insertbefore": "BOF"}),
        );
        let obs = Observed::new().with_file(P, FileState::file(before));
        let (_, state) = converge(&BlockInFile, &a, &obs);
        let mut want = format!("{B}\nx\n{E}\n").into_bytes();
        want.extend_from_slice(before);
        assert_eq!(
            state.file(P).unwrap().content.as_deref().unwrap(),
            want.as_slice()
        );
    }

    #[test]
    fn attrs_only_and_unusable_paths() {
        let before = format!("{B}\nx\n{E}\n");
        let p = plan(json!({"path": P, "block": "x", "owner": "kvm"}), &before).unwrap();
        assert_eq!(
            p.actions,
            vec![Action::SetAttrs {
                path: P.into(),
                attrs: Attrs {
                    owner: Some("kvm".into()),
                    ..Attrs::default()
                }
            }]
        );
        let obs = Observed::new().with_file(P, FileState::dir());
        assert!(matches!(
            BlockInFile.plan(&req(&BlockInFile, json!({"path": P, "block": "x"})), &obs),
            Err(ModuleError::Host(_))
        ));
    }

    #[test]
    fn bad_argument_combinations_are_caught_before_contact() {
        let invalid = ArgErrorKind::Invalid;
        for (bad, kind, param) in [
            (
                json!({"path": P, "block": "x", "marker": "# managed"}),
                invalid,
                "marker",
            ),
            (
                json!({"path": P, "block": "x", "marker_begin": "X", "marker_end": "X"}),
                invalid,
                "marker",
            ),
            (
                json!({"path": P, "block": "x", "marker": "# {mark}\nsecond"}),
                invalid,
                "marker",
            ),
            (
                json!({"path": P, "block": "x", "marker": "{mark}", "marker_begin": " "}),
                invalid,
                "marker",
            ),
            (
                json!({"path": P, "block": format!("a\n{B}\nb")}),
                invalid,
                "block",
            ),
            (
                json!({"path": P, "block": format!("{E}  ")}),
                invalid,
                "block",
            ),
            (
                json!({"path": P, "block": "x", "insertafter": "(", }),
                invalid,
                "insertafter",
            ),
            (
                json!({"path": P, "block": "x", "insertafter": "a", "insertbefore": "b"}),
                ArgErrorKind::Conflict {
                    with: "insertbefore",
                },
                "insertafter",
            ),
        ] {
            let e = arg_error(&BlockInFile, bad.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{bad}");
        }
    }
}
