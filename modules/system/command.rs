//! `command` and `shell`: run a command on the host.
//!
//! Neither can know whether running the command changes anything, so a plan either runs it (and
//! is marked `runs_unconditionally`, which check mode reports as skipped) or skips it because of
//! `creates`/`removes`, the only state these modules observe.

use crate::module::{
    shell_quote, Action, ArgError, Change, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct Command;
pub struct Shell;

static COMMAND: ModuleSpec = ModuleSpec {
    name: "command",
    summary: "Run a command without a shell",
    description:
        "Runs `cmd` (or the list `argv`) on the host. The command is not interpreted by a \
shell: `cmd` is split into words with POSIX quoting rules (single quotes, double quotes, \
backslash) and every word is passed literally, so `$HOME`, `*`, `|`, `>` and `;` are plain \
arguments (unlike Ansible, variables are not expanded either). Use `shell` for pipes and \
redirections. `argv` must be a YAML list; each element is one argument. \
The command runs on every run, and is reported as changed, unless `creates` names a path that \
exists or `removes` names a path that does not (exact paths, no globs; relative ones resolve \
against `chdir`). Check mode reports a command that would run as skipped. A non-zero exit fails \
the task; `register` receives rc, stdout and stderr.",
    params: &[
        ParamSpec::optional(
            "cmd",
            ParamKind::Str,
            "The command line (exclusive with argv)",
        ),
        ParamSpec::optional(
            "argv",
            ParamKind::List,
            "The command as a list of arguments (exclusive with cmd)",
        ),
        ParamSpec::optional("creates", ParamKind::Str, "Skip when this path exists"),
        ParamSpec::optional(
            "removes",
            ParamKind::Str,
            "Skip when this path does not exist",
        ),
        ParamSpec::optional("chdir", ParamKind::Str, "Run in this directory"),
    ],
    free_form: Some("cmd"),
    example: r#"- name: Define the default network from its XML
  command:
    cmd: virsh net-define /etc/libvirt/default-net.xml
    creates: /etc/libvirt/qemu/networks/default.xml
"#,
};

static SHELL: ModuleSpec = ModuleSpec {
    name: "shell",
    summary: "Run a command through the shell",
    description: "Runs `cmd` with `sh -c` (or `EXECUTABLE -c` when `executable` is given), so \
pipes, redirections, variables and globs work. The command runs on every run, and is reported \
as changed, unless `creates` names a path that exists or `removes` names a path that does not \
(exact paths, no globs; relative ones resolve against `chdir`). Check mode reports a command \
that would run as skipped. A non-zero exit fails the task (the exit status of a pipeline is that \
of its last command; use `executable: /bin/bash` and `set -o pipefail` to change that); \
`register` receives rc, stdout and stderr.",
    params: &[
        ParamSpec::required("cmd", ParamKind::Str, "The shell command"),
        ParamSpec::optional("creates", ParamKind::Str, "Skip when this path exists"),
        ParamSpec::optional(
            "removes",
            ParamKind::Str,
            "Skip when this path does not exist",
        ),
        ParamSpec::optional("chdir", ParamKind::Str, "Run in this directory"),
        ParamSpec::optional(
            "executable",
            ParamKind::Str,
            "Shell to run cmd with `-c` instead of sh",
        ),
    ],
    free_form: Some("cmd"),
    example: r#"- name: Count running guests
  shell:
    cmd: virsh list --name | grep -c . || true
"#,
};

/// Split a command line into words the way a POSIX shell does for quoting only: no expansion,
/// no operators. Unbalanced quotes and a trailing backslash are errors rather than guesses.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once anything (even an empty quoted string) has been seen.
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {} // line continuation
                Some(n) => {
                    word.push(n);
                    in_word = true;
                }
                None => return Err("command ends with a lone backslash".into()),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => word.push(n),
                        None => return Err("unterminated single quote in command".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(n @ ('$' | '`' | '"' | '\\')) => word.push(n),
                            Some(n) => {
                                word.push('\\');
                                word.push(n);
                            }
                            None => return Err("unterminated double quote in command".into()),
                        },
                        Some(n) => word.push(n),
                        None => return Err("unterminated double quote in command".into()),
                    }
                }
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn join_quoted(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `command`'s arguments as given.
#[derive(Deserialize)]
struct CommandParams {
    cmd: Option<String>,
    argv: Option<Vec<String>>,
    creates: Option<String>,
    removes: Option<String>,
    chdir: Option<String>,
}

/// `shell`'s arguments as given.
#[derive(Deserialize)]
struct ShellParams {
    cmd: String,
    executable: Option<String>,
    creates: Option<String>,
    removes: Option<String>,
    chdir: Option<String>,
}

/// What to run and the paths that decide whether to run it: the request of both modules.
#[derive(Debug)]
pub struct Request {
    /// The command line as `sh -c` runs it.
    cmd: String,
    chdir: Option<String>,
    creates: Option<String>,
    removes: Option<String>,
}

/// `creates`/`removes` relative to `chdir`, as Ansible resolves them; without `chdir` a relative
/// path would depend on the login directory, so it is refused.
fn guard_path(
    name: &'static str,
    value: Option<String>,
    chdir: Option<&str>,
) -> Result<Option<String>, ArgError> {
    let Some(p) = value else {
        return Ok(None);
    };
    if p.is_empty() {
        return Err(ArgError::invalid(name, format!("{name} must not be empty")));
    }
    if p.starts_with('/') {
        return Ok(Some(p));
    }
    match chdir {
        Some(dir) if dir.starts_with('/') => Ok(Some(format!("{}/{p}", dir.trim_end_matches('/')))),
        _ => Err(ArgError::invalid(
            name,
            format!("{name} must be an absolute path (or relative to an absolute chdir)"),
        )),
    }
}

impl Request {
    /// The checks both modules share, once the command line is built.
    fn new(
        cmd: String,
        chdir: Option<String>,
        creates: Option<String>,
        removes: Option<String>,
    ) -> Result<Request, ArgError> {
        if cmd.trim().is_empty() {
            return Err(ArgError::invalid("cmd", "the command is empty"));
        }
        if chdir.as_deref() == Some("") {
            return Err(ArgError::invalid("chdir", "chdir must not be empty"));
        }
        Ok(Request {
            creates: guard_path("creates", creates, chdir.as_deref())?,
            removes: guard_path("removes", removes, chdir.as_deref())?,
            cmd,
            chdir,
        })
    }

    fn probes(&self) -> Vec<Probe> {
        self.creates
            .iter()
            .chain(self.removes.iter())
            .map(|p| Probe::File(p.clone()))
            .collect()
    }

    /// Skip on `creates`/`removes` (checked in Ansible's order), else run.
    fn plan(&self, observed: &Observed) -> Result<Plan, ModuleError> {
        if let Some(p) = &self.creates {
            if observed.file(p)?.exists() {
                return Ok(skipped(format!("skipped, since {p} exists")));
            }
        }
        if let Some(p) = &self.removes {
            if !observed.file(p)?.exists() {
                return Ok(skipped(format!("skipped, since {p} does not exist")));
            }
        }
        let mut plan = Plan {
            runs_unconditionally: true,
            ..Plan::ok()
        };
        plan.change(
            Change::new(format!("run {}", self.cmd)),
            [Action::Run {
                cmd: self.cmd.clone(),
                chdir: self.chdir.clone(),
            }],
        );
        Ok(plan.with_data("cmd", self.cmd.as_str()))
    }
}

fn skipped(msg: String) -> Plan {
    Plan {
        msg: Some(msg),
        ..Plan::ok()
    }
    .with_data("skipped", true)
}

impl Module for Command {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &COMMAND
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: CommandParams = args.parse()?;
        let cmd = match (p.cmd, p.argv) {
            (Some(_), Some(_)) => {
                return Err(
                    ArgError::conflict("cmd", "argv", "give either cmd or argv, not both").into(),
                )
            }
            (None, None) => {
                return Err(ArgError::nothing_to_do("one of cmd or argv is required").into())
            }
            (Some(line), None) => {
                let words = split_words(&line).map_err(|e| ArgError::invalid("cmd", e))?;
                if words.is_empty() {
                    return Err(ArgError::invalid("cmd", "the command is empty").into());
                }
                join_quoted(&words)
            }
            (None, Some(argv)) => {
                if argv.is_empty() {
                    return Err(ArgError::invalid("argv", "argv is empty").into());
                }
                join_quoted(&argv)
            }
        };
        Ok(Request::new(cmd, p.chdir, p.creates, p.removes)?)
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        req.probes()
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        req.plan(observed)
    }
}

impl Module for Shell {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SHELL
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: ShellParams = args.parse()?;
        let cmd = match p.executable {
            Some(exe) if exe.trim().is_empty() => {
                return Err(ArgError::invalid("executable", "executable must not be empty").into())
            }
            Some(exe) => format!("{} -c {}", shell_quote(&exe), shell_quote(&p.cmd)),
            None => p.cmd,
        };
        Ok(Request::new(cmd, p.chdir, p.creates, p.removes)?)
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        req.probes()
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        req.plan(observed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, FileState};
    use crate::modules::testing::{arg_error, plan, req};
    use serde_json::json;

    fn run_cmd(p: &Plan) -> &str {
        match &p.actions[..] {
            [Action::Run { cmd, .. }] => cmd,
            other => panic!("expected one Run, got {other:?}"),
        }
    }

    #[test]
    fn split_words_follows_posix_quoting() {
        assert_eq!(
            split_words("ls -l  /tmp").unwrap(),
            vec!["ls", "-l", "/tmp"]
        );
        assert_eq!(
            split_words(r#"echo 'a b' "c d" e\ f"#).unwrap(),
            vec!["echo", "a b", "c d", "e f"]
        );
        assert_eq!(
            split_words(r#"echo "a\"b\$c\n" 'x\y'"#).unwrap(),
            vec!["echo", r#"a"b$c\n"#, r"x\y"]
        );
        assert_eq!(split_words("a'b'\"c\"d ''").unwrap(), vec!["abcd", ""]);
        assert_eq!(split_words("a \\\n b").unwrap(), vec!["a", "b"]);
        assert!(split_words("echo 'x").is_err());
        assert!(split_words("echo \"x").is_err());
        assert!(split_words("echo x\\").is_err());
    }

    /// What a real shell makes of the re-quoted words is exactly the split.
    #[test]
    fn requoted_words_survive_a_real_shell() {
        let line = r#"echo $HOME | "a b" 'c'\''d' *  e\ f "$(x)" '' "#;
        let words = split_words(line).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '<%s>' {}", join_quoted(&words)))
            .output()
            .unwrap();
        let expected: String = words.iter().map(|w| format!("<{w}>")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
        assert_eq!(words[..4], ["echo", "$HOME", "|", "a b"]);
    }

    #[test]
    fn command_passes_shell_syntax_literally() {
        let p = plan(
            &Command,
            json!({"cmd": "echo $HOME | cat > /tmp/x; rm *"}),
            &Observed::new(),
        )
        .unwrap();
        assert_eq!(run_cmd(&p), "echo '$HOME' '|' cat '>' '/tmp/x;' rm '*'");
        assert!(p.runs_unconditionally);
        assert_eq!(p.changes[0].summary, format!("run {}", run_cmd(&p)));
    }

    #[test]
    fn command_requotes_quoted_words() {
        let p = plan(
            &Command,
            json!({"cmd": "virsh net-start 'my net' \"it's\""}),
            &Observed::new(),
        )
        .unwrap();
        assert_eq!(run_cmd(&p), r"virsh net-start 'my net' 'it'\''s'");
    }

    #[test]
    fn argv_quotes_each_element() {
        let p = plan(
            &Command,
            json!({"argv": ["printf", "%s\n", "a b", "$(x)"], "chdir": "/srv"}),
            &Observed::new(),
        )
        .unwrap();
        assert_eq!(
            p.actions,
            vec![Action::Run {
                cmd: "printf '%s\n' 'a b' '$(x)'".into(),
                chdir: Some("/srv".into())
            }]
        );
    }

    #[test]
    fn shell_passes_cmd_unchanged() {
        let p = plan(&Shell, json!({"cmd": "echo $HOME | cat"}), &Observed::new()).unwrap();
        assert_eq!(run_cmd(&p), "echo $HOME | cat");
        assert!(p.runs_unconditionally);
        let p = plan(
            &Shell,
            json!({"cmd": "set -o pipefail; a | b", "executable": "/bin/bash"}),
            &Observed::new(),
        )
        .unwrap();
        assert_eq!(run_cmd(&p), "/bin/bash -c 'set -o pipefail; a | b'");
    }

    #[test]
    fn creates_existing_skips_and_missing_runs() {
        let a = req(
            &Command,
            json!({"cmd": "make install", "creates": "/usr/local/bin/x"}),
        );
        assert_eq!(
            Command.probes(&a),
            vec![Probe::File("/usr/local/bin/x".into())]
        );
        let obs = Observed::new().with_file("/usr/local/bin/x", FileState::file("bin"));
        let p = Command.plan(&a, &obs).unwrap();
        assert!(!p.changed() && p.actions.is_empty() && !p.runs_unconditionally);
        assert_eq!(
            p.msg.as_deref(),
            Some("skipped, since /usr/local/bin/x exists")
        );
        let obs = Observed::new().with_file("/usr/local/bin/x", FileState::absent());
        let p = Command.plan(&a, &obs).unwrap();
        assert_eq!(run_cmd(&p), "make install");
    }

    #[test]
    fn removes_missing_skips_and_existing_runs() {
        let a = req(
            &Shell,
            json!({"cmd": "rm -f stale.lock", "removes": "stale.lock", "chdir": "/var/run/x/"}),
        );
        assert_eq!(
            Shell.probes(&a),
            vec![Probe::File("/var/run/x/stale.lock".into())]
        );
        let obs = Observed::new().with_file("/var/run/x/stale.lock", FileState::absent());
        let p = Shell.plan(&a, &obs).unwrap();
        assert!(!p.changed());
        assert_eq!(
            p.msg.as_deref(),
            Some("skipped, since /var/run/x/stale.lock does not exist")
        );
        let obs = Observed::new().with_file("/var/run/x/stale.lock", FileState::file(""));
        let p = Shell.plan(&a, &obs).unwrap();
        assert_eq!(
            p.actions,
            vec![Action::Run {
                cmd: "rm -f stale.lock".into(),
                chdir: Some("/var/run/x/".into())
            }]
        );
    }

    #[test]
    fn unobserved_guard_is_an_error_not_a_run() {
        let a = req(&Command, json!({"cmd": "true", "creates": "/x"}));
        assert!(matches!(
            Command.plan(&a, &Observed::new()),
            Err(ModuleError::NotObserved(_))
        ));
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let invalid = ArgErrorKind::Invalid;
        for (v, kind, param) in [
            (
                json!({"cmd": "a", "argv": ["a"]}),
                ArgErrorKind::Conflict { with: "argv" },
                "cmd",
            ),
            (json!({}), ArgErrorKind::NothingToDo, ""),
            (json!({"cmd": "   "}), invalid, "cmd"),
            (json!({"cmd": "echo 'x"}), invalid, "cmd"),
            (json!({"argv": []}), invalid, "argv"),
            (
                json!({"cmd": "a", "creates": "relative"}),
                invalid,
                "creates",
            ),
            (
                json!({"cmd": "a", "removes": "x", "chdir": "rel"}),
                invalid,
                "removes",
            ),
        ] {
            let e = arg_error(&Command, v.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{v}");
        }
        for (v, param) in [
            (json!({"cmd": ""}), "cmd"),
            (json!({"cmd": "x", "executable": ""}), "executable"),
        ] {
            let e = arg_error(&Shell, v.clone());
            assert_eq!((e.kind, e.param), (invalid, param), "{v}");
        }
    }
}
