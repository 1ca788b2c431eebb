//! `command` and `shell`: run a command on the host.
//!
//! Neither can know whether running the command changes anything, so a plan either runs it (and
//! is marked `runs_unconditionally`, which check mode reports as skipped) or skips it because of
//! `creates`/`removes`, the only state these modules observe.

use crate::module::{
    shell_quote, Action, Change, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext,
    Probe,
};
use crate::params::{Args, ParamKind, ParamSpec};

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

/// What to run and the paths that decide whether to run it.
struct Request {
    cmd: String,
    chdir: Option<String>,
    creates: Option<String>,
    removes: Option<String>,
}

/// `creates`/`removes` relative to `chdir`, as Ansible resolves them; without `chdir` a relative
/// path would depend on the login directory, so it is refused.
fn guard_path(args: &Args, name: &str) -> Result<Option<String>, ModuleError> {
    let Some(p) = args.str(name) else {
        return Ok(None);
    };
    if p.is_empty() {
        return Err(ModuleError::Args(format!("{name} must not be empty")));
    }
    if p.starts_with('/') {
        return Ok(Some(p.to_string()));
    }
    match args.str("chdir") {
        Some(dir) if dir.starts_with('/') => Ok(Some(format!("{}/{p}", dir.trim_end_matches('/')))),
        _ => Err(ModuleError::Args(format!(
            "{name} must be an absolute path (or relative to an absolute chdir)"
        ))),
    }
}

fn request(args: &Args, cmd: String) -> Result<Request, ModuleError> {
    if cmd.trim().is_empty() {
        return Err(ModuleError::Args("the command is empty".into()));
    }
    if let Some(dir) = args.str("chdir") {
        if dir.is_empty() {
            return Err(ModuleError::Args("chdir must not be empty".into()));
        }
    }
    Ok(Request {
        cmd,
        chdir: args.str("chdir").map(str::to_string),
        creates: guard_path(args, "creates")?,
        removes: guard_path(args, "removes")?,
    })
}

fn command_request(args: &Args) -> Result<Request, ModuleError> {
    let cmd = match (args.str("cmd"), args.has("argv")) {
        (Some(_), true) => {
            return Err(ModuleError::Args(
                "give either cmd or argv, not both".into(),
            ))
        }
        (None, false) => return Err(ModuleError::Args("one of cmd or argv is required".into())),
        (Some(line), false) => {
            let words = split_words(line).map_err(ModuleError::Args)?;
            if words.is_empty() {
                return Err(ModuleError::Args("the command is empty".into()));
            }
            join_quoted(&words)
        }
        (None, true) => {
            let argv = args.list("argv");
            if argv.is_empty() {
                return Err(ModuleError::Args("argv is empty".into()));
            }
            join_quoted(&argv)
        }
    };
    request(args, cmd)
}

fn shell_request(args: &Args) -> Result<Request, ModuleError> {
    let cmd = args.req_str("cmd");
    let cmd = match args.str("executable") {
        Some(exe) if exe.trim().is_empty() => {
            return Err(ModuleError::Args("executable must not be empty".into()))
        }
        Some(exe) => format!("{} -c {}", shell_quote(exe), shell_quote(cmd)),
        None => cmd.to_string(),
    };
    request(args, cmd)
}

fn probes_for(r: &Request) -> Vec<Probe> {
    r.creates
        .iter()
        .chain(r.removes.iter())
        .map(|p| Probe::File(p.clone()))
        .collect()
}

/// Skip on `creates`/`removes` (checked in Ansible's order), else run.
fn plan_for(r: Request, observed: &Observed) -> Result<Plan, ModuleError> {
    if let Some(p) = &r.creates {
        if observed.file(p)?.exists() {
            return Ok(skipped(format!("skipped, since {p} exists")));
        }
    }
    if let Some(p) = &r.removes {
        if !observed.file(p)?.exists() {
            return Ok(skipped(format!("skipped, since {p} does not exist")));
        }
    }
    let mut plan = Plan {
        runs_unconditionally: true,
        ..Plan::ok()
    };
    plan.change(
        Change::new(format!("run {}", r.cmd)),
        [Action::Run {
            cmd: r.cmd.clone(),
            chdir: r.chdir,
        }],
    );
    Ok(plan.with_data("cmd", r.cmd))
}

fn skipped(msg: String) -> Plan {
    Plan {
        msg: Some(msg),
        ..Plan::ok()
    }
    .with_data("skipped", true)
}

impl Module for Command {
    fn spec(&self) -> &'static ModuleSpec {
        &COMMAND
    }
    fn probes(&self, args: &Args, _ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError> {
        Ok(probes_for(&command_request(args)?))
    }
    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        _ctx: &PlanContext,
    ) -> Result<Plan, ModuleError> {
        plan_for(command_request(args)?, observed)
    }
}

impl Module for Shell {
    fn spec(&self) -> &'static ModuleSpec {
        &SHELL
    }
    fn probes(&self, args: &Args, _ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError> {
        Ok(probes_for(&shell_request(args)?))
    }
    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        _ctx: &PlanContext,
    ) -> Result<Plan, ModuleError> {
        plan_for(shell_request(args)?, observed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::FileState;
    use serde_json::json;

    fn cargs(v: serde_json::Value) -> Args {
        Args::from_json(COMMAND.params, v).unwrap()
    }
    fn sargs(v: serde_json::Value) -> Args {
        Args::from_json(SHELL.params, v).unwrap()
    }
    fn ctx() -> PlanContext {
        PlanContext::default()
    }
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
        let a = cargs(json!({"cmd": "echo $HOME | cat > /tmp/x; rm *"}));
        let p = Command.plan(&a, &Observed::new(), &ctx()).unwrap();
        assert_eq!(run_cmd(&p), "echo '$HOME' '|' cat '>' '/tmp/x;' rm '*'");
        assert!(p.runs_unconditionally);
        assert_eq!(p.changes[0].summary, format!("run {}", run_cmd(&p)));
    }

    #[test]
    fn command_requotes_quoted_words() {
        let a = cargs(json!({"cmd": "virsh net-start 'my net' \"it's\""}));
        let p = Command.plan(&a, &Observed::new(), &ctx()).unwrap();
        assert_eq!(run_cmd(&p), r"virsh net-start 'my net' 'it'\''s'");
    }

    #[test]
    fn argv_quotes_each_element() {
        let a = cargs(json!({"argv": ["printf", "%s\n", "a b", "$(x)"], "chdir": "/srv"}));
        let p = Command.plan(&a, &Observed::new(), &ctx()).unwrap();
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
        let a = sargs(json!({"cmd": "echo $HOME | cat"}));
        let p = Shell.plan(&a, &Observed::new(), &ctx()).unwrap();
        assert_eq!(run_cmd(&p), "echo $HOME | cat");
        assert!(p.runs_unconditionally);
        let a = sargs(json!({"cmd": "set -o pipefail; a | b", "executable": "/bin/bash"}));
        let p = Shell.plan(&a, &Observed::new(), &ctx()).unwrap();
        assert_eq!(run_cmd(&p), "/bin/bash -c 'set -o pipefail; a | b'");
    }

    #[test]
    fn creates_existing_skips_and_missing_runs() {
        let a = cargs(json!({"cmd": "make install", "creates": "/usr/local/bin/x"}));
        assert_eq!(
            Command.probes(&a, &ctx()).unwrap(),
            vec![Probe::File("/usr/local/bin/x".into())]
        );
        let obs = Observed::new().with_file("/usr/local/bin/x", FileState::file("bin"));
        let p = Command.plan(&a, &obs, &ctx()).unwrap();
        assert!(!p.changed() && p.actions.is_empty() && !p.runs_unconditionally);
        assert_eq!(
            p.msg.as_deref(),
            Some("skipped, since /usr/local/bin/x exists")
        );
        let obs = Observed::new().with_file("/usr/local/bin/x", FileState::absent());
        let p = Command.plan(&a, &obs, &ctx()).unwrap();
        assert_eq!(run_cmd(&p), "make install");
    }

    #[test]
    fn removes_missing_skips_and_existing_runs() {
        let a = sargs(
            json!({"cmd": "rm -f stale.lock", "removes": "stale.lock", "chdir": "/var/run/x/"}),
        );
        assert_eq!(
            Shell.probes(&a, &ctx()).unwrap(),
            vec![Probe::File("/var/run/x/stale.lock".into())]
        );
        let obs = Observed::new().with_file("/var/run/x/stale.lock", FileState::absent());
        let p = Shell.plan(&a, &obs, &ctx()).unwrap();
        assert!(!p.changed());
        assert_eq!(
            p.msg.as_deref(),
            Some("skipped, since /var/run/x/stale.lock does not exist")
        );
        let obs = Observed::new().with_file("/var/run/x/stale.lock", FileState::file(""));
        let p = Shell.plan(&a, &obs, &ctx()).unwrap();
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
        let a = cargs(json!({"cmd": "true", "creates": "/x"}));
        assert!(matches!(
            Command.plan(&a, &Observed::new(), &ctx()),
            Err(ModuleError::NotObserved(_))
        ));
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        for v in [
            json!({"cmd": "a", "argv": ["a"]}),
            json!({}),
            json!({"cmd": "   "}),
            json!({"cmd": "echo 'x"}),
            json!({"argv": []}),
            json!({"cmd": "a", "creates": "relative"}),
            json!({"cmd": "a", "removes": "x", "chdir": "rel"}),
        ] {
            assert!(
                matches!(
                    Command.probes(&cargs(v.clone()), &ctx()),
                    Err(ModuleError::Args(_))
                ),
                "{v}"
            );
        }
        assert!(Shell.probes(&sargs(json!({"cmd": ""})), &ctx()).is_err());
        assert!(Shell
            .probes(&sargs(json!({"cmd": "x", "executable": ""})), &ctx())
            .is_err());
    }
}
