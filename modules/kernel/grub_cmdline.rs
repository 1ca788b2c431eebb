//! `grub_cmdline`: kernel command line arguments present or absent in GRUB's configuration.
//!
//! GRUB reads the command line from shell assignments in /etc/default/grub (and, on Debian and
//! Ubuntu, /etc/default/grub.d/*.cfg sourced after it); `grub-mkconfig` turns them into grub.cfg.
//! The module edits the argument words of those assignments, keeps everything else, regenerates
//! grub.cfg only when a file changed, and compares the wanted arguments with /proc/cmdline to
//! tell whether the running kernel has them yet.

use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, FileState, Module, ModuleError, ModuleSpec,
    Observed, Plan, PlanContext, Probe,
};
use crate::modules::args;
use crate::modules::args::Presence;
use crate::modules::facts::grub::GrubTools;
use crate::modules::files::edit;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct GrubCmdline;

static SPEC: ModuleSpec = ModuleSpec {
    name: "grub_cmdline",
    summary: "Ensure kernel command line arguments are present or absent in GRUB's configuration",
    description: "Arguments are words: `key=value` or a bare `key` (keys compare with `-` and \
`_` equal, as the kernel does). A wanted `key=value` owns its key: other values of that key are \
replaced (`hugepages=4` becomes `hugepages=8`), so list every value of a parameter that \
legitimately repeats; when a key appears more than once in `args`, or `args` has both \
`hugepagesz=` and `hugepages=` (each count applies to the size before it), those keys are kept \
as one ordered sequence equal to the one in `args`, e.g. `[hugepagesz=1G, hugepages=4, \
hugepagesz=2M, hugepages=512]`. A bare wanted key is satisfied by any word with that key. \
`state: absent` removes `key` and every `key=...` for a bare key, and only the exact word for \
`key=value`.\n\n\
With `dropin` (default /etc/default/grub.d/98-kvmforge.cfg, Debian and Ubuntu) the arguments go \
into that file as `VARIABLE=\"$VARIABLE arg ...\"` under a header comment; other lines in it are \
kept. Arguments already in VARIABLE in `default_file` are not repeated, other values of a wanted \
key and absent arguments are removed from both files, and a drop-in left without arguments is \
deleted. A drop-in of the same directory sorting after `dropin` that assigns VARIABLE without \
`$VARIABLE` (it would throw these arguments away) is an error naming it; cloud images' \
50-cloudimg-settings.cfg sets the other variable and sorts first. \
With `dropin: \"\"` the VARIABLE line of `default_file` is edited in place (quotes as found, the \
line added when missing) — what RHEL-family hosts need, whose grub2-mkconfig does not read \
grub.d (writing a drop-in there is an error unless `default_file` sources grub.d itself; the \
kernel arguments other modules plan, such as `hugepages`', go to `default_file` there instead). \
On Boot Loader Specification hosts (Fedora 30+, RHEL 8+: GRUB_ENABLE_BLSCFG=true and \
/boot/loader/entries/*.conf) every entry carries its own `options` line: each is compared too, \
and when one differs `grubby --update-kernel=ALL --args=... --remove-args=...` fixes them all \
(without grubby, grub2-mkconfig's --update-bls-cmdline does, RHEL 9.3+); /etc/default/grub is \
still edited so grub2-mkconfig and newly installed kernels keep the arguments. Values \
with spaces, quotes or `$` are not supported. Give `args` as a YAML list: in a single string, \
commas separate arguments too.\n\n\
When a file changed and `regenerate` is true, the command found on the host runs: `update-grub`, \
else `grub2-mkconfig -o CFG` (with `--update-bls-cmdline` where supported, RHEL 9.3+; CFG is \
/boot/grub2/grub.cfg, or the EFI vendor directory's grub.cfg when that is a full configuration \
rather than a stub, as on RHEL 7/8), else `grub-mkconfig -o /boot/grub/grub.cfg`; a needed change \
with none of them installed is an error. `reboot_required` is set whenever /proc/cmdline lacks a \
wanted argument (exact `key=value`) or still has an unwanted one, also when the files were \
already right (an earlier run may have changed them); the words are in `cmdline_missing` and \
`cmdline_unwanted`.",
    params: &[
        ParamSpec::required(
            "args",
            ParamKind::List,
            "Kernel arguments, e.g. [intel_iommu=on, iommu=pt]",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "present adds the arguments, absent removes them",
        ),
        ParamSpec::with_default(
            "variable",
            ParamKind::Choice(&["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"]),
            "GRUB_CMDLINE_LINUX",
            "GRUB_CMDLINE_LINUX applies to all entries, _DEFAULT not to recovery entries",
        ),
        ParamSpec::with_default(
            "dropin",
            ParamKind::Str,
            "/etc/default/grub.d/98-kvmforge.cfg",
            "Drop-in file for the arguments (must end in .cfg); \"\" edits default_file directly",
        ),
        ParamSpec::with_default(
            "default_file",
            ParamKind::Str,
            "/etc/default/grub",
            "GRUB's main defaults file",
        ),
        ParamSpec::with_default(
            "regenerate",
            ParamKind::Bool,
            "true",
            "Regenerate grub.cfg when a file changed",
        ),
    ],
    free_form: None,
    example: r#"- name: IOMMU for PCI passthrough
  grub_cmdline:
    args:
      - intel_iommu=on
      - iommu=pt
      - vfio-pci.ids=144d:a80a
"#,
};

const PROC_CMDLINE: &str = "/proc/cmdline";

/// The shell variable holding the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Variable {
    #[serde(rename = "GRUB_CMDLINE_LINUX")]
    Linux,
    #[serde(rename = "GRUB_CMDLINE_LINUX_DEFAULT")]
    LinuxDefault,
}

impl Variable {
    fn name(self) -> &'static str {
        match self {
            Variable::Linux => "GRUB_CMDLINE_LINUX",
            Variable::LinuxDefault => "GRUB_CMDLINE_LINUX_DEFAULT",
        }
    }
}

/// A `grub_cmdline` task's arguments as given.
#[derive(Deserialize)]
struct Params {
    args: Vec<String>,
    state: Presence,
    variable: Variable,
    dropin: String,
    default_file: String,
    regenerate: bool,
}

/// A `grub_cmdline` task's arguments, checked.
pub struct Request {
    args: Vec<String>,
    present: bool,
    var: &'static str,
    dropin: Option<String>,
    default_file: String,
    regenerate: bool,
    /// Where the tool does not read /etc/default/grub.d (RHEL family), edit `default_file`
    /// instead of `dropin` (for other modules' requests, see [`Request::present`]).
    dropin_fallback: bool,
}

impl Request {
    /// Arguments another module needs on the kernel command line (IOMMU for vfio_bind, 1G
    /// huge pages, ...), kept in their own drop-in: that module plans them with
    /// [`GrubCmdline`]'s `probes` and `plan`, so the rules (the drop-in, regeneration,
    /// `reboot_required` from /proc/cmdline, every BLS entry) are the same as for a
    /// `grub_cmdline` task. On a host whose grub2-mkconfig does not read /etc/default/grub.d
    /// (the RHEL family), where a `grub_cmdline` task with a drop-in is an error, such a request
    /// edits GRUB_CMDLINE_LINUX in /etc/default/grub instead: the calling module cannot know
    /// the host's family when it builds its request, and the arguments belong in the one file
    /// that host reads.
    pub fn present(args: Vec<String>, dropin: &str) -> Result<Request, ArgError> {
        check_words(&args)?;
        Ok(Request {
            args,
            present: true,
            var: Variable::Linux.name(),
            dropin: Some(dropin.to_string()),
            default_file: "/etc/default/grub".into(),
            regenerate: true,
            dropin_fallback: true,
        })
    }
}

/// Each argument is one word the module can write inside double quotes, given once.
fn check_words(words: &[String]) -> Result<(), ArgError> {
    if words.is_empty() {
        return Err(ArgError::invalid(
            "args",
            "args must name at least one kernel argument",
        ));
    }
    for (i, w) in words.iter().enumerate() {
        if w.is_empty() || w.starts_with('=') {
            return Err(ArgError::invalid(
                "args",
                format!("invalid kernel argument {w:?}"),
            ));
        }
        if w.chars()
            .any(|c| c.is_whitespace() || "\"'$`\\".contains(c))
        {
            return Err(ArgError::invalid(
                "args",
                format!(
                    "kernel argument {w:?}: spaces, quotes, `$` and backslashes are not supported"
                ),
            ));
        }
        if words[..i].contains(w) {
            return Err(ArgError::invalid(
                "args",
                format!("kernel argument {w} is given twice"),
            ));
        }
    }
    Ok(())
}

// --- Argument words -------------------------------------------------------------------------

/// The key of a word, with `-` and `_` equal as the kernel compares parameter names.
fn key(word: &str) -> String {
    word.split_once('=')
        .map_or(word, |(k, _)| k)
        .replace('-', "_")
}

fn value(word: &str) -> Option<&str> {
    word.split_once('=').map(|(_, v)| v)
}

fn same(a: &str, b: &str) -> bool {
    key(a) == key(b) && value(a) == value(b)
}

/// Whether a present `wanted` is satisfied by `word`.
fn satisfies(word: &str, wanted: &str) -> bool {
    match value(wanted) {
        None => key(word) == key(wanted),
        Some(_) => same(word, wanted),
    }
}

/// Whether `word` is removed by an absent `unwanted`.
fn removed_by(word: &str, unwanted: &str) -> bool {
    satisfies(word, unwanted)
}

/// Keys kept as one ordered sequence: keys given more than once, and hugepagesz/hugepages
/// together (a count applies to the size before it).
fn sequence_keys(args: &[String]) -> Vec<String> {
    let keys: Vec<String> = args.iter().map(|a| key(a)).collect();
    let mut seq: Vec<String> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].contains(k) && !seq.contains(k) {
            seq.push(k.clone());
        }
    }
    if keys.iter().any(|k| k == "hugepagesz") && keys.iter().any(|k| k == "hugepages") {
        for k in ["hugepagesz", "hugepages"] {
            if !seq.iter().any(|s| s == k) {
                seq.push(k.into());
            }
        }
    }
    seq
}

/// Edit `slots` (the word lists of every assignment, in the order the shell evaluates them) so
/// the wanted arguments are there; new words go to `slots[target]`.
fn make_present(slots: &mut [Vec<String>], target: usize, args: &[String]) {
    let seq = sequence_keys(args);
    let in_seq = |w: &str| seq.contains(&key(w));
    for w in args.iter().filter(|w| !in_seq(w)) {
        let k = key(w);
        let with_key: Vec<&String> = slots.iter().flatten().filter(|t| key(t) == k).collect();
        if value(w).is_none() {
            if with_key.is_empty() {
                slots[target].push(w.clone());
            }
            continue;
        }
        if !with_key.is_empty() && with_key.iter().all(|t| same(t, w)) {
            continue;
        }
        let mut placed = with_key.iter().any(|t| same(t, w));
        for (i, slot) in slots.iter_mut().enumerate() {
            let mut out = Vec::with_capacity(slot.len());
            for t in slot.drain(..) {
                if key(&t) != k || same(&t, w) {
                    out.push(t);
                } else if i == target && !placed {
                    out.push(w.clone());
                    placed = true;
                }
            }
            *slot = out;
        }
        if !placed {
            slots[target].push(w.clone());
        }
    }
    if seq.is_empty() {
        return;
    }
    let wanted: Vec<&String> = args.iter().filter(|w| in_seq(w)).collect();
    let existing: Vec<&String> = slots.iter().flatten().filter(|t| in_seq(t)).collect();
    if existing.len() == wanted.len() && existing.iter().zip(&wanted).all(|(a, b)| same(a, b)) {
        return;
    }
    let at = slots[target].iter().position(|t| in_seq(t));
    for slot in slots.iter_mut() {
        slot.retain(|t| !in_seq(t));
    }
    let at = at.unwrap_or(slots[target].len());
    slots[target].splice(at..at, wanted.into_iter().cloned());
}

fn make_absent(slots: &mut [Vec<String>], args: &[String]) {
    for slot in slots.iter_mut() {
        slot.retain(|t| !args.iter().any(|a| removed_by(t, a)));
    }
}

// --- Shell assignments ----------------------------------------------------------------------

/// `VARIABLE=...` on one line of a defaults file.
#[derive(Debug, Clone)]
struct Assign {
    /// Index in the file's lines; `None` for an assignment to append.
    line: Option<usize>,
    /// Indentation, `export `, `VARIABLE=`.
    head: String,
    /// `"` or `'`; `None` for an unquoted value (written back double-quoted).
    quote: Option<char>,
    words: Vec<String>,
    /// After the closing quote: spaces and a comment.
    tail: String,
    original: Vec<String>,
}

impl Assign {
    fn new(var: &str, words: Vec<String>) -> Self {
        Assign {
            line: None,
            head: format!("{var}="),
            quote: Some('"'),
            original: words.clone(),
            words,
            tail: String::new(),
        }
    }
    fn changed(&self) -> bool {
        self.words != self.original
    }
    fn render(&self) -> String {
        let q = self.quote.unwrap_or('"');
        format!("{}{q}{}{q}{}", self.head, self.words.join(" "), self.tail)
    }
}

/// The assignment to `var` on `line`, if it is one. An error for values this module cannot edit
/// safely (spanning lines, unusual quoting).
fn parse_assign(
    line: &str,
    var: &str,
    path: &str,
    idx: usize,
) -> Result<Option<Assign>, ModuleError> {
    let t = line.trim_start();
    let t = match t.strip_prefix("export") {
        Some(r) if r.starts_with([' ', '\t']) => r.trim_start(),
        _ => t,
    };
    let Some(rest) = t.strip_prefix(var).and_then(|r| r.strip_prefix('=')) else {
        return Ok(None);
    };
    let head = line[..line.len() - rest.len()].to_string();
    let unsupported = || {
        ModuleError::Host(format!(
            "{path} line {}: cannot edit {var} here (value spanning lines or unusual quoting): {line}",
            idx + 1
        ))
    };
    let (quote, body, tail) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = &rest[1..];
            let mut escaped = false;
            let end = inner
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == q && !escaped;
                    escaped = q == '"' && c == '\\' && !escaped;
                    close
                })
                .map(|(i, _)| i)
                .ok_or_else(unsupported)?;
            (Some(q), &inner[..end], &inner[end + 1..])
        }
        _ => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let body = &rest[..end];
            if body.contains(['"', '\'', '\\']) {
                return Err(unsupported());
            }
            (None, body, &rest[end..])
        }
    };
    let trimmed = tail.trim_start();
    if !(trimmed.is_empty() || trimmed.starts_with('#')) {
        return Err(unsupported());
    }
    let words: Vec<String> = body.split_whitespace().map(str::to_string).collect();
    Ok(Some(Assign {
        line: Some(idx),
        head,
        quote,
        original: words.clone(),
        words,
        tail: tail.to_string(),
    }))
}

/// A defaults file being edited.
struct Doc {
    path: String,
    /// `None` when the file does not exist.
    text: Option<String>,
    lines: Vec<String>,
    assigns: Vec<Assign>,
}

impl Doc {
    fn parse(path: &str, text: Option<String>, var: &str) -> Result<Doc, ModuleError> {
        let (lines, _) = edit::lines(text.as_deref().unwrap_or_default());
        let mut assigns = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            assigns.extend(parse_assign(l, var, path, i)?);
        }
        Ok(Doc {
            path: path.to_string(),
            text,
            lines,
            assigns,
        })
    }

    fn changed(&self) -> bool {
        self.assigns.iter().any(Assign::changed)
    }

    /// The new content, when an assignment changed.
    fn render(&self, header: Option<&str>) -> Option<String> {
        if !self.changed() {
            return None;
        }
        let mut lines = self.lines.clone();
        if self.text.is_none() {
            lines.extend(header.into_iter().flat_map(str::lines).map(str::to_string));
        }
        for a in self.assigns.iter().filter(|a| a.changed()) {
            match a.line {
                Some(i) => lines[i] = a.render(),
                None => lines.push(a.render()),
            }
        }
        Some(edit::unlines(&lines))
    }

    /// The file holds nothing but comments, blank lines and assignments without arguments.
    fn is_empty_dropin(&self, self_refs: &[String]) -> bool {
        self.lines.iter().enumerate().all(|(i, l)| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || self.assigns.iter().any(|a| a.line == Some(i))
        }) && self
            .assigns
            .iter()
            .all(|a| a.words.iter().all(|w| self_refs.contains(w)))
    }
}

fn header(var: &str) -> String {
    format!("# Managed by kvmforge (grub_cmdline): kernel arguments appended to {var}.\n")
}

// --- Regeneration ---------------------------------------------------------------------------

/// The command regenerating grub.cfg with the host's tool, if it has one.
fn regenerate_command(t: &GrubTools) -> Option<String> {
    let has = |p: &str| t.cfgs.iter().any(|c| c == p);
    match t.tool.as_deref()? {
        "update-grub" => Some("update-grub".into()),
        "grub2-mkconfig" => {
            let cfg = shell_quote(t.efi.as_deref().unwrap_or("/boot/grub2/grub.cfg"));
            Some(format!(
                "if grub2-mkconfig --help 2>&1 | grep -q -- --update-bls-cmdline; then \
                 grub2-mkconfig -o {cfg} --update-bls-cmdline; else grub2-mkconfig -o {cfg}; fi"
            ))
        }
        "grub-mkconfig" => {
            let cfg = if has("/boot/grub/grub.cfg") || !has("/boot/grub2/grub.cfg") {
                "/boot/grub/grub.cfg"
            } else {
                "/boot/grub2/grub.cfg"
            };
            Some(format!("grub-mkconfig -o {cfg}"))
        }
        _ => None,
    }
}

// --- The module -----------------------------------------------------------------------------

impl Module for GrubCmdline {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        check_words(&p.args)?;
        let dropin = match p.dropin.as_str() {
            "" => None,
            _ => Some(p.dropin),
        };
        if let Some(d) = &dropin {
            args::absolute_path("dropin", d)?;
        }
        args::absolute_path("default_file", &p.default_file)?;
        if let Some(d) = &dropin {
            if !d.ends_with(".cfg") {
                return Err(ArgError::invalid(
                    "dropin",
                    format!(
                        "dropin {d:?} must end in .cfg: grub-mkconfig only reads /etc/default/grub.d/*.cfg"
                    ),
                )
                .into());
            }
            if *d == p.default_file {
                return Err(ArgError::conflict(
                    "dropin",
                    "default_file",
                    "dropin and default_file are the same file",
                )
                .into());
            }
        }
        Ok(Request {
            args: p.args,
            present: p.state == Presence::Present,
            var: p.variable.name(),
            dropin,
            default_file: p.default_file,
            regenerate: p.regenerate,
            dropin_fallback: false,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        let mut probes = vec![Probe::File(r.default_file.clone())];
        probes.extend(r.dropin.clone().map(Probe::File));
        probes.push(Probe::File(PROC_CMDLINE.into()));
        if r.regenerate {
            probes.push(GrubTools::probe(&()));
        }
        probes
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let mut plan = Plan::ok();
        let default_state = observed.file(&r.default_file)?;
        let default_text = edit::existing_text(&r.default_file, default_state)?;
        let self_refs = [format!("${}", r.var), format!("${{{}}}", r.var)];
        // Debian patches grub-mkconfig to source the drop-ins; elsewhere a loop at the end of
        // /etc/default/grub may do it.
        let sourced_by_default = default_text.as_deref().is_some_and(|t| {
            t.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("default/grub.d"))
        });
        let tools = if r.regenerate {
            Some(observed.fact::<GrubTools>(&())?)
        } else {
            None
        };
        let dropins_read = |t: &GrubTools| t.reads_dropins || sourced_by_default;
        let dropin = match (&r.dropin, &tools) {
            (Some(_), Some(t)) if r.dropin_fallback && t.tool.is_some() && !dropins_read(t) => None,
            (d, _) => d.clone(),
        };
        // A later drop-in assigning the variable without its old value drops these arguments.
        if let (Some(d), Some(t), true) = (&dropin, &tools, r.present) {
            let name = |f: &str| f.rsplit('/').next().unwrap_or(f).to_string();
            let mine = name(d);
            let dir = edit::parent_dir(d).unwrap_or_default();
            if let Some((f, line)) = t.dropins.iter().find(|(f, line)| {
                edit::parent_dir(f).unwrap_or_default() == dir
                    && name(f) > mine
                    && line.strip_prefix(r.var).is_some_and(|v| v.starts_with('='))
                    && !self_refs.iter().any(|s| line.contains(s.as_str()))
            }) {
                return Err(ModuleError::Host(format!(
                    "{f} sets {line} without \"${var}\", and it is read after {d}, so the \
                     arguments in {d} would be lost: name the drop-in so it sorts after {f} \
                     (dropin: {dir}/99z-kvmforge.cfg), or make {f} append to ${var}",
                    var = r.var
                )));
            }
        }

        let mut files: Vec<(Doc, &FileState)> = Vec::new();
        match &dropin {
            None => {
                if default_text.is_none() && r.present {
                    return Err(ModuleError::Host(format!(
                        "{} does not exist: is GRUB the boot loader?",
                        r.default_file
                    )));
                }
                let mut doc = Doc::parse(&r.default_file, default_text, r.var)?;
                if doc.assigns.is_empty() && doc.text.is_some() {
                    doc.assigns.push(Assign::new(r.var, Vec::new()));
                }
                files.push((doc, default_state));
            }
            Some(dropin) => {
                files.push((
                    Doc::parse(&r.default_file, default_text, r.var)?,
                    default_state,
                ));
                let state = observed.file(dropin)?;
                let mut doc = Doc::parse(dropin, edit::existing_text(dropin, state)?, r.var)?;
                if doc.assigns.is_empty() {
                    doc.assigns
                        .push(Assign::new(r.var, vec![self_refs[0].clone()]));
                }
                files.push((doc, state));
            }
        }

        // Edit the words of every assignment as one sequence; new words go to the last one.
        let mut slots: Vec<Vec<String>> = files
            .iter()
            .flat_map(|(d, _)| d.assigns.iter().map(|a| a.words.clone()))
            .collect();
        if !slots.is_empty() {
            if r.present {
                let target = slots.len() - 1;
                make_present(&mut slots, target, &r.args);
            } else {
                make_absent(&mut slots, &r.args);
            }
        }
        let mut slots = slots.into_iter();
        for (doc, _) in files.iter_mut() {
            for a in doc.assigns.iter_mut() {
                a.words = slots.next().expect("one slot per assignment");
            }
        }

        let attrs = Attrs::default();
        let mut wrote_dropin = false;
        for (i, (doc, state)) in files.iter().enumerate() {
            let is_dropin = dropin.is_some() && i == 1;
            let Some(content) = doc.render(is_dropin.then(|| header(r.var)).as_deref()) else {
                continue;
            };
            if is_dropin && doc.text.is_some() && doc.is_empty_dropin(&self_refs) {
                edit::ensure_absent(&mut plan, &doc.path, state);
                continue;
            }
            wrote_dropin |= is_dropin;
            edit::ensure_content(
                &mut plan,
                &doc.path,
                state,
                content.as_bytes(),
                &attrs,
                false,
            )?;
        }

        // Boot Loader Specification entries (Fedora, RHEL 8+ with GRUB_ENABLE_BLSCFG=true) carry
        // their own command line: each must get the arguments too. Entries using RHEL 8's
        // `$kernelopts` follow grubenv, which grub2-mkconfig rewrites.
        let mut bls_update: Option<String> = None;
        if let Some(t) = &tools {
            let bls = files[0].0.lines.iter().any(|l| {
                let l = l.trim();
                !l.starts_with('#') && l.replace('"', "") == "GRUB_ENABLE_BLSCFG=true"
            });
            let mut add: Vec<String> = Vec::new();
            let mut remove: Vec<String> = Vec::new();
            let mut stale: Vec<&str> = Vec::new();
            for (file, words) in t.entries.iter().filter(|_| bls) {
                if words.iter().any(|w| w.contains("$kernelopts")) {
                    continue;
                }
                let mut slot = vec![words.clone()];
                if r.present {
                    make_present(&mut slot, 0, &r.args);
                } else {
                    make_absent(&mut slot, &r.args);
                }
                if slot[0] == *words {
                    continue;
                }
                stale.push(file);
                for w in words.iter().filter(|w| !slot[0].contains(w)) {
                    if !remove.contains(w) {
                        remove.push(w.clone());
                    }
                }
                for w in slot[0].iter().filter(|w| !words.contains(w)) {
                    if !add.contains(w) {
                        add.push(w.clone());
                    }
                }
            }
            if !stale.is_empty() {
                let mut cmd = String::from("grubby --update-kernel=ALL");
                if !remove.is_empty() {
                    cmd.push_str(&format!(
                        " --remove-args={}",
                        shell_quote(&remove.join(" "))
                    ));
                }
                if !add.is_empty() {
                    cmd.push_str(&format!(" --args={}", shell_quote(&add.join(" "))));
                }
                if t.grubby {
                    plan.change(
                        Change::new(format!(
                            "kernel arguments in the boot entries ({})",
                            stale.join(", ")
                        )),
                        [],
                    );
                    bls_update = Some(cmd);
                } else if t.tool.as_deref() != Some("grub2-mkconfig") {
                    return Err(ModuleError::Host(format!(
                        "the boot entries {} need the arguments but grubby is not installed",
                        stale.join(", ")
                    )));
                } else {
                    // grub2-mkconfig --update-bls-cmdline (RHEL 9.3+) rewrites them below.
                    plan.change(
                        Change::new(format!(
                            "kernel arguments in the boot entries ({})",
                            stale.join(", ")
                        )),
                        [],
                    );
                }
            }
        }

        if plan.changed() && r.regenerate {
            let t = observed.fact::<GrubTools>(&())?;
            let Some(cmd) = regenerate_command(&t) else {
                return Err(ModuleError::Host(
                    "no update-grub, grub2-mkconfig or grub-mkconfig on this host to regenerate \
                     grub.cfg (set regenerate: false to only edit the files)"
                        .into(),
                ));
            };
            if wrote_dropin && !t.reads_dropins && !sourced_by_default {
                return Err(ModuleError::Host(format!(
                    "{} on this host does not read /etc/default/grub.d: set dropin: \"\" to edit {} \
                     directly",
                    t.tool.as_deref().unwrap_or("grub-mkconfig"),
                    r.default_file
                )));
            }
            plan.change(Change::new("regenerate grub.cfg"), [Action::run(cmd)]);
            if let Some(cmd) = bls_update {
                plan.actions.push(Action::run(cmd));
            }
        }

        // The running kernel.
        let cmdline =
            edit::existing_text(PROC_CMDLINE, observed.file(PROC_CMDLINE)?)?.unwrap_or_default();
        // Words after `--` are for init, not the kernel.
        let running: Vec<&str> = cmdline
            .split_whitespace()
            .take_while(|w| *w != "--")
            .collect();
        let (missing, unwanted): (Vec<String>, Vec<String>) = if r.present {
            let missing = r
                .args
                .iter()
                .filter(|w| !running.iter().any(|t| satisfies(t, w)))
                .cloned()
                .collect();
            (missing, Vec::new())
        } else {
            let unwanted = running
                .iter()
                .filter(|t| r.args.iter().any(|a| removed_by(t, a)))
                .map(|t| t.to_string())
                .collect();
            (Vec::new(), unwanted)
        };
        plan.reboot_required = !missing.is_empty() || !unwanted.is_empty();
        if plan.reboot_required {
            plan.msg = Some(if r.present {
                format!(
                    "reboot needed: the running kernel lacks {}",
                    missing.join(" ")
                )
            } else {
                format!(
                    "reboot needed: the running kernel still has {}",
                    unwanted.join(" ")
                )
            });
        }
        Ok(plan
            .with_data("cmdline_missing", missing)
            .with_data("cmdline_unwanted", unwanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, req};
    use serde_json::json;

    const DEFAULT: &str = "/etc/default/grub";
    const DROPIN: &str = "/etc/default/grub.d/98-kvmforge.cfg";

    const DEBIAN_GRUB: &str = "# If you change this file, run 'update-grub' afterwards.\n\
GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n";
    const DEBIAN_TOOLS: &str = "tool=update-grub\ndropins=yes\nstub=/boot/efi/EFI/debian/grub.cfg\ncfg=/boot/grub/grub.cfg\n";

    fn args(v: serde_json::Value) -> Request {
        req(&GrubCmdline, v)
    }

    fn iommu() -> Request {
        args(json!({"args": ["intel_iommu=on", "iommu=pt"]}))
    }

    fn host(default: FileState, dropin: FileState, cmdline: &str, tools: &str) -> Observed {
        Observed::new()
            .with_file(DEFAULT, default)
            .with_file(DROPIN, dropin)
            .with_file(PROC_CMDLINE, FileState::file(format!("{cmdline}\n")))
            .with_fact::<GrubTools>(&(), Observation::Command(CommandOutput::ok(tools)))
    }

    fn plan(r: &Request, obs: &Observed) -> Plan {
        GrubCmdline.plan(r, obs).unwrap()
    }

    fn written(p: &Plan, path: &str) -> Option<String> {
        p.actions.iter().find_map(|a| match a {
            Action::WriteFile {
                path: p, content, ..
            } if p == path => Some(String::from_utf8_lossy(content).into_owned()),
            _ => None,
        })
    }

    /// Apply a plan's file actions to the observations (for convergence checks).
    fn apply(p: &Plan, mut obs: Observed) -> Observed {
        for a in &p.actions {
            match a {
                Action::WriteFile { path, content, .. } => {
                    obs = obs.with_file(path, FileState::file(content.clone()))
                }
                Action::Remove { path } => obs = obs.with_file(path, FileState::absent()),
                _ => {}
            }
        }
        obs
    }

    const BOOT: &str = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1234 ro quiet";

    #[test]
    fn fresh_debian_host_gets_a_dropin_and_update_grub() {
        let a = iommu();
        assert_eq!(
            GrubCmdline.probes(&a),
            vec![
                Probe::File(DEFAULT.into()),
                Probe::File(DROPIN.into()),
                Probe::File(PROC_CMDLINE.into()),
                GrubTools::probe(&()),
            ]
        );
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::write(
                    DROPIN,
                    "# Managed by kvmforge (grub_cmdline): kernel arguments appended to GRUB_CMDLINE_LINUX.\n\
                     GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX intel_iommu=on iommu=pt\"\n",
                    Attrs::default(),
                    false
                ),
                Action::run("update-grub"),
            ]
        );
        assert!(p.reboot_required);
        assert_eq!(
            p.data["cmdline_missing"],
            json!(["intel_iommu=on", "iommu=pt"])
        );
        assert_eq!(p.data["cmdline_unwanted"], json!([]));
        // Applied but not rebooted: files are right, a reboot is still needed.
        let p2 = plan(&a, &apply(&p, obs));
        assert!(!p2.changed(), "{:?}", p2.changes);
        assert!(p2.reboot_required);
    }

    #[test]
    fn converged_and_rebooted_host_is_ok() {
        let dropin =
            "# mine\nGRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX} iommu=pt intel_iommu=on\"\n";
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::file(dropin),
            &format!("{BOOT} intel_iommu=on iommu=pt"),
            DEBIAN_TOOLS,
        );
        let p = plan(&iommu(), &obs);
        assert!(!p.changed());
        assert!(!p.reboot_required);
        assert_eq!(p.msg, None);
    }

    #[test]
    fn args_already_in_default_file_are_not_repeated() {
        let grub = DEBIAN_GRUB.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"intel_iommu=on\"",
        );
        let obs = host(
            FileState::file(grub.clone()),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        );
        let p = plan(&iommu(), &obs);
        assert_eq!(
            written(&p, DROPIN).unwrap().lines().last(),
            Some("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX iommu=pt\"")
        );
        assert_eq!(written(&p, DEFAULT), None);
        // All of them there: no drop-in at all.
        let grub = grub.replace("intel_iommu=on", "intel_iommu=on iommu=pt");
        let obs = host(
            FileState::file(grub),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        );
        assert!(!plan(&iommu(), &obs).changed());
    }

    #[test]
    fn other_value_in_default_file_is_replaced() {
        let grub = DEBIAN_GRUB.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"hugepages=4 console=ttyS0\"",
        );
        let a = args(json!({"args": ["hugepages=8"]}));
        let obs = host(
            FileState::file(grub),
            FileState::absent(),
            "hugepages=4",
            DEBIAN_TOOLS,
        );
        let p = plan(&a, &obs);
        assert!(written(&p, DEFAULT)
            .unwrap()
            .contains("\nGRUB_CMDLINE_LINUX=\"console=ttyS0\"\n"));
        assert!(written(&p, DROPIN)
            .unwrap()
            .contains("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX hugepages=8\""));
        assert_eq!(p.data["cmdline_missing"], json!(["hugepages=8"]));
        let p2 = plan(&a, &apply(&p, obs));
        assert!(!p2.changed(), "{:?}", p2.changes);
    }

    #[test]
    fn dropin_other_lines_are_kept_and_value_replaced_in_place() {
        let dropin =
            "GRUB_TIMEOUT=2\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX iommu=soft quiet\" # tuned\n";
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::file(dropin),
            BOOT,
            DEBIAN_TOOLS,
        );
        let p = plan(&iommu(), &obs);
        assert_eq!(
            written(&p, DROPIN).unwrap(),
            "GRUB_TIMEOUT=2\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX iommu=pt quiet intel_iommu=on\" # tuned\n"
        );
    }

    #[test]
    fn direct_mode_edits_the_line_keeping_quotes() {
        let a = args(
            json!({"args": ["intel_iommu=on", "iommu=pt"], "dropin": "", "variable": "GRUB_CMDLINE_LINUX_DEFAULT"}),
        );
        assert!(!GrubCmdline.probes(&a).contains(&Probe::File(DROPIN.into())));
        let grub =
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT='quiet splash'\nGRUB_CMDLINE_LINUX=\"\"\n";
        let tools =
            "tool=grub2-mkconfig\nstub=/boot/efi/EFI/redhat/grub.cfg\ncfg=/boot/grub2/grub.cfg\n";
        let obs = host(FileState::file(grub), FileState::absent(), BOOT, tools);
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::write(
                    DEFAULT,
                    "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT='quiet splash intel_iommu=on iommu=pt'\nGRUB_CMDLINE_LINUX=\"\"\n",
                    Attrs::default(),
                    false
                ),
                Action::run(
                    "if grub2-mkconfig --help 2>&1 | grep -q -- --update-bls-cmdline; then \
                     grub2-mkconfig -o /boot/grub2/grub.cfg --update-bls-cmdline; else grub2-mkconfig -o /boot/grub2/grub.cfg; fi"
                ),
            ]
        );
        assert!(!plan(&a, &apply(&p, obs)).changed());
    }

    #[test]
    fn direct_mode_adds_a_missing_line_and_handles_unquoted_values() {
        let a = args(json!({"args": ["iommu=pt"], "dropin": ""}));
        let tools = "tool=grub2-mkconfig\nefi=/boot/efi/EFI/centos/grub.cfg\n";
        let obs = host(
            FileState::file("GRUB_TIMEOUT=5\n"),
            FileState::absent(),
            BOOT,
            tools,
        );
        let p = plan(&a, &obs);
        assert_eq!(
            written(&p, DEFAULT).unwrap(),
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"iommu=pt\"\n"
        );
        // RHEL 7/8 on EFI: the full grub.cfg lives in the ESP.
        let Action::Run { cmd, .. } = &p.actions[1] else {
            panic!()
        };
        assert!(
            cmd.contains("grub2-mkconfig -o /boot/efi/EFI/centos/grub.cfg;"),
            "{cmd}"
        );
        let obs = host(
            FileState::file("export GRUB_CMDLINE_LINUX=quiet # x\n"),
            FileState::absent(),
            BOOT,
            tools,
        );
        assert_eq!(
            written(&plan(&a, &obs), DEFAULT).unwrap(),
            "export GRUB_CMDLINE_LINUX=\"quiet iommu=pt\" # x\n"
        );
    }

    #[test]
    fn hugepage_pairs_are_kept_in_order() {
        let a = args(
            json!({"args": ["default_hugepagesz=1G", "hugepagesz=1G", "hugepages=4", "hugepagesz=2M", "hugepages=512"], "dropin": ""}),
        );
        let grub = "GRUB_CMDLINE_LINUX=\"quiet hugepagesz=1G hugepages=2 iommu=pt\"\n";
        let obs = host(
            FileState::file(grub),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        );
        let p = plan(&a, &obs);
        assert_eq!(
            written(&p, DEFAULT).unwrap(),
            "GRUB_CMDLINE_LINUX=\"quiet hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512 iommu=pt default_hugepagesz=1G\"\n"
        );
        let obs = apply(&p, obs);
        assert!(!plan(&a, &obs).changed());
        // Only the count given: changed in place, the size kept.
        let a = args(json!({"args": ["hugepages=8"], "dropin": ""}));
        let obs = host(
            FileState::file(grub),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        );
        assert_eq!(
            written(&plan(&a, &obs), DEFAULT).unwrap(),
            "GRUB_CMDLINE_LINUX=\"quiet hugepagesz=1G hugepages=8 iommu=pt\"\n"
        );
    }

    #[test]
    fn bare_keys_and_dash_underscore_equivalence() {
        let a = args(json!({"args": ["iommu", "vfio_pci.ids=144d:a80a"], "dropin": ""}));
        let grub = "GRUB_CMDLINE_LINUX=\"iommu=pt vfio-pci.ids=144d:a80a\"\n";
        let obs = host(
            FileState::file(grub),
            FileState::absent(),
            "iommu=pt vfio-pci.ids=144d:a80a",
            DEBIAN_TOOLS,
        );
        let p = plan(&a, &obs);
        assert!(!p.changed());
        assert!(!p.reboot_required);
        // Words after `--` go to init.
        let obs = host(
            FileState::file(grub),
            FileState::absent(),
            "iommu=pt -- vfio-pci.ids=144d:a80a",
            DEBIAN_TOOLS,
        );
        assert_eq!(
            plan(&a, &obs).data["cmdline_missing"],
            json!(["vfio_pci.ids=144d:a80a"])
        );
    }

    #[test]
    fn absent_removes_from_both_files_and_deletes_an_empty_dropin() {
        let a = args(json!({"args": ["iommu", "intel_iommu=on"], "state": "absent"}));
        let grub = DEBIAN_GRUB.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"iommu=pt intel_iommu=off\"",
        );
        let dropin = format!(
            "{}GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX intel_iommu=on\"\n",
            header("GRUB_CMDLINE_LINUX")
        );
        let cmdline = format!("{BOOT} iommu=pt intel_iommu=on");
        let obs = host(
            FileState::file(grub),
            FileState::file(dropin),
            &cmdline,
            DEBIAN_TOOLS,
        );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::write(
                    DEFAULT,
                    DEBIAN_GRUB.replace(
                        "GRUB_CMDLINE_LINUX=\"\"",
                        "GRUB_CMDLINE_LINUX=\"intel_iommu=off\""
                    ),
                    Attrs::default(),
                    false
                ),
                Action::Remove {
                    path: DROPIN.into()
                },
                Action::run("update-grub"),
            ]
        );
        assert!(p.reboot_required);
        assert_eq!(
            p.data["cmdline_unwanted"],
            json!(["iommu=pt", "intel_iommu=on"])
        );
        let p2 = plan(&a, &apply(&p, obs));
        assert!(!p2.changed(), "{:?}", p2.changes);
        assert!(p2.reboot_required);
        // Nothing there: ok, and no drop-in is created.
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        );
        let p = plan(&a, &obs);
        assert!(!p.changed() && !p.reboot_required);
    }

    #[test]
    fn absent_keeps_a_dropin_with_other_content() {
        let a = args(json!({"args": ["iommu=pt"], "state": "absent"}));
        let dropin = "GRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX iommu=pt\"\n";
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::file(dropin),
            BOOT,
            DEBIAN_TOOLS,
        );
        assert_eq!(
            written(&plan(&a, &obs), DROPIN).unwrap(),
            "GRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX\"\n"
        );
    }

    /// What the tool probe printed on Debian 12 hosts with and without grub2-common.
    #[test]
    fn real_hosts_tools() {
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::absent(),
            BOOT,
            &fixture("grub_tools/debian12-grub2-common.txt"),
        );
        let p = plan(&iommu(), &obs);
        assert_eq!(p.actions.last(), Some(&Action::run("update-grub")));
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::absent(),
            BOOT,
            &fixture("grub_tools/debian12-no-grub.txt"),
        );
        let e = GrubCmdline.plan(&iommu(), &obs).unwrap_err();
        assert!(e.to_string().contains("no update-grub"), "{e}");
    }

    #[test]
    fn regenerate_false_only_edits_files() {
        let a = args(json!({"args": ["iommu=pt"], "regenerate": false}));
        assert_eq!(GrubCmdline.probes(&a).len(), 3);
        let obs = Observed::new()
            .with_file(DEFAULT, FileState::file(DEBIAN_GRUB))
            .with_file(DROPIN, FileState::absent())
            .with_file(PROC_CMDLINE, FileState::file(BOOT));
        let p = plan(&a, &obs);
        assert_eq!(p.actions.len(), 1);
        assert!(matches!(&p.actions[0], Action::WriteFile { .. }));
    }

    #[test]
    fn host_errors() {
        // No grub tool at all, with a change to make.
        let obs = host(FileState::file(DEBIAN_GRUB), FileState::absent(), BOOT, "");
        let e = GrubCmdline.plan(&iommu(), &obs).unwrap_err();
        assert!(e.to_string().contains("update-grub"), "{e}");
        // ... but nothing to change is fine.
        let obs = host(FileState::file(DEBIAN_GRUB), FileState::absent(), BOOT, "");
        let a = args(json!({"args": ["x=1"], "state": "absent"}));
        assert!(GrubCmdline.plan(&a, &obs).is_ok());
        // A drop-in where grub-mkconfig does not read them (RHEL).
        let rhel = "tool=grub2-mkconfig\ncfg=/boot/grub2/grub.cfg\n";
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::absent(),
            BOOT,
            rhel,
        );
        let e = GrubCmdline.plan(&iommu(), &obs).unwrap_err();
        assert!(e.to_string().contains("dropin: \"\""), "{e}");
        // ... unless /etc/default/grub sources them itself.
        let grub = format!("{DEBIAN_GRUB}for x in /etc/default/grub.d/*.cfg ; do . \"$x\"; done\n");
        let obs = host(FileState::file(grub), FileState::absent(), BOOT, rhel);
        assert!(GrubCmdline.plan(&iommu(), &obs).is_ok());
        // A value spanning lines.
        let grub = "GRUB_CMDLINE_LINUX=\"quiet\n  splash\"\n";
        let obs = host(
            FileState::file(grub),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        );
        assert!(matches!(
            GrubCmdline.plan(&iommu(), &obs),
            Err(ModuleError::Host(_))
        ));
        // Direct mode without /etc/default/grub.
        let a = args(json!({"args": ["iommu=pt"], "dropin": ""}));
        let obs = host(FileState::absent(), FileState::absent(), BOOT, DEBIAN_TOOLS);
        assert!(matches!(
            GrubCmdline.plan(&a, &obs),
            Err(ModuleError::Host(_))
        ));
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let invalid = ArgErrorKind::Invalid;
        for (bad, kind, param) in [
            (json!({"args": []}), invalid, "args"),
            (json!({"args": ["=on"]}), invalid, "args"),
            (json!({"args": ["a=\"b c\""]}), invalid, "args"),
            (json!({"args": ["root=$x"]}), invalid, "args"),
            (json!({"args": ["quiet", "quiet"]}), invalid, "args"),
            (
                json!({"args": ["iommu=pt"], "dropin": "/etc/default/grub.d/kvm"}),
                invalid,
                "dropin",
            ),
            (
                json!({"args": ["iommu=pt"], "dropin": "grub.d/kvm.cfg"}),
                invalid,
                "dropin",
            ),
            (
                json!({"args": ["iommu=pt"], "default_file": "default/grub"}),
                invalid,
                "default_file",
            ),
            (
                json!({"args": ["iommu=pt"], "dropin": "/etc/default/grub.cfg", "default_file": "/etc/default/grub.cfg"}),
                ArgErrorKind::Conflict {
                    with: "default_file",
                },
                "dropin",
            ),
        ] {
            let e = arg_error(&GrubCmdline, bad.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{bad}");
        }
        let ok = args(json!({"args": ["vfio-pci.ids=10de:1b80,10de:10f0"]}));
        assert_eq!(ok.args, ["vfio-pci.ids=10de:1b80,10de:10f0"]);
        // A plain string splits on whitespace only: the comma list stays one argument.
        let s = args(json!({"args": "intel_iommu=on vfio-pci.ids=10de:1b80,10de:10f0"}));
        assert_eq!(
            s.args,
            vec!["intel_iommu=on", "vfio-pci.ids=10de:1b80,10de:10f0"]
        );
    }

    /// Fedora 39 / RHEL 9 layout (written after those hosts' files: the lab has none):
    /// GRUB_ENABLE_BLSCFG=true, two Boot Loader Specification entries, grubby installed.
    const FEDORA_GRUB: &str =
        "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\n\
GRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\n\
GRUB_CMDLINE_LINUX=\"rhgb quiet\"\nGRUB_DISABLE_RECOVERY=\"true\"\nGRUB_ENABLE_BLSCFG=true\n";

    fn fedora(grub: &str, tools: &str) -> Observed {
        host(
            FileState::file(grub),
            FileState::absent(),
            "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.5.6-300.fc39.x86_64 root=UUID=7a9f ro rootflags=subvol=root rhgb quiet",
            tools,
        )
        .with_file("/etc/default/grub.d/96-kvmforge-hugepages.cfg", FileState::absent())
    }

    #[test]
    fn bls_entries_get_the_arguments_with_grubby() {
        let tools = fixture("grub_tools/fedora39-bls.txt");
        let a = args(json!({"args": ["intel_iommu=on", "iommu=pt"], "dropin": ""}));
        let obs = fedora(FEDORA_GRUB, &tools);
        let p = plan(&a, &obs);
        assert_eq!(
            written(&p, DEFAULT).unwrap(),
            FEDORA_GRUB.replace("\"rhgb quiet\"", "\"rhgb quiet intel_iommu=on iommu=pt\"")
        );
        let cmds: Vec<&Action> = p.actions.iter().skip(1).collect();
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(
            matches!(cmds[0], Action::Run { cmd, .. } if cmd.contains("grub2-mkconfig -o /boot/grub2/grub.cfg"))
        );
        assert_eq!(
            *cmds[1],
            Action::run("grubby --update-kernel=ALL --args='intel_iommu=on iommu=pt'")
        );
        assert!(p
            .changes
            .iter()
            .any(|c| c.summary.contains("-6.5.6-300.fc39.x86_64.conf")));
        // Files and entries right: nothing to do.
        let done = tools.replace(" rhgb quiet", " rhgb quiet intel_iommu=on iommu=pt");
        let obs = fedora(&written(&p, DEFAULT).unwrap(), &done);
        assert!(!plan(&a, &obs).changed());
        // The file right but an entry not (a kernel installed from an older configuration,
        // an entry edited by hand): only the entries are fixed.
        let one_stale = tools.replacen(" rhgb quiet", " rhgb quiet intel_iommu=on iommu=pt", 1);
        let obs = fedora(&written(&p, DEFAULT).unwrap(), &one_stale);
        let p = plan(&a, &obs);
        assert_eq!(written(&p, DEFAULT), None);
        assert_eq!(
            p.actions.last(),
            Some(&Action::run(
                "grubby --update-kernel=ALL --args='intel_iommu=on iommu=pt'"
            ))
        );
        // A replaced value is removed from the entries too.
        let a = args(json!({"args": ["quiet", "rhgb=0"], "dropin": "", "state": "present"}));
        let p = plan(&a, &fedora(FEDORA_GRUB, &tools));
        assert_eq!(
            p.actions.last(),
            Some(&Action::run(
                "grubby --update-kernel=ALL --remove-args=rhgb --args=rhgb=0"
            ))
        );
    }

    #[test]
    fn other_modules_dropins_fall_back_to_the_default_file_on_rhel() {
        let tools = fixture("grub_tools/fedora39-bls.txt");
        let hp = "/etc/default/grub.d/96-kvmforge-hugepages.cfg";
        let r = Request::present(vec!["hugepagesz=1G".into(), "hugepages=4".into()], hp).unwrap();
        let p = GrubCmdline.plan(&r, &fedora(FEDORA_GRUB, &tools)).unwrap();
        assert_eq!(written(&p, hp), None);
        assert!(written(&p, DEFAULT)
            .unwrap()
            .contains("GRUB_CMDLINE_LINUX=\"rhgb quiet hugepagesz=1G hugepages=4\""));
        assert_eq!(
            p.actions.last(),
            Some(&Action::run(
                "grubby --update-kernel=ALL --args='hugepagesz=1G hugepages=4'"
            ))
        );
        assert!(p.reboot_required);
        // On Debian the drop-in is used.
        let obs = host(
            FileState::file(DEBIAN_GRUB),
            FileState::absent(),
            BOOT,
            DEBIAN_TOOLS,
        )
        .with_file(hp, FileState::absent());
        let p = GrubCmdline.plan(&r, &obs).unwrap();
        assert!(written(&p, hp).is_some());
        assert_eq!(written(&p, DEFAULT), None);
    }

    #[test]
    fn a_later_dropin_overriding_the_variable_is_refused() {
        let tools = |line: &str| format!("{DEBIAN_TOOLS}dropin=/etc/default/grub.d/{line}\n");
        let obs = |t: &str| host(FileState::file(DEBIAN_GRUB), FileState::absent(), BOOT, t);
        let e = GrubCmdline
            .plan(
                &iommu(),
                &obs(&tools("99-local.cfg GRUB_CMDLINE_LINUX=\"console=tty0\"")),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/etc/default/grub.d/99-local.cfg sets GRUB_CMDLINE_LINUX=\"console=tty0\" without \
             \"$GRUB_CMDLINE_LINUX\", and it is read after /etc/default/grub.d/98-kvmforge.cfg, so \
             the arguments in /etc/default/grub.d/98-kvmforge.cfg would be lost: name the drop-in \
             so it sorts after /etc/default/grub.d/99-local.cfg (dropin: \
             /etc/default/grub.d/99z-kvmforge.cfg), or make /etc/default/grub.d/99-local.cfg \
             append to $GRUB_CMDLINE_LINUX"
        );
        // Appending, sorting before ours, or another variable (cloud images' 50-cloudimg-settings.cfg
        // sets GRUB_CMDLINE_LINUX_DEFAULT) is fine.
        for ok in [
            "99-local.cfg GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=tty0\"",
            "10-early.cfg GRUB_CMDLINE_LINUX=\"console=tty0\"",
            "50-cloudimg-settings.cfg GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"",
            "99-local.cfg GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"",
        ] {
            assert!(GrubCmdline.plan(&iommu(), &obs(&tools(ok))).is_ok(), "{ok}");
        }
    }

    #[test]
    fn tool_choice() {
        let tools = |out: &str| {
            GrubTools::parse(&(), &Observation::Command(CommandOutput::ok(out))).unwrap()
        };
        assert_eq!(
            regenerate_command(&tools(DEBIAN_TOOLS)).as_deref(),
            Some("update-grub")
        );
        assert_eq!(
            regenerate_command(&tools("tool=grub-mkconfig\ncfg=/boot/grub/grub.cfg\n")).as_deref(),
            Some("grub-mkconfig -o /boot/grub/grub.cfg")
        );
        assert_eq!(
            regenerate_command(&tools("cfg=/boot/grub/grub.cfg\n")),
            None
        );
    }
}
