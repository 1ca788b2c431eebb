//! Network changes with a safety net: confirm from the controller, or the host rolls back.
//!
//! A plan carrying a [`NetworkGuard`] is applied in five steps:
//! 1. on the host, everything the plan writes or removes is copied to a private directory
//!    (`/var/lib/kvmforge/guard/TOKEN`), with the list of network devices that already exist;
//! 2. a rollback is armed there that does not depend on the SSH session: a transient systemd
//!    timer (`systemd-run --on-active`), or a detached `sleep` where systemd is not running.
//!    When it fires it restores the saved files, deletes the devices the change created, and
//!    runs the module's `reapply` command;
//! 3. the actions run, detached from the session too, so that a connection cut by the change
//!    itself cannot kill them half-way;
//! 4. the controller opens a NEW connection (the multiplexed one may survive while new ones
//!    fail) to the host's address, or the task's `confirm_address`, and runs the task's
//!    `verify` command there;
//! 5. confirmed: the rollback is disarmed (a `mkdir` lock decides between the disarm and a
//!    rollback that fires at the same moment) and the new connection carries on. Not
//!    confirmed: the controller waits for the rollback, reconnects at the old address, checks
//!    the saved files are back byte for byte, and fails the task saying so.
//!
//! All of it happens under the run's host lock: before step 1 the lock's holder hands it to a
//! keeper detached from the session, which holds it until the change is disarmed or rolled
//! back, so another run cannot start changing the host while this change is unconfirmed, even
//! when the change cuts the connection the holder lives on (see `remote::RunLock`).

use super::{HostState, Options};
use crate::connection::{self, ConnectOptions};
use crate::module::{shell_quote, Action, NetworkGuard};
use crate::remote::{self, Report, Script};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Default seconds before an unconfirmed change is rolled back.
pub const DEFAULT_TIMEOUT: u64 = 60;

/// What the task says about confirming its change.
pub struct Settings<'a> {
    pub timeout: u64,
    pub verify: Option<&'a str>,
    pub confirm_address: Option<&'a str>,
}

/// How a guarded apply ended.
pub enum Guarded {
    /// Applied and confirmed: the actions' outcomes.
    Confirmed(Report),
    /// The actions failed on the host (it stayed reachable); the saved state was restored at
    /// once.
    Failed { report: Option<Report>, msg: String },
    /// Not confirmed; the host rolled the change back and answers again.
    RolledBack(String),
    /// Not confirmed, and the host could not be reached after the rollback either.
    Lost(String),
}

/// A guarded apply's result with the steps taken and their timings (shown with `-v`).
pub struct Outcome {
    pub result: Guarded,
    pub steps: Vec<String>,
}

/// Where the saved state lives on the host.
fn guard_dir(token: &str) -> String {
    format!("/var/lib/kvmforge/guard/{token}")
}

fn unit_name(token: &str) -> String {
    format!("kvmforge-rollback-{token}")
}

/// A token unique to this change on this host.
fn token(host: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    host.hash(&mut h);
    std::process::id().hash(&mut h);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    nanos.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The script that restores the saved state. It runs on the host, as root, from the timer or
/// from the controller when the actions themselves failed; the `lock` directory makes sure it
/// runs at most once and never after a disarm.
pub fn rollback_script(dir: &str, paths: &[String], guard: &NetworkGuard) -> String {
    let d = shell_quote(dir);
    let mut s = format!(
        "#!/bin/sh\n# Restores what a network change replaced (written by kvmforge).\nd={d}\n\
         mkdir \"$d/lock\" 2>/dev/null || exit 0\ndate +%s > \"$d/rolling-back\"\nst=ok\n"
    );
    for (i, p) in paths.iter().enumerate() {
        let q = shell_quote(p);
        s.push_str(&format!(
            "if [ -e \"$d/f{i}\" ] || [ -L \"$d/f{i}\" ]; then\n  \
               if [ -d \"$d/f{i}\" ] && [ ! -L \"$d/f{i}\" ]; then rm -rf {q} && cp -a \"$d/f{i}\" {q} || st=failed; \
               else cp -a \"$d/f{i}\" {q}.kf-rollback && mv -f {q}.kf-rollback {q} || st=failed; fi\n\
             else rm -rf {q} || st=failed; fi\n"
        ));
    }
    for dev in &guard.creates_devices {
        let q = shell_quote(dev);
        s.push_str(&format!(
            "grep -qxF {q} \"$d/devices-before\" 2>/dev/null || ip link delete dev {q} 2>/dev/null\n"
        ));
    }
    if !guard.reapply.trim().is_empty() {
        s.push_str(&format!(
            "( {} ) > \"$d/reapply.out\" 2>&1 || st=reapply-failed\n",
            guard.reapply
        ));
    }
    s.push_str("echo \"$st\" > \"$d/rolled-back\"\n");
    s
}

/// Save, arm, apply detached, and wait (up to `wait` seconds) for the apply to finish.
fn arm_script(
    dir: &str,
    token: &str,
    paths: &[String],
    guard: &NetworkGuard,
    apply: &Script,
    timeout: u64,
    wait: u64,
) -> String {
    let d = shell_quote(dir);
    let mut s = String::from("set -u\numask 077\n");
    s.push_str("[ \"$(id -u)\" = 0 ] || { echo 'KFG error network changes need root: set become'; exit 0; }\n");
    s.push_str(&format!(
        "d={d}\nmkdir -p \"$d\" || {{ echo \"KFG error cannot create $d\"; exit 0; }}\n"
    ));
    for (i, p) in paths.iter().enumerate() {
        let q = shell_quote(p);
        s.push_str(&format!(
            "if [ -e {q} ] || [ -L {q} ]; then cp -a {q} \"$d/f{i}\" || {{ echo 'KFG error cannot save {}'; exit 0; }}; fi\n",
            p.replace('\'', "")
        ));
    }
    s.push_str(": > \"$d/devices-before\"\n");
    for dev in &guard.creates_devices {
        let q = shell_quote(dev);
        s.push_str(&format!(
            "ip link show dev {q} >/dev/null 2>&1 && echo {q} >> \"$d/devices-before\"\n"
        ));
    }
    s.push_str(&format!(
        "printf '%s' {} > \"$d/rollback.sh\"\n",
        shell_quote(&rollback_script(dir, paths, guard))
    ));
    let unit = unit_name(token);
    s.push_str(&format!(
        "if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1 && \
         systemd-run --quiet --collect --unit={unit} --on-active={timeout}s --timer-property=AccuracySec=100ms \
         /bin/sh \"$d/rollback.sh\" > \"$d/arm.out\" 2>&1; then echo systemd > \"$d/armed\"; \
         else nohup setsid sh -c 'sleep {timeout}; exec /bin/sh \"$1/rollback.sh\"' kvmforge-rollback \"$d\" \
         </dev/null >/dev/null 2>&1 & echo $! > \"$d/sleeper.pid\"; echo sleeper > \"$d/armed\"; fi\n"
    ));
    s.push_str("echo \"KFG armed $(cat \"$d/armed\")\"\n");
    s.push_str(&format!(
        "printf '%s' {} > \"$d/apply.sh\"\n",
        shell_quote(&apply.render())
    ));
    s.push_str(
        "nohup setsid sh -c 'sh \"$1/apply.sh\" > \"$1/apply.out\" 2> \"$1/apply.err\"; echo $? > \"$1/apply.rc\"' \
         kvmforge-apply \"$d\" </dev/null >/dev/null 2>&1 &\n",
    );
    s.push_str(&format!(
        "n=0\nwhile [ ! -f \"$d/apply.rc\" ] && [ $n -lt {} ]; do sleep 0.2 2>/dev/null || sleep 1; n=$((n+1)); done\n",
        wait * 5
    ));
    s.push_str(apply_report());
    s
}

/// Print whether the apply finished, then its report (the engine's protocol).
fn apply_report() -> &'static str {
    "if [ -f \"$d/apply.rc\" ]; then echo \"KFG applied $(cat \"$d/apply.rc\")\"; echo KFG-OUT; cat \"$d/apply.out\"; \
     else echo 'KFG running'; fi\n"
}

/// On a new connection: is the apply done, does `verify` pass?
fn confirm_script(dir: &str, verify: Option<&str>) -> String {
    let mut s = format!("d={}\n", shell_quote(dir));
    s.push_str("[ -d \"$d\" ] || { echo 'KFG gone'; exit 0; }\n");
    s.push_str("[ -e \"$d/rolling-back\" ] && { echo 'KFG too-late'; exit 0; }\n");
    s.push_str("[ -f \"$d/apply.rc\" ] || { echo 'KFG running'; exit 0; }\n");
    if let Some(v) = verify {
        s.push_str(&format!(
            "( {v} ) > \"$d/verify.out\" 2>&1 </dev/null; echo \"KFG verify $?\"; tail -n 3 \"$d/verify.out\" | sed 's/^/KFG say /'\n"
        ));
    }
    s.push_str("echo 'KFG confirmed'\n");
    s
}

/// Take the lock before a rollback can, stop the timer, and hand back the apply's report.
fn disarm_script(dir: &str, token: &str) -> String {
    let unit = unit_name(token);
    format!(
        "d={}\nif mkdir \"$d/lock\" 2>/dev/null; then\n  systemctl stop {unit}.timer >/dev/null 2>&1\n  \
         [ -f \"$d/sleeper.pid\" ] && kill \"$(cat \"$d/sleeper.pid\")\" 2>/dev/null\n  echo KFG disarmed\n  \
         echo \"KFG applied $(cat \"$d/apply.rc\" 2>/dev/null)\"; echo KFG-OUT; cat \"$d/apply.out\" 2>/dev/null\n  \
         rm -rf \"$d\"\nelse echo KFG too-late; fi\n",
        shell_quote(dir)
    )
}

/// Roll back now (the actions failed while the host stayed reachable).
fn rollback_now_script(dir: &str, token: &str) -> String {
    let unit = unit_name(token);
    format!(
        "d={}\nsystemctl stop {unit}.timer >/dev/null 2>&1\n[ -f \"$d/sleeper.pid\" ] && kill \"$(cat \"$d/sleeper.pid\")\" 2>/dev/null\n\
         /bin/sh \"$d/rollback.sh\"\necho \"KFG rolledback $(cat \"$d/rolled-back\" 2>/dev/null)\"\n",
        shell_quote(dir)
    )
}

/// After a rollback: did it finish, and is every saved file back byte for byte?
fn check_rolled_back_script(dir: &str, paths: &[String]) -> String {
    let mut s = format!("d={}\n", shell_quote(dir));
    s.push_str("[ -f \"$d/rolled-back\" ] || { echo 'KFG pending'; exit 0; }\n");
    s.push_str("echo \"KFG rolledback $(cat \"$d/rolled-back\")\"\n");
    for (i, p) in paths.iter().enumerate() {
        let q = shell_quote(p);
        s.push_str(&format!(
            "if [ -e \"$d/f{i}\" ]; then {{ [ -d \"$d/f{i}\" ] && diff -r \"$d/f{i}\" {q} >/dev/null 2>&1 || cmp -s \"$d/f{i}\" {q}; }} || echo 'KFG differs {}'; \
             elif [ -e {q} ]; then echo 'KFG differs {}'; fi\n",
            p.replace('\'', ""),
            p.replace('\'', "")
        ));
    }
    s.push_str("rm -rf \"$d\"\necho KFG checked\n");
    s
}

/// The `KFG` lines of a script's output, and the protocol report after `KFG-OUT`.
fn split(out: &[u8]) -> (Vec<String>, Option<Vec<u8>>) {
    let text = String::from_utf8_lossy(out);
    match text.find("KFG-OUT\n") {
        Some(i) => (
            lines(&text[..i]),
            Some(text[i + "KFG-OUT\n".len()..].as_bytes().to_vec()),
        ),
        None => (lines(&text), None),
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("KFG ").map(str::to_string))
        .collect()
}

fn find<'l>(lines: &'l [String], prefix: &str) -> Option<&'l str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix).map(str::trim))
}

/// Apply `actions` under `guard` on the host of `state`.
pub fn apply(
    state: &mut HostState,
    opts: &Options,
    actions: &[Action],
    guard: &NetworkGuard,
    settings: &Settings,
    become_: bool,
) -> Outcome {
    let mut steps = Vec::new();
    let started = Instant::now();
    let step = |steps: &mut Vec<String>, what: String| {
        steps.push(format!("{what} [{:.1}s]", started.elapsed().as_secs_f64()));
    };
    let token = token(&state.host.name);
    let dir = guard_dir(&token);
    let paths = guard.saved_paths(actions);
    let apply_script = Script {
        actions: actions.to_vec(),
        probes: Vec::new(),
        facts: crate::facts::Wanted::NONE,
        become_: false,
    };
    let timeout = settings.timeout;
    // How long the first session waits for the apply to finish, and how long the controller
    // waits for that session: both well inside the timeout, so that there is time left to
    // confirm over a new connection when the change has cut the first one.
    let wait = (timeout / 4).clamp(3, 30);
    let session_limit = Duration::from_secs((wait + 5).min(timeout / 3).max(wait + 1));
    let arm = arm_script(&dir, &token, &paths, guard, &apply_script, timeout, wait);
    let armed_at = Instant::now();

    // Steps 1-3 on the existing connection, bounded in time: a change that cuts the network
    // may leave that connection hanging rather than failing.
    // The run lock stays held until the change is settled, whatever happens to this
    // connection (see `remote::RunLock`).
    let grace = session_limit.as_secs() + 30;
    let kept = state
        .connection(opts)
        .and_then(|c| c.keep_lock(&dir, remote::RunLock::keep_for(timeout), grace));
    let conn = match kept {
        Ok(()) => state.conn.take().expect("connected"),
        Err(e) => {
            return Outcome {
                result: Guarded::Failed {
                    report: None,
                    msg: format!("cannot apply the network change (nothing was changed): {e}"),
                },
                steps,
            }
        }
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut conn = conn;
        let r = conn.run_script(&arm, become_);
        let _ = tx.send((conn, r));
    });
    let mut report = None;
    match rx.recv_timeout(session_limit) {
        Ok((conn, Ok(out))) => {
            state.conn = Some(conn);
            let (kfg, proto) = split(&out.stdout);
            if let Some(e) = find(&kfg, "error") {
                return Outcome {
                    result: Guarded::Failed {
                        report: None,
                        msg: e.to_string(),
                    },
                    steps,
                };
            }
            match find(&kfg, "armed") {
                Some(how) => step(
                    &mut steps,
                    format!(
                        "saved {} path(s) in {dir}; rollback armed ({}, {timeout} s)",
                        paths.len(),
                        if how == "systemd" {
                            "systemd timer"
                        } else {
                            "detached sleep"
                        }
                    ),
                ),
                None => {
                    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    return Outcome {
                        result: Guarded::Failed {
                            report: None,
                            msg: format!("could not arm the rollback, nothing was changed: {err}"),
                        },
                        steps,
                    };
                }
            }
            match find(&kfg, "applied") {
                Some(rc) => {
                    let parsed = proto.and_then(|p| remote::parse(&apply_script, &p).ok());
                    step(
                        &mut steps,
                        format!("applied (exit {rc}); the session survived"),
                    );
                    if rc != "0" || parsed.as_ref().is_none_or(|r| !r.complete) {
                        return roll_back_now(state, &dir, &token, parsed, steps, started);
                    }
                    report = parsed;
                }
                None => step(&mut steps, "applying; still running".into()),
            }
        }
        Ok((_, Err(e))) => step(
            &mut steps,
            format!("the session ended during the change ({e})"),
        ),
        Err(_) => step(
            &mut steps,
            "the session stopped answering during the change".into(),
        ),
    }

    // Step 4: confirm over a new connection before the rollback fires.
    let mut spec = match state.host.connection() {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                result: Guarded::Lost(e.to_string()),
                steps,
            }
        }
    };
    let old_address = spec.address.clone();
    if let Some(a) = settings.confirm_address {
        spec.address = a.to_string();
    }
    let connect = ConnectOptions {
        connect_timeout: opts.connect.connect_timeout.clamp(1, 10),
        ..opts.connect.clone()
    };
    let deadline = armed_at + Duration::from_secs(timeout.saturating_sub(5).max(5));
    let mut last_reason = String::from("no time was left to confirm it");
    while Instant::now() < deadline {
        let attempt = connection::connect(&state.host.name, &spec, &opts.become_, &connect)
            .and_then(|mut c| {
                c.run_script(&confirm_script(&dir, settings.verify), become_)
                    .map(|o| (c, o))
            });
        match attempt {
            Err(e) => last_reason = format!("a new connection to {} failed: {e}", spec.address),
            Ok((mut c, out)) => {
                let (kfg, _) = split(&out.stdout);
                if find(&kfg, "too-late").is_some() || find(&kfg, "gone").is_some() {
                    last_reason = "the rollback fired before the confirmation".into();
                    break;
                }
                if find(&kfg, "running").is_some() {
                    last_reason = "the change was still being applied".into();
                } else if let Some(v) = find(&kfg, "verify").filter(|v| *v != "0") {
                    let said: Vec<&str> =
                        kfg.iter().filter_map(|l| l.strip_prefix("say ")).collect();
                    last_reason = format!(
                        "`{}` failed (exit {v}): {}",
                        settings.verify.unwrap_or_default(),
                        said.join(" / ")
                    );
                } else if find(&kfg, "confirmed").is_some() {
                    step(
                        &mut steps,
                        format!("confirmed over a new connection to {}", spec.address),
                    );
                    // Step 5: disarm, on the connection that just proved itself.
                    match c.run_script(&disarm_script(&dir, &token), become_) {
                        Ok(out) => {
                            let (kfg, proto) = split(&out.stdout);
                            if find(&kfg, "disarmed").is_some() {
                                step(&mut steps, "rollback disarmed".into());
                                let report = report.or_else(|| {
                                    proto.and_then(|p| remote::parse(&apply_script, &p).ok())
                                });
                                let rc = find(&kfg, "applied").unwrap_or_default().to_string();
                                state.conn = Some(c);
                                if let Some(a) = settings.confirm_address {
                                    state.address = Some(a.to_string());
                                }
                                return match report {
                                    Some(r) if rc == "0" && r.complete => Outcome {
                                        result: Guarded::Confirmed(r),
                                        steps,
                                    },
                                    other => Outcome {
                                        result: Guarded::Failed {
                                            report: other,
                                            msg: format!(
                                                "the change was applied and the host is reachable, but the apply reported exit {rc}"
                                            ),
                                        },
                                        steps,
                                    },
                                };
                            }
                            last_reason = "the rollback fired during the confirmation".into();
                            break;
                        }
                        Err(e) => last_reason = format!("disarming failed: {e}"),
                    }
                }
            }
        }
        std::thread::sleep(
            Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    step(&mut steps, format!("not confirmed: {last_reason}"));

    // Not confirmed: the host rolls back by itself; wait for it, then check from the old address.
    state.conn = None;
    spec.address = old_address.clone();
    let back_by = armed_at + Duration::from_secs(timeout) + Duration::from_secs(timeout.max(60));
    let until_fire =
        (armed_at + Duration::from_secs(timeout)).saturating_duration_since(Instant::now());
    std::thread::sleep(until_fire);
    let mut why_lost = String::from("no answer");
    while Instant::now() < back_by {
        let attempt = connection::connect(&state.host.name, &spec, &opts.become_, &connect)
            .and_then(|mut c| {
                c.run_script(&check_rolled_back_script(&dir, &paths), become_)
                    .map(|o| (c, o))
            });
        match attempt {
            Ok((c, out)) => {
                let (kfg, _) = split(&out.stdout);
                if find(&kfg, "pending").is_some() {
                    why_lost = "the rollback had not finished".into();
                } else if let Some(st) = find(&kfg, "rolledback") {
                    let differs: Vec<&str> = kfg
                        .iter()
                        .filter_map(|l| l.strip_prefix("differs "))
                        .collect();
                    step(
                        &mut steps,
                        format!("rolled back ({st}); the host answers at {old_address} again"),
                    );
                    state.conn = Some(c);
                    let mut msg = format!("network change not confirmed ({last_reason}): rolled back; the host answers at {old_address} again");
                    if st != "ok" {
                        msg.push_str(&format!("; the rollback reported `{st}`"));
                    }
                    if !differs.is_empty() {
                        msg.push_str(&format!("; NOT restored exactly: {}", differs.join(", ")));
                    }
                    return Outcome {
                        result: Guarded::RolledBack(msg),
                        steps,
                    };
                } else {
                    why_lost = "the host answered but the saved state is gone".into();
                }
            }
            Err(e) => why_lost = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Outcome {
        result: Guarded::Lost(format!(
            "network change not confirmed ({last_reason}) and the host did not answer at {old_address} after the rollback: {why_lost}"
        )),
        steps,
    }
}

fn roll_back_now(
    state: &mut HostState,
    dir: &str,
    token: &str,
    report: Option<Report>,
    mut steps: Vec<String>,
    started: Instant,
) -> Outcome {
    let r = state
        .conn
        .as_mut()
        .map(|c| c.run_script(&rollback_now_script(dir, token), true));
    let how = match r {
        Some(Ok(out)) => {
            let (kfg, _) = split(&out.stdout);
            find(&kfg, "rolledback").unwrap_or("unknown").to_string()
        }
        Some(Err(e)) => format!("could not run: {e}"),
        None => "no connection".into(),
    };
    steps.push(format!(
        "the change failed; rolled back at once ({how}) [{:.1}s]",
        started.elapsed().as_secs_f64()
    ));
    Outcome {
        result: Guarded::Failed {
            report,
            msg: format!("the network change failed and was rolled back ({how})"),
        },
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_script_restores_files_deletes_new_devices_and_reapplies() {
        let g = NetworkGuard {
            reapply: "netplan apply".into(),
            creates_devices: vec!["br0".into()],
            also_saves: vec![],
        };
        let s = rollback_script(
            "/var/lib/kvmforge/guard/x",
            &["/etc/netplan/60-br0.yaml".into()],
            &g,
        );
        assert!(s.contains("mkdir \"$d/lock\" 2>/dev/null || exit 0"), "{s}");
        assert!(
            s.contains("mv -f /etc/netplan/60-br0.yaml.kf-rollback /etc/netplan/60-br0.yaml"),
            "{s}"
        );
        assert!(s.contains("else rm -rf /etc/netplan/60-br0.yaml"), "{s}");
        assert!(s.contains("ip link delete dev br0"), "{s}");
        assert!(s.contains("( netplan apply )"), "{s}");
    }

    /// The whole cycle on this machine, in a scratch directory standing in for /etc: save, arm
    /// (a detached sleep: no systemd here), apply, then the rollback restores the old bytes.
    #[test]
    fn scripts_save_apply_and_restore_for_real() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let kept = etc.join("kept.yaml");
        let new = etc.join("new.yaml");
        std::fs::write(&kept, "old\n").unwrap();
        let (kept_s, new_s) = (kept.display().to_string(), new.display().to_string());
        let guard = NetworkGuard {
            reapply: format!("echo reapplied > {}/reapplied", d.path().display()),
            creates_devices: vec![],
            also_saves: vec![],
        };
        let actions = vec![
            Action::write(&kept_s, "new\n", Default::default(), false),
            Action::write(&new_s, "created\n", Default::default(), false),
        ];
        let paths = guard.saved_paths(&actions);
        let gdir = d.path().join("guard").display().to_string();
        let apply = Script {
            actions: actions.clone(),
            probes: vec![],
            facts: crate::facts::Wanted::NONE,
            become_: false,
        };
        if nix::unistd::getuid().as_raw() != 0 {
            eprintln!("SKIPPED: the guard scripts need root (they check for it)");
            return;
        }
        let arm = arm_script(&gdir, "t", &paths, &guard, &apply, 3600, 10)
            .replace("[ -d /run/systemd/system ]", "false");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&arm)
            .output()
            .unwrap();
        let (kfg, proto) = split(&out.stdout);
        assert_eq!(
            find(&kfg, "armed"),
            Some("sleeper"),
            "{kfg:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(find(&kfg, "applied"), Some("0"), "{kfg:?}");
        assert!(remote::parse(&apply, &proto.unwrap()).unwrap().complete);
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "new\n");
        // The controller decides the change failed: roll back now.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(rollback_now_script(&gdir, "t"))
            .output()
            .unwrap();
        let (kfg, _) = split(&out.stdout);
        assert_eq!(find(&kfg, "rolledback"), Some("ok"), "{kfg:?}");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "old\n");
        assert!(!new.exists());
        assert!(d.path().join("reapplied").exists());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(check_rolled_back_script(&gdir, &paths))
            .output()
            .unwrap();
        let (kfg, _) = split(&out.stdout);
        assert!(
            find(&kfg, "checked").is_some() && !kfg.iter().any(|l| l.starts_with("differs")),
            "{kfg:?}"
        );
        // A second rollback (the timer firing late) does nothing: the lock is taken.
        assert!(!std::path::Path::new(&gdir).exists());
    }
}
