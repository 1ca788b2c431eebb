//! The command line, familiar to Ansible users.

use crate::connection::{Become, ConnectOptions};
use crate::error::Error;
use crate::executor::{self, exit, Options};
use crate::inventory::{self, Inventory};
use crate::modules;
use crate::output::{Human, JsonLines, Reporter};
use crate::params::{did_you_mean, did_you_mean_suffix};
use crate::playbook::Playbook;
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser, Debug)]
#[command(
    name = "kvmforge",
    version,
    about = "Idempotent, agentless configuration of KVM hypervisors over SSH"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a playbook against hosts of an inventory.
    Run(RunArgs),
    /// Validate a playbook and inventory completely without contacting any host.
    Validate(TargetArgs),
    /// Show the resolved hosts, groups and variables of an inventory.
    Inventory {
        /// Inventory: an Ansible YAML or INI file, a directory of them, or `host1,host2,`.
        /// Give it several times to merge inventories in order.
        #[arg(short, long, required = true)]
        inventory: Vec<PathBuf>,
        /// Show one host: its groups, variables and how it is reached.
        #[arg(long)]
        host: Option<String>,
    },
    /// List the built-in modules.
    Modules,
    /// Show a module's parameters, types, defaults and an example.
    Doc {
        /// Module name.
        module: String,
    },
}

#[derive(ClapArgs, Debug)]
pub struct TargetArgs {
    /// Playbook file.
    pub playbook: PathBuf,
    /// Inventory: an Ansible YAML or INI file, a directory of them, or `host1,host2,`. Give it
    /// several times to merge inventories in order. Without it only `localhost` exists.
    #[arg(short, long)]
    pub inventory: Vec<PathBuf>,
    /// Limit to hosts matching a pattern (`kvm:!gpu`, `web*`, `a:&b`).
    #[arg(short, long)]
    pub limit: Option<String>,
    /// Extra variables, highest precedence: KEY=VALUE, @file.yaml, or a YAML/JSON mapping.
    #[arg(short = 'e', long = "extra-vars")]
    pub extra_vars: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(ClapArgs, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Observe and report what would change; change nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show before/after differences of changed files.
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// Only run tasks with these tags (comma separated, repeatable).
    #[arg(short, long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip tasks with these tags.
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Hosts worked on at the same time.
    #[arg(short, long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub forks: usize,
    /// Output format; `json` prints one JSON object per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Exit 8 instead of 0 when something changed (or would change in check mode).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// More detail (actions run, timings, remote invocations).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Ask for the sudo password once (sent to hosts on stdin, never shown or logged).
    #[arg(short = 'K', long)]
    pub ask_become_pass: bool,
    /// Read the sudo password from the first line of this file.
    #[arg(long, conflicts_with = "ask_become_pass")]
    pub become_password_file: Option<PathBuf>,
    /// Seconds to wait for an SSH connection.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds one remote invocation may take (default: no limit).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Seconds to wait for another kvmforge run on the same host to finish its changes before
    /// failing that host (each host's changes are made under a lock, /run/kvmforge.lock).
    #[arg(long, default_value_t = 300)]
    pub lock_timeout: u64,
    /// SSH host key policy: accept-new records unknown keys and refuses changed ones; strict
    /// refuses unknown keys; off disables checking (unsafe).
    #[arg(long, default_value = "accept-new", value_parser = ["accept-new", "strict", "off"])]
    pub host_key_checking: String,
}

/// Parse `-e` values into one mapping, later ones winning.
pub fn parse_extra_vars(items: &[String]) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for item in items {
        let item = item.trim();
        if let Some(file) = item.strip_prefix('@') {
            out.extend(inventory::load_vars_file(Path::new(file))?);
        } else if item.starts_with('{') {
            let v: serde_yaml::Value =
                serde_yaml::from_str(item).map_err(|e| Error::Usage(format!("-e {item}: {e}")))?;
            match inventory::yaml_to_json(&v)? {
                Value::Object(m) => out.extend(m),
                _ => return Err(Error::Usage(format!("-e {item}: not a mapping"))),
            }
        } else {
            for pair in item.split_whitespace() {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    Error::Usage(format!("-e {pair}: expected KEY=VALUE, @file or a mapping"))
                })?;
                if k.is_empty() {
                    return Err(Error::Usage(format!("-e {pair}: empty variable name")));
                }
                out.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    Ok(out)
}

fn load_inventory(paths: &[PathBuf]) -> Result<Inventory, Error> {
    if paths.is_empty() {
        Ok(Inventory::empty())
    } else {
        Inventory::load_all(paths)
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // A second Ctrl-C ends the process at once.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

fn install_interrupt_handler() {
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::Handler(on_sigint),
        );
    }
}

fn become_password(args: &RunArgs) -> Result<Option<String>, Error> {
    if let Some(f) = &args.become_password_file {
        let text = std::fs::read_to_string(f).map_err(|e| Error::Io(f.clone(), e.to_string()))?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    if args.ask_become_pass {
        eprint!("BECOME password: ");
        let pw = read_password().map_err(|e| Error::Usage(format!("cannot read password: {e}")))?;
        eprintln!();
        return Ok(Some(pw));
    }
    Ok(None)
}

/// Read a line from the terminal with echo off.
fn read_password() -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn run(args: RunArgs) -> Result<i32, Error> {
    let pb = Playbook::load(&args.target.playbook)?;
    let inv = load_inventory(&args.target.inventory)?;
    let opts = Options {
        check: args.check,
        diff: args.diff,
        limit: args.target.limit.clone(),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
        extra_vars: parse_extra_vars(&args.target.extra_vars)?,
        forks: args.forks.max(1),
        verbose: args.verbose,
        become_: Become {
            password: become_password(&args)?,
        },
        connect: ConnectOptions {
            connect_timeout: args.connect_timeout,
            command_timeout: args.timeout,
            host_key_checking: args.host_key_checking.clone(),
            lock: Some(crate::remote::HostLock::for_this_run(args.lock_timeout)),
        },
    };
    // Everything is validated before the first host is contacted.
    executor::validate(&pb, &inv, &opts)?;
    let reporter: Box<dyn Reporter> = match args.output {
        OutputFormat::Human => Box::new(Human::stdout(args.diff, args.verbose)),
        OutputFormat::Json => Box::new(JsonLines::stdout(args.diff)),
    };
    install_interrupt_handler();
    let summary = executor::run(&pb, &inv, &opts, reporter.as_ref(), &INTERRUPTED)?;
    let code = summary.exit_code(args.detailed_exitcode);
    reporter.report(&crate::output::Event::Recap {
        stats: &summary.stats,
        exit_code: code,
        interrupted: summary.interrupted,
    });
    Ok(code)
}

fn validate(args: TargetArgs) -> Result<i32, Error> {
    let pb = Playbook::load(&args.playbook)?;
    let inv = load_inventory(&args.inventory)?;
    let opts = Options {
        limit: args.limit.clone(),
        extra_vars: parse_extra_vars(&args.extra_vars)?,
        ..Default::default()
    };
    let targets = executor::validate(&pb, &inv, &opts)?;
    let tasks: usize = targets
        .iter()
        .map(|t| t.play.tasks.len() + t.play.handlers.len())
        .sum();
    let mut hosts: Vec<&str> = targets
        .iter()
        .flat_map(|t| t.hosts.iter().map(|h| h.name.as_str()))
        .collect();
    hosts.sort();
    hosts.dedup();
    println!(
        "{}: valid ({} plays, {} tasks, {} hosts)",
        args.playbook.display(),
        targets.len(),
        tasks,
        hosts.len()
    );
    Ok(exit::OK)
}

/// Variables as `kvmforge inventory` shows them: secrets replaced by `<hidden>`.
fn shown_vars(vars: &Map<String, Value>) -> Value {
    Value::Object(
        vars.iter()
            .map(|(k, v)| {
                let v = if inventory::is_secret_var(k) && !v.is_null() {
                    Value::String("<hidden>".into())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

fn show_inventory(paths: &[PathBuf], host: Option<&str>) -> Result<i32, Error> {
    let inv = Inventory::load_all(paths)?;
    let sources: Vec<Value> = inv
        .sources
        .iter()
        .map(|s| json!({"path": s.path, "format": s.format.as_str()}))
        .collect();
    let v = match host {
        Some(name) => {
            let h = match inv.host(name) {
                Some(h) => h.clone(),
                None => inv
                    .select(name)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Pattern(format!("no host `{name}`")))?,
            };
            let c = h.connection()?;
            json!({
                "name": h.name,
                "groups": h.groups,
                "vars": shown_vars(&h.vars),
                "connection": {
                    "type": format!("{:?}", c.kind).to_lowercase(),
                    "address": c.address,
                    "user": c.user,
                    "port": c.port,
                    "key": c.key,
                    "jump": c.jump,
                    "become": c.become_,
                    "become_password": c.become_password.as_ref().map(|_| "<hidden>"),
                    "host_key_checking": c.host_key_checking,
                    "known_hosts": c.known_hosts,
                    "ssh_config": c.ssh_config,
                    "ssh_options": c.ssh_options.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                },
                "sources": sources,
            })
        }
        None => {
            let groups: Map<String, Value> = inv
                .groups
                .values()
                .map(|g| {
                    (
                        g.name.clone(),
                        json!({
                            "hosts": inv.hosts.iter().filter(|h| h.groups.contains(&g.name)).map(|h| &h.name).collect::<Vec<_>>(),
                            "children": g.children,
                            "vars": shown_vars(&g.vars),
                        }),
                    )
                })
                .collect();
            let hostvars: Map<String, Value> = inv
                .hosts
                .iter()
                .map(|h| (h.name.clone(), shown_vars(&h.vars)))
                .collect();
            json!({"sources": sources, "groups": groups, "hostvars": hostvars})
        }
    };
    // Written without println!: a reader that stops early (`| head`) is not an error.
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
    Ok(exit::OK)
}

fn list_modules() -> i32 {
    let width = modules::names().map(str::len).max().unwrap_or(0);
    for m in modules::ALL {
        let s = m.spec();
        println!("{:width$}  {}", s.name, s.summary);
    }
    exit::OK
}

/// The documentation of one module, from the same table the engine validates against.
pub fn module_doc(name: &str) -> Result<String, Error> {
    let m = modules::find(name).ok_or_else(|| {
        Error::Usage(format!(
            "unknown module `{name}`{}",
            did_you_mean_suffix(&did_you_mean(name, modules::names()))
        ))
    })?;
    let s = m.spec();
    let mut out = format!(
        "{} — {}\n\n{}\n\nPARAMETERS\n",
        s.name, s.summary, s.description
    );
    for p in s.params {
        let mut line = format!("  {} ({})", p.name, p.kind);
        if p.required {
            line.push_str(", required");
        }
        if let Some(d) = p.default {
            line.push_str(&format!(", default: {d}"));
        }
        if !p.aliases.is_empty() {
            line.push_str(&format!(", aliases: {}", p.aliases.join(", ")));
        }
        if s.free_form == Some(p.name) {
            line.push_str(", may be given as the task's plain string value");
        }
        out.push_str(&format!("{line}\n      {}\n", p.doc));
    }
    out.push_str("\nEXAMPLE\n");
    for l in s.example.lines() {
        out.push_str(&format!("  {l}\n"));
    }
    Ok(out)
}

/// Run the command line; returns the exit code.
pub fn main() -> i32 {
    // A usage error exits 1 like any invalid input (clap's own code, 2, means a failed task).
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::INVALID
            } else {
                exit::OK
            };
        }
    };
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Validate(a) => validate(a),
        Command::Inventory { inventory, host } => show_inventory(&inventory, host.as_deref()),
        Command::Modules => Ok(list_modules()),
        Command::Doc { module } => module_doc(&module).map(|d| {
            print!("{d}");
            exit::OK
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_vars_forms() {
        let m =
            parse_extra_vars(&["a=1 b=two".into(), "{c: [1, 2]}".into(), "a=3".into()]).unwrap();
        assert_eq!(m["a"], "3");
        assert_eq!(m["b"], "two");
        assert_eq!(m["c"], json!([1, 2]));
        assert!(parse_extra_vars(&["novalue".into()]).is_err());
    }

    #[test]
    fn doc_of_unknown_module_suggests() {
        let e = module_doc("cpy").unwrap_err().to_string();
        assert!(e.contains("did you mean `copy`"), "{e}");
        assert!(module_doc("copy")
            .unwrap()
            .contains("dest (string), required"));
    }
}
