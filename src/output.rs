//! What a run tells its user: human lines like Ansible's, or one JSON object per line.
//!
//! The JSON stream is a stable interface for scripts (documented in the README): every line is
//! an object with an `event` field — `play`, `result` or `recap`.

use crate::module::Change;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
    Unreachable,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Unreachable => "unreachable",
        }
    }
}

/// The outcome of one task (or one loop item) on one host.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub host: String,
    pub task: String,
    pub item: Option<String>,
    pub status: Status,
    /// A failure that `ignore_errors` let pass.
    pub ignored: bool,
    pub changes: Vec<Change>,
    pub msg: Option<String>,
    pub reboot_required: bool,
    pub duration: Duration,
    /// Commands run and remote invocations, shown with `-v`.
    pub detail: Vec<String>,
    /// Output was suppressed with `no_log`.
    pub censored: bool,
}

/// Per-host totals for the recap.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HostStats {
    pub ok: u32,
    pub changed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub unreachable: u32,
    pub ignored: u32,
    pub reboot_required: bool,
    /// Remote invocations made (round trips after connecting).
    pub invocations: u32,
}

pub enum Event<'a> {
    Play {
        name: &'a str,
        hosts: &'a [String],
        check: bool,
    },
    /// A host starts a task; `done` of `total` hosts have finished the play.
    Progress {
        host: &'a str,
        task: &'a str,
        done: usize,
        total: usize,
    },
    Result(&'a TaskResult),
    Recap {
        stats: &'a BTreeMap<String, HostStats>,
        exit_code: i32,
        interrupted: bool,
    },
}

pub trait Reporter: Send + Sync {
    fn report(&self, event: &Event);
}

/// The human-readable reporter.
pub struct Human {
    diff: bool,
    verbose: u8,
    color: bool,
    /// A progress line on stderr (only when it is a terminal).
    progress: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Human {
    pub fn stdout(diff: bool, verbose: u8) -> Self {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Human {
            diff,
            verbose,
            color,
            progress: std::io::stderr().is_terminal() && std::io::stdout().is_terminal(),
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    pub fn to_writer(diff: bool, verbose: u8, w: Box<dyn Write + Send>) -> Self {
        Human {
            diff,
            verbose,
            color: false,
            progress: false,
            out: Mutex::new(w),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn status_color(s: Status) -> &'static str {
        match s {
            Status::Ok => "32",
            Status::Changed => "33",
            Status::Failed | Status::Unreachable => "31",
            Status::Skipped => "36",
        }
    }
}

/// A unified diff of two texts, labelled with the path.
pub fn unified_diff(label: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{label} (before)"), &format!("{label} (after)"))
        .to_string()
}

impl Reporter for Human {
    fn report(&self, event: &Event) {
        let mut text = String::new();
        match event {
            Event::Progress {
                host,
                task,
                done,
                total,
            } => {
                if self.progress {
                    let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
                    let mut line = format!("[{done}/{total} hosts done] {host}: {task}");
                    line.truncate(100);
                    eprint!("\r\x1b[K{line}");
                }
                return;
            }
            Event::Play { name, hosts, check } => {
                let title = format!("PLAY [{name}]{}", if *check { " (check mode)" } else { "" });
                text.push_str(&format!(
                    "\n{title} {}\n",
                    "*".repeat(70usize.saturating_sub(title.len()))
                ));
                if hosts.is_empty() {
                    text.push_str("skipping: no hosts matched\n");
                }
            }
            Event::Result(r) => {
                let word = if r.ignored {
                    "failed (ignored)"
                } else {
                    r.status.word()
                };
                let item = r
                    .item
                    .as_ref()
                    .map(|i| format!(" (item={i})"))
                    .unwrap_or_default();
                let head = format!("{word}: [{}]", r.host);
                text.push_str(&format!(
                    "{} {}{item}",
                    self.paint(Human::status_color(r.status), &head),
                    r.task
                ));
                if let Some(m) = &r.msg {
                    if matches!(r.status, Status::Failed | Status::Unreachable)
                        || self.verbose > 0
                        || r.status == Status::Skipped
                    {
                        text.push_str(&format!(" => {m}"));
                    }
                }
                if r.reboot_required {
                    text.push_str(&self.paint("35", " [reboot required]"));
                }
                if self.verbose > 0 {
                    text.push_str(&format!(" ({} ms)", r.duration.as_millis()));
                }
                text.push('\n');
                for c in &r.changes {
                    text.push_str(&format!("    {}\n", c.summary));
                    if self.diff {
                        if let Some(d) = &c.diff {
                            for line in unified_diff(&d.label, &d.before, &d.after).lines() {
                                let painted = match line.chars().next() {
                                    Some('+') if !line.starts_with("+++") => self.paint("32", line),
                                    Some('-') if !line.starts_with("---") => self.paint("31", line),
                                    _ => line.to_string(),
                                };
                                text.push_str(&format!("    {painted}\n"));
                            }
                        }
                    }
                }
                if self.verbose > 0 {
                    for d in &r.detail {
                        text.push_str(&format!("    | {d}\n"));
                    }
                }
            }
            Event::Recap {
                stats, interrupted, ..
            } => {
                if *interrupted {
                    text.push_str("\nInterrupted: no new tasks were started.\n");
                }
                text.push_str(&format!("\nPLAY RECAP {}\n", "*".repeat(59)));
                let width = stats.keys().map(|k| k.len()).max().unwrap_or(0);
                for (host, s) in stats.iter() {
                    let colour = if s.failed > 0 || s.unreachable > 0 {
                        "31"
                    } else if s.changed > 0 {
                        "33"
                    } else {
                        "32"
                    };
                    text.push_str(&format!(
                        "{} : ok={:<3} changed={:<3} failed={:<3} skipped={:<3} unreachable={:<3} ignored={:<3} reboot_required={}",
                        self.paint(colour, &format!("{host:width$}")),
                        s.ok, s.changed, s.failed, s.skipped, s.unreachable, s.ignored,
                        if s.reboot_required { "yes" } else { "no" }
                    ));
                    if self.verbose > 0 {
                        text.push_str(&format!(" invocations={}", s.invocations));
                    }
                    text.push('\n');
                }
            }
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if self.progress {
            eprint!("\r\x1b[K");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// One JSON object per line.
pub struct JsonLines {
    diff: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl JsonLines {
    pub fn stdout(diff: bool) -> Self {
        JsonLines {
            diff,
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }
    pub fn to_writer(diff: bool, w: Box<dyn Write + Send>) -> Self {
        JsonLines {
            diff,
            out: Mutex::new(w),
        }
    }
}

impl Reporter for JsonLines {
    fn report(&self, event: &Event) {
        let v = match event {
            Event::Progress { .. } => return,
            Event::Play { name, hosts, check } => {
                json!({"event": "play", "name": name, "hosts": hosts, "check": check})
            }
            Event::Result(r) => json!({
                "event": "result",
                "host": r.host,
                "task": r.task,
                "item": r.item,
                "status": r.status,
                "changed": r.status == Status::Changed,
                "ignored": r.ignored,
                "msg": r.msg,
                "changes": r.changes.iter().map(|c| json!({
                    "summary": c.summary,
                    "diff": if self.diff { c.diff.as_ref().map(|d| json!({"path": d.label, "before": d.before, "after": d.after})) } else { None },
                })).collect::<Vec<_>>(),
                "reboot_required": r.reboot_required,
                "duration_ms": r.duration.as_millis() as u64,
                "commands": r.detail,
            }),
            Event::Recap {
                stats,
                exit_code,
                interrupted,
            } => json!({
                "event": "recap",
                "hosts": stats,
                "exit_code": exit_code,
                "interrupted": interrupted,
            }),
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_is_unified_with_labels() {
        let d = unified_diff("/etc/x", "a\nb\n", "a\nc\n");
        assert!(d.contains("--- /etc/x (before)"));
        assert!(d.contains("-b\n+c"));
    }
}
