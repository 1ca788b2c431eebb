//! Reboots: trigger, wait for the host to go down and come back, check it.
//!
//! A plan carrying a [`Reboot`] is applied in four steps:
//! 1. the trigger runs over the existing connection; it schedules the reboot a moment later
//!    and returns, so the command ends cleanly instead of dying with the connection;
//! 2. the connection is closed (a multiplexed master would otherwise sit on a dead socket);
//! 3. the controller tries NEW connections, with growing pauses, until one reads a boot id
//!    other than the one before the reboot: a connection that still reads the old id means the
//!    host has not gone down yet, a failing one that it is down or booting;
//! 4. on the new boot the test command runs and /proc/cmdline is checked for the wanted words.
//!
//! The whole wait is bounded by the plan's timeout; other hosts are not held up meanwhile
//! (each host runs on its own worker).

use super::{HostState, Options};
use crate::connection::{self, ConnectOptions, Connection};
use crate::inventory::ConnectionKind;
use crate::module::{shell_quote, Reboot};
use std::time::{Duration, Instant};

/// How a reboot ended, with the steps taken and their timings (shown with `-v`).
pub struct Outcome {
    /// `Ok(message)` when the host came back and passed its checks.
    pub result: Result<String, String>,
    pub steps: Vec<String>,
}

/// What a new connection reads: the boot id, the kernel command line, and the test command's
/// exit code and last line of output.
fn probe_script(test: Option<&str>) -> String {
    let mut s = String::from(
        "printf 'kf-boot %s\\n' \"$(cat /proc/sys/kernel/random/boot_id)\"\n\
         printf 'kf-cmdline %s\\n' \"$(cat /proc/cmdline)\"\n",
    );
    if let Some(t) = test {
        s.push_str(&format!(
            "kf_out=$(sh -c {} 2>&1 </dev/null); kf_rc=$?\n\
             printf 'kf-test %s %s\\n' \"$kf_rc\" \"$(printf '%s' \"$kf_out\" | tail -n 1)\"\n",
            shell_quote(t)
        ));
    }
    s
}

/// One value of the probe's output.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(str::trim)
}

/// Reboot the host of `state` as `spec` says.
pub fn apply(state: &mut HostState, opts: &Options, spec: &Reboot, become_: bool) -> Outcome {
    let started = Instant::now();
    let mut steps = Vec::new();
    let step = |steps: &mut Vec<String>, what: String| {
        steps.push(format!("{what} [{:.1}s]", started.elapsed().as_secs_f64()));
    };
    let fail = |steps: Vec<String>, msg: String| Outcome {
        result: Err(msg),
        steps,
    };
    let mut conn_spec = match state.host.connection() {
        Ok(c) => c,
        Err(e) => return fail(steps, e.to_string()),
    };
    if conn_spec.kind == ConnectionKind::Local {
        return fail(
            steps,
            "refusing to reboot the machine kvmforge runs on (connection: local)".into(),
        );
    }
    if let Some(a) = &state.address {
        conn_spec.address = a.clone();
    }

    // 1. Trigger. A connection that drops while the trigger returns is the reboot starting.
    let triggered = state
        .connection(opts)
        .and_then(|c| c.run_script(&spec.trigger, become_));
    match triggered {
        Ok(out) if out.status == Some(0) => step(&mut steps, "reboot triggered".into()),
        Ok(out) => {
            return fail(
                steps,
                format!(
                    "the reboot command failed (exit {}): {}",
                    out.status.map_or("signal".into(), |c| c.to_string()),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
        }
        Err(e) if e.is_unreachable() => {
            step(&mut steps, format!("connection lost while triggering: {e}"))
        }
        Err(e) => return fail(steps, format!("cannot trigger the reboot: {e}")),
    }
    // 2. The old connection has nothing more to say.
    state.conn = None;

    // 3. Wait for a new boot.
    let connect = ConnectOptions {
        connect_timeout: opts.connect.connect_timeout.clamp(1, 10),
        command_timeout: Some(30),
        ..opts.connect.clone()
    };
    let deadline = started + Duration::from_secs(spec.timeout);
    let mut pause = Duration::from_secs(2);
    let mut last = String::from("the host did not answer");
    let mut went_down = false;
    let probe = probe_script(spec.test_command.as_deref());
    while Instant::now() + pause < deadline {
        std::thread::sleep(pause);
        pause = (pause * 3 / 2).min(Duration::from_secs(10));
        let mut conn: Box<dyn Connection> =
            match connection::connect(&state.host.name, &conn_spec, &opts.become_, &connect) {
                Ok(c) => c,
                Err(e) => {
                    if !went_down {
                        step(&mut steps, "down".into());
                        went_down = true;
                    }
                    last = format!("no connection: {e}");
                    continue;
                }
            };
        let out = match conn.run_script(&probe, become_) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => {
                last = format!("connected, but: {e}");
                continue;
            }
        };
        let boot = field(&out, "kf-boot").unwrap_or_default();
        if boot.is_empty() || boot == spec.boot_id {
            last = "the host has not gone down yet (same boot id)".into();
            continue;
        }
        step(&mut steps, format!("back with boot id {boot}"));
        // 4. Checks on the new boot.
        if let Some(t) = field(&out, "kf-test") {
            let (rc, said) = t.split_once(' ').unwrap_or((t, ""));
            if rc != "0" {
                state.conn = Some(conn);
                return fail(
                    steps,
                    format!(
                        "the host rebooted, but its test command `{}` failed (exit {rc}){}",
                        spec.test_command.as_deref().unwrap_or_default(),
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(": {said}")
                        }
                    ),
                );
            }
        }
        let cmdline = field(&out, "kf-cmdline").unwrap_or_default();
        let words: Vec<&str> = cmdline.split_whitespace().collect();
        let missing: Vec<&str> = spec
            .verify_cmdline
            .iter()
            .map(String::as_str)
            .filter(|w| !words.contains(w))
            .collect();
        state.conn = Some(conn);
        if !missing.is_empty() {
            return fail(
                steps,
                format!(
                    "the host rebooted, but its kernel command line lacks {} (/proc/cmdline: {cmdline})",
                    missing.join(" ")
                ),
            );
        }
        return Outcome {
            result: Ok(format!(
                "rebooted in {:.0} s",
                started.elapsed().as_secs_f64()
            )),
            steps,
        };
    }
    fail(
        steps,
        format!(
            "the host did not come back within {} s (reboot_timeout): {last}",
            spec.timeout
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reads_boot_cmdline_and_test() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe_script(Some("echo one; echo 'last line'; exit 3")))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(field(&out, "kf-test"), Some("3 last line"));
        assert_eq!(
            field(&out, "kf-boot").map(str::len),
            Some(36),
            "a uuid: {out}"
        );
        assert!(field(&out, "kf-cmdline").is_some());
        let none = probe_script(None);
        assert!(!none.contains("kf-test"));
    }
}
