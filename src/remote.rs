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
  ( eval "$2" ) >"$kf_sd/o" 2>"$kf_sd/e" </dev/null 9>&-
  kf_rc=$?
  printf 'KF %s %s %s =' "$1" "$3" "$kf_rc"; [ ! -s "$kf_sd/o" ] || kf_b64 < "$kf_sd/o"
  printf ' ='; [ ! -s "$kf_sd/e" ] || kf_b64 < "$kf_sd/e"; echo
}
kf_rd() {
  kf_c=; kf_l=
  while IFS= read -r kf_l; do kf_c="$kf_c$kf_l
"; kf_l=; done < "$1"
  kf_c="$kf_c$kf_l"; printf '%s\0%s' "${#kf_c}" "$kf_c"
}
kf_probe() {
  [ -n "$kf_sd" ] || kf_sd=$(mktemp -d) || { kf_sd=; printf 'KF %s error =%s\n' "$1" "$(printf 'mktemp failed' | kf_b64)"; return; }
  ( eval "$2" ) >"$kf_sd/$1.o" 2>"$kf_sd/$1.e" </dev/null 9>&-
  printf 'KF %s cmd %s @\n' "$1" "$?"
}
kf_fail() { printf 'KF %s fail %s =%s\n' "$1" "$2" "$(printf %s "$3" | kf_b64)"; exit 0; }
kf_try() { kf_i=$1; shift; kf_m=$("$@" 2>&1) || kf_fail "$kf_i" 1 "$kf_m"; }
kf_stry() { [ -z "$kf_ei" ] || return 0; kf_i=$1; shift; kf_m=$("$@" 2>&1) || { kf_ei=$kf_i; kf_em=$kf_m; }; }
kf_tmp=; kf_stg=; kf_lkd=; kf_ei=; kf_em=; kf_sd=
kf_clean() {
  [ -n "$kf_tmp" ] && rm -f -- "$kf_tmp"
  for kf_v in $kf_stg; do eval "[ -z \"\$$kf_v\" ] || rm -f -- \"\$$kf_v\""; done
  [ -n "$kf_lkd" ] && rm -rf -- "$kf_lkd"
  [ -n "$kf_sd" ] && rm -rf -- "$kf_sd"
}
trap 'kf_clean' EXIT
trap 'kf_clean; trap - EXIT; exit 1' HUP INT TERM PIPE
"#;

/// One invocation's work: actions first (in order, stopping at the first failure), then probes,
/// then facts.
#[derive(Debug, Default)]
pub struct Script {
    pub actions: Vec<Action>,
    pub probes: Vec<Probe>,
    /// The facts to gather (none: no facts record).
    pub facts: facts::Wanted,
    /// Run as root (through sudo when the login user is not root).
    pub become_: bool,
}

/// The host-wide lock a changing script holds, so that two runs against one host (a cron drift
/// check and a person) never interleave their changes.
///
/// `flock` on `path` (under `/run`, so a reboot releases it) where flock exists; elsewhere a
/// directory `PATH.d` made with `mkdir` and removed when the script ends, taken over when the
/// process that made it is gone. Where `path`'s directory is not writable (a login without
/// `become`) the lock is per user, in `$TMPDIR` or `/tmp`. A script that finds the lock taken
/// prints `KF wait =HOLDER` at once (the transports show it while waiting), waits up to `wait`
/// seconds, and then gives up with `KF lock =HOLDER` before changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLock {
    pub path: String,
    /// Seconds to wait for another run to finish.
    pub wait: u64,
    /// Who holds it, as shown to a run that waits: e.g. `pid 42 on ctl1, since ...`.
    pub holder: String,
}

impl HostLock {
    /// A lock file `kf.lock` in `dir`, for tests.
    #[cfg(test)]
    pub fn in_dir(dir: &std::path::Path, wait: u64, holder: &str) -> HostLock {
        HostLock {
            path: dir.join("kf.lock").to_str().unwrap().into(),
            wait,
            holder: holder.into(),
        }
    }

    /// The default lock file.
    pub const PATH: &'static str = "/run/kvmforge.lock";

    /// The lock for this process, waiting up to `wait` seconds.
    pub fn for_this_run(wait: u64) -> HostLock {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        HostLock {
            path: Self::PATH.into(),
            wait,
            holder: format!("pid {} on {host}, since {}", std::process::id(), utc_now()),
        }
    }
}

/// The current time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_text(secs)
}

fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `kf_lock PATH WAIT HOLDER`: see [`HostLock`]. Commands run by the script close fd 9, so a
/// daemon one of them starts cannot keep the lock. A lock held by this same run (its HOLDER
/// text, which names the controller's process and start time) is not waited for: two inventory
/// names for one machine must not wait for each other until `--lock-timeout`.
const LOCK_FN: &str = r#"kf_lock() {
  kf_lk=$1
  [ -w "${kf_lk%/*}" ] || kf_lk="${TMPDIR:-/tmp}/kvmforge-$(id -u).lock"
  if command -v flock >/dev/null 2>&1 && { exec 9>>"$kf_lk"; } 2>/dev/null; then
    if ! flock -n 9; then
      # Held by this very run (two inventory names for one machine): no waiting for itself.
      [ "$(cat -- "$kf_lk" 2>/dev/null)" = "$3" ] && { exec 9>&-; return 0; }
      printf 'KF wait =%s
' "$(kf_b64 < "$kf_lk")"
      flock -w "$2" 9 || { printf 'KF lock =%s
' "$(kf_b64 < "$kf_lk")"; exit 0; }
    fi
    { printf '%s' "$3" > "$kf_lk"; } 2>/dev/null
    return 0
  fi
  kf_n=0
  until mkdir -- "$kf_lk.d" 2>/dev/null; do
    kf_o=$(cat -- "$kf_lk.d/owner" 2>/dev/null)
    if [ -n "$kf_o" ] && ! kill -0 "${kf_o%% *}" 2>/dev/null; then rm -rf -- "$kf_lk.d"; continue; fi
    [ "${kf_o#* }" = "$3" ] && return 0
    [ $kf_n -eq 0 ] && printf 'KF wait =%s
' "$(printf %s "${kf_o#* }" | kf_b64)"
    [ $kf_n -ge "$2" ] && { printf 'KF lock =%s
' "$(printf %s "${kf_o#* }" | kf_b64)"; exit 0; }
    kf_n=$((kf_n + 1)); sleep 1
  done
  kf_lkd="$kf_lk.d"
  printf '%s %s' $$ "$3" > "$kf_lkd/owner"
}
"#;

/// `kf_keep DIR SECONDS GRACE`, in a run lock's holder: keep the lock held by a process detached
/// from the session while the guarded network change saved in DIR is unsettled, so that a
/// change that cuts the session does not release the lock before it is confirmed or rolled
/// back (see [`RunLock`]). The keeper lets go when DIR is removed (the change was confirmed and
/// disarmed), when DIR holds `rolled-back`, when DIR was never armed within GRACE seconds (the
/// change never started), or after SECONDS at the latest. With a `mkdir` lock it also waits for
/// the holder itself, and removes the lock directory when it lets go.
const KEEP_FN: &str = r#"kf_keep() {
  ( umask 077; mkdir -p -- "$1" ) 2>/dev/null
  kf_now=$(date +%s)
  setsid sh -c 'd=$1; u=$(($3 + $2)); g=$(($3 + $4)); h=$5; l=$6
    while { [ -n "$h" ] && kill -0 "$h" 2>/dev/null; } || { [ -d "$d" ] && [ ! -e "$d/rolled-back" ] && kf_t=$(date +%s) && [ "$kf_t" -lt "$u" ] && { [ -e "$d/armed" ] || [ "$kf_t" -lt "$g" ]; }; }; do sleep 1; done
    [ -z "$l" ] || rm -rf -- "$l"' kvmforge-lock-keeper "$1" "$2" "$kf_now" "$3" "${kf_lkd:+$$}" "$kf_lkd" </dev/null >/dev/null 2>&1 &
  if [ -n "$kf_lkd" ]; then
    kf_o=$(cat -- "$kf_lkd/owner" 2>/dev/null)
    printf '%s %s' $! "${kf_o#* }" > "$kf_lkd/owner"
    kf_lkd=
  fi
  printf 'KF kept\n'
}
"#;

impl HostLock {
    /// Append the call that takes this lock (after [`LOCK_FN`]).
    fn render_take(&self, s: &mut String) {
        writeln!(
            s,
            "kf_lock {} {} {}",
            shell_quote(&self.path),
            self.wait,
            shell_quote(&self.holder)
        )
        .unwrap();
    }
}

/// The lock one run holds on a host from its first change to its end.
///
/// Observing takes no lock, so a run with nothing to change stays one invocation per host. When
/// a host's plan first has something to change (never in check mode), the executor starts a
/// *holder*: a shell on a channel of its own over the host's connection that takes the
/// [`HostLock`] (`flock -w WAIT` on fd 9; a `mkdir` lock where there is no flock), waiting and
/// giving up exactly as a changing script does, then observes again under the lock (the
/// executor plans again from that observation, never from the one made before the lock) and
/// keeps reading its standard input. The run's own scripts then take no lock of their own. When
/// the run ends, or the controller dies, or the connection drops, the channel closes, the shell
/// exits and the lock is free. A reboot empties `/run` anyway; the new connection takes the lock
/// again at its next change.
///
/// A guarded network change may cut the very connection the holder lives on, and is confirmed
/// over a new one. So before it is applied the holder starts a *keeper* (`kf_keep`): a process
/// detached from the session that inherits the lock and holds it until the change is settled,
/// that is confirmed and disarmed (its guard directory removed) or rolled back (`rolled-back`
/// written), with a bound of twice the rollback timeout and a minute. The lock is therefore
/// never free while a change is unconfirmed, even if the controller dies; after a confirmation
/// over a new connection the run takes the lock again, with a fresh observation, at its next
/// change.
pub struct RunLock;

impl RunLock {
    /// Seconds a keeper holds the lock at most for a guarded change with rollback `timeout`.
    pub fn keep_for(timeout: u64) -> u64 {
        timeout.saturating_mul(2).saturating_add(60)
    }

    /// The command a holder runs to start a keeper for the guard directory `dir`.
    pub fn keep_command(dir: &str, seconds: u64, grace: u64) -> String {
        format!(
            "{{ kf_keep {} {seconds} {grace}; }} </dev/null\n",
            shell_quote(dir)
        )
    }
}

impl Script {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.probes.is_empty() && self.facts.is_empty()
    }

    /// The shell text to send.
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// The shell text to send; a script that changes something first takes `lock` (see
    /// [`HostLock`]). A script that only observes never waits for it.
    pub fn render_with(&self, lock: Option<&HostLock>) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("{\n");
        s.push_str(&PRELUDE.replace("MAXCONTENT", &MAX_CONTENT.to_string()));
        if let (Some(lock), false) = (lock, self.actions.is_empty()) {
            s.push_str(LOCK_FN);
            lock.render_take(&mut s);
        }
        self.render_body(&mut s);
        s.push_str("echo 'KF end'\n} </dev/null\n");
        s
    }

    /// The shell text of a run lock's holder (see [`RunLock`]): take `lock`, say `KF held`,
    /// run this script under it (it should only observe), say `KF end`, and then keep the lock
    /// for as long as the shell reads its standard input (more commands, such as `kf_keep`).
    pub fn render_holder(&self, lock: &HostLock) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("{\n");
        s.push_str(&PRELUDE.replace("MAXCONTENT", &MAX_CONTENT.to_string()));
        s.push_str(LOCK_FN);
        s.push_str(KEEP_FN);
        lock.render_take(&mut s);
        s.push_str("printf 'KF held\\n'\n");
        self.render_body(&mut s);
        s.push_str("echo 'KF end'\n} </dev/null\n");
        s
    }

    /// Actions, probes and facts.
    fn render_body(&self, s: &mut String) {
        // Consecutive file writes are staged together, made durable with one `sync`, and only
        // then renamed into place (see `render_writes`).
        let mut i = 0;
        while i < self.actions.len() {
            let n = self.actions[i..]
                .iter()
                .take_while(|a| matches!(a, Action::WriteFile { .. }))
                .count();
            if n > 0 {
                let ids: Vec<(String, &Action)> = (i..i + n)
                    .map(|k| (format!("a{k}"), &self.actions[k]))
                    .collect();
                render_writes(s, &ids);
                i += n;
            } else {
                render_action(s, &format!("a{i}"), &self.actions[i]);
                i += 1;
            }
        }
        render_file_batch(s, &self.probes);
        for (i, p) in self.probes.iter().enumerate() {
            match p {
                Probe::File(path) if !batched(path) => {
                    writeln!(s, "kf_file p{i} {}", shell_quote(path)).unwrap()
                }
                Probe::File(_) => {}
                Probe::Command(cmd) => writeln!(s, "kf_probe p{i} {}", shell_quote(cmd)).unwrap(),
            }
        }
        render_command_outputs(s, &self.probes);
        if !self.facts.is_empty() {
            s.push_str(&self.facts.script());
        }
    }
}

/// The outputs of every command probe in one record, `KF out =STREAM`, with one `find` (their
/// sizes), one `cat` and one `base64`, instead of a `base64` per output (see
/// [`parse_command_outputs`]).
fn render_command_outputs(s: &mut String, probes: &[Probe]) {
    let files: Vec<String> = probes
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p, Probe::Command(_)))
        .flat_map(|(i, _)| [format!("\"$kf_sd/p{i}.o\""), format!("\"$kf_sd/p{i}.e\"")])
        .collect();
    if files.is_empty() {
        return;
    }
    let files = files.join(" ");
    writeln!(
        s,
        "if [ -n \"$kf_sd\" ]; then printf 'KF out ='; {{ find {files} -maxdepth 0 -printf '%f\\0%s\\0' 2>/dev/null; \
         printf 'KF-DATA\\0\\0'; cat -- {files} 2>/dev/null; }} | kf_b64; echo; fi"
    )
    .unwrap();
}

/// Absolute paths are observed together (see [`render_file_batch`]); others one by one.
fn batched(path: &str) -> bool {
    path.starts_with('/')
}

/// Observe many files with a handful of processes instead of two per file: shell builtins sort
/// the paths, one `find` prints the metadata of all of them, one `cat` streams the contents of
/// the non-empty readable regular files (split on the controller by their sizes). Readable
/// regular files that report size 0 (`/proc/sys/...`, or really empty) are read by the shell's
/// own `read` after that, each as `LENGTH\0CONTENT` (no process; their text has no NUL).
/// Symlinks are observed one by one with `kf_file`. Prints `KF fs MARKS =STREAM`, one mark per
/// batched path: `1` in the stream, `r` read by the shell, `0` metadata only, `s` observed alone.
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
            "kf_r{i}=; if [ -L {q} ]; then kf_file p{i} {q}; kf_x=${{kf_x}}s; \
             elif [ -f {q} ] && [ -r {q} ] && [ -s {q} ]; then set -- \"$@\" {q}; kf_x=${{kf_x}}1; \
             elif [ -f {q} ] && [ -r {q} ]; then kf_r{i}=1; kf_x=${{kf_x}}r; \
             elif [ -f {q} ]; then kf_file p{i} {q}; kf_x=${{kf_x}}s; else kf_x=${{kf_x}}0; fi"
        )
        .unwrap();
    }
    let all: Vec<String> = paths.iter().map(|(_, p)| shell_quote(p)).collect();
    let read: String = paths
        .iter()
        .map(|(i, p)| format!(" [ -z \"$kf_r{i}\" ] || kf_rd {};", shell_quote(p)))
        .collect();
    // Metadata records, a sentinel record (its "path" is not absolute, so no real record can
    // look like it), then the contents: one stream, one base64 process.
    writeln!(
        s,
        "printf 'KF fs %s =' \"$kf_x\"; {{ find {} -maxdepth 0 -printf '%p\\0%y\\0%m\\0%u\\0%g\\0%s\\0' 2>/dev/null; \
         printf 'KF-DATA\\0\\0\\0\\0\\0\\0'; if [ $# -gt 0 ]; then cat -- \"$@\" 2>/dev/null; fi;{read} }} | kf_b64; echo",
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
    let mut read_by_shell: Vec<(usize, FileState)> = Vec::new();
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
        if mark == 'r' && kind == FileKind::File {
            read_by_shell.push((i, st));
        } else if mark == '1' && kind == FileKind::File {
            // A size no stream can hold (a garbled reply) must not overflow: it makes the
            // contents inconsistent below.
            let end = offset.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
            if size <= MAX_CONTENT {
                st.content = data.get(offset..end).map(<[u8]>::to_vec);
            }
            offset = end;
            streamed.push((i, st));
        } else {
            out[i] = Some(Observation::File(st));
        }
    }
    // Then the files the shell read: `LENGTH\0CONTENT` each.
    let mut tail = data.get(offset..).unwrap_or_default();
    let mut all_read = true;
    for (_, st) in read_by_shell.iter_mut() {
        let nul = tail.iter().position(|b| *b == 0);
        let len = nul.and_then(|n| std::str::from_utf8(&tail[..n]).ok()?.parse::<usize>().ok());
        let (Some(nul), Some(len)) = (nul, len) else {
            all_read = false;
            break;
        };
        let Some(content) = tail.get(nul + 1..nul + 1 + len) else {
            all_read = false;
            break;
        };
        st.size = len as u64;
        st.content = Some(content.to_vec());
        tail = &tail[nul + 1 + len..];
    }
    streamed.extend(read_by_shell);
    // A file that changed size between `find` and `cat` shifts every later one: then none of
    // the streamed contents can be trusted.
    let consistent = all_read
        && tail.is_empty()
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
    render_attrs_with(s, "kf_try", id, path_var, attrs)
}

/// Set attributes with `try_fn`: `kf_try` fails the action at once, `kf_stry` records the
/// failure of a staged write.
fn render_attrs_with(s: &mut String, try_fn: &str, id: &str, path_var: &str, attrs: &Attrs) {
    if let Some(m) = attrs.mode {
        writeln!(s, "{try_fn} {id} chmod {:04o} -- \"{path_var}\"", m).unwrap();
    }
    match (&attrs.owner, &attrs.group) {
        (Some(o), Some(g)) => writeln!(
            s,
            "{try_fn} {id} chown -h -- {} \"{path_var}\"",
            shell_quote(&format!("{o}:{g}"))
        ),
        (Some(o), None) => writeln!(
            s,
            "{try_fn} {id} chown -h -- {} \"{path_var}\"",
            shell_quote(o)
        ),
        (None, Some(g)) => writeln!(
            s,
            "{try_fn} {id} chgrp -h -- {} \"{path_var}\"",
            shell_quote(g)
        ),
        (None, None) => Ok(()),
    }
    .unwrap();
}

/// Consecutive file writes, made durable before they replace anything:
///
/// 1. stage: each new content goes to a fresh temporary file next to its target (mode, owner,
///    backup and `validate` check done on it); the first failure is recorded and stages nothing
///    more;
/// 2. one `sync -- TEMPS` puts every staged content on disk (a plain `sync` where `sync` takes
///    no files);
/// 3. each staged file is renamed over its target, then one `sync` of their directories makes
///    the renames durable;
/// 4. a recorded failure is reported on its action: the writes before it are done, it and what
///    follows are not.
///
/// A power cut at any point leaves every target with its old or its new content, never an
/// empty or partial file; a script that dies leaves no temporary file (they are removed on
/// exit and on HUP, INT, TERM and PIPE).
fn render_writes(s: &mut String, writes: &[(String, &Action)]) {
    s.push_str("kf_ei=; kf_em=; kf_dirs=\n");
    for (id, action) in writes {
        let Action::WriteFile {
            path,
            content,
            attrs,
            backup,
            validate,
        } = action
        else {
            unreachable!("render_writes takes file writes only")
        };
        let p = shell_quote(path);
        let var = format!("kf_t_{id}");
        writeln!(s, "{var}=; kf_stg=\"$kf_stg {var}\"").unwrap();
        writeln!(s, "if [ -z \"$kf_ei\" ]; then").unwrap();
        writeln!(s, "kf_p={p}; kf_d=${{kf_p%/*}}; [ -n \"$kf_d\" ] || kf_d=/").unwrap();
        writeln!(s, "[ -d \"$kf_d\" ] || kf_stry {id} mkdir -p -- \"$kf_d\"").unwrap();
        writeln!(s, "fi").unwrap();
        writeln!(s, "if [ -z \"$kf_ei\" ]; then").unwrap();
        // A fresh name next to the target; noclobber refuses to follow anything already there.
        writeln!(s, "kf_tmp=\"$kf_d/.kvmforge.$$.{id}\"; set -C").unwrap();
        match std::str::from_utf8(content) {
            Ok(text) if !text.contains('\0') => {
                writeln!(
                    s,
                    "kf_m=$({{ printf '%s' {} > \"$kf_tmp\"; }} 2>&1)",
                    shell_quote(text)
                )
                .unwrap();
            }
            _ => {
                s.push_str("kf_m=$(base64 -d 2>&1 > \"$kf_tmp\" <<'KF_EOF_'\n");
                let encoded = B64.encode(content);
                for chunk in encoded.as_bytes().chunks(76) {
                    s.push_str(std::str::from_utf8(chunk).unwrap());
                    s.push('\n');
                }
                s.push_str("KF_EOF_\n)\n");
            }
        }
        // The shell's own words for a failed write are "I/O error": writing as many bytes with
        // `cat` again tells why (no space left, quota, read-only file system).
        writeln!(
            s,
            "kf_rc=$?; set +C\n\
             if [ $kf_rc -ne 0 ]; then\n\
             case $kf_m in *'cannot create'*|*xist*) ;; *) kf_w=$(head -c {} /dev/zero 2>/dev/null | {{ cat > \"$kf_tmp\"; }} 2>&1); [ -z \"$kf_w\" ] || kf_m=$kf_w; rm -f -- \"$kf_tmp\" ;; esac\n\
             kf_tmp=; kf_ei={id}; kf_em=\"cannot write a temporary file in $kf_d: ${{kf_m##*: }}\"\n\
             else {var}=$kf_tmp; kf_tmp=; fi",
            content.len().max(1)
        )
        .unwrap();
        writeln!(s, "fi").unwrap();
        writeln!(s, "if [ -z \"$kf_ei\" ]; then").unwrap();
        // An existing file keeps its mode and owner unless they are given; a new one is 0644
        // (umask 022) and owned by whoever runs the script.
        let keep_mode = attrs.mode.is_none();
        let keep_owner = attrs.owner.is_none() || attrs.group.is_none();
        if keep_mode || keep_owner {
            writeln!(s, "if [ -e \"$kf_p\" ]; then").unwrap();
            if keep_mode {
                writeln!(s, "kf_stry {id} chmod --reference=\"$kf_p\" \"${var}\"").unwrap();
            }
            if keep_owner {
                writeln!(s, "kf_stry {id} chown --reference=\"$kf_p\" \"${var}\"").unwrap();
            }
            writeln!(s, "fi").unwrap();
        }
        if *backup {
            writeln!(
                s,
                "if [ -e \"$kf_p\" ]; then kf_stry {id} cp -p -- \"$kf_p\" \"$kf_p.$(date +%Y%m%dT%H%M%S)~\"; fi"
            )
            .unwrap();
        }
        render_attrs_with(s, "kf_stry", id, &format!("${var}"), attrs);
        if let Some(check) = validate {
            // `%s` is the staged file; the check runs in its own shell with the path as $1.
            let check = check.replace("%s", "\"$1\"");
            writeln!(
                s,
                "[ -n \"$kf_ei\" ] || kf_m=$(sh -c {} kf \"${var}\" 2>&1 9>&-) || {{ kf_ei={id}; kf_em=\"the new content of $kf_p failed its check ($kf_p is unchanged): $kf_m\"; }}",
                shell_quote(&check)
            )
            .unwrap();
        }
        // A failed stage is not renamed: its temporary file goes now.
        writeln!(
            s,
            "if [ \"$kf_ei\" = {id} ]; then rm -f -- \"${var}\"; {var}=; else kf_dirs=\"$kf_dirs {id}\"; fi"
        )
        .unwrap();
        writeln!(s, "fi").unwrap();
    }
    // Durable contents, then renames, then durable directories.
    let vars: Vec<String> = writes
        .iter()
        .map(|(id, _)| format!("${{kf_t_{id}:+\"$kf_t_{id}\"}}"))
        .collect();
    writeln!(
        s,
        "if [ -n \"$kf_dirs\" ]; then\n\
         kf_m=$(sync -- {} 2>&1) || case $kf_m in *operand*|*sage*) sync ;; *) kf_ei=${{kf_dirs# }}; kf_ei=${{kf_ei%% *}}; kf_em=\"cannot write to disk: $kf_m\"; kf_dirs= ;; esac\n\
         fi",
        vars.join(" ")
    )
    .unwrap();
    let mut dirs = Vec::new();
    for (id, action) in writes {
        let Action::WriteFile { path, .. } = action else {
            continue;
        };
        let var = format!("kf_t_{id}");
        writeln!(
            s,
            "case \"$kf_dirs \" in *' {id} '*) kf_try {id} mv -f -- \"${var}\" {}; {var}=; printf 'KF {id} ok\\n' ;; esac",
            shell_quote(path)
        )
        .unwrap();
        let dir = match path.rsplit_once('/') {
            Some(("", _)) => "/".to_string(),
            Some((d, _)) => d.to_string(),
            None => ".".to_string(),
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let dirs: Vec<String> = dirs.iter().map(|d| shell_quote(d)).collect();
    writeln!(
        s,
        "[ -z \"$kf_dirs\" ] || sync -- {} 2>/dev/null\n\
         [ -z \"$kf_ei\" ] || kf_fail \"$kf_ei\" 1 \"$kf_em\"",
        dirs.join(" ")
    )
    .unwrap();
}

fn render_action(s: &mut String, id: &str, action: &Action) {
    match action {
        Action::WriteFile { .. } => render_writes(s, &[(id.to_string(), action)]),
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
    /// Another run held the host lock for longer than the script would wait: who held it.
    /// Nothing was changed.
    pub lock_busy: Option<String>,
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

/// Fill in the command probes that reported only their exit code (`KF pI cmd RC @`) from the
/// `KF out` stream: `NAME\0SIZE\0` records (`pI.o`, `pI.e`) up to a `KF-DATA\0\0` sentinel,
/// then the files' contents in the records' order.
fn parse_command_outputs(
    stream: &[u8],
    pending: &mut Vec<(usize, i32)>,
    out: &mut [Option<Observation>],
) -> Result<(), ProtocolError> {
    let bad = |m: &str| ProtocolError::Malformed(format!("command outputs: {m}"));
    let mut sizes: Vec<(&[u8], usize)> = Vec::new();
    let mut pos = 0;
    let data = loop {
        let mut field = || -> Result<&[u8], ProtocolError> {
            let end = stream[pos..]
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| bad("truncated"))?;
            let f = &stream[pos..pos + end];
            pos += end + 1;
            Ok(f)
        };
        let (name, size) = (field()?, field()?);
        if name == b"KF-DATA" {
            break &stream[pos..];
        }
        let size = std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("size"))?;
        sizes.push((name, size));
    };
    let mut contents = std::collections::HashMap::new();
    let mut offset = 0usize;
    for (name, size) in sizes {
        let end = offset.saturating_add(size);
        let bytes = data.get(offset..end).ok_or_else(|| bad("short stream"))?;
        contents.insert(name, String::from_utf8_lossy(bytes).into_owned());
        offset = end;
    }
    if offset != data.len() {
        return Err(bad("stream longer than its records"));
    }
    for (i, rc) in pending.drain(..) {
        let mut take = |ext: &str| {
            contents
                .remove(format!("p{i}.{ext}").as_bytes())
                .ok_or_else(|| bad(&format!("nothing for p{i}.{ext}")))
        };
        let (stdout, stderr) = (take("o")?, take("e")?);
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(Observation::Command(CommandOutput { rc, stdout, stderr }));
        }
    }
    Ok(())
}

/// Parse what a [`Script`] printed.
pub fn parse(script: &Script, stdout: &[u8]) -> Result<Report, ProtocolError> {
    let text = String::from_utf8_lossy(stdout);
    let mut report = Report {
        actions: vec![ActionOutcome::NotRun; script.actions.len()],
        observations: Vec::with_capacity(script.probes.len()),
        facts: None,
        complete: false,
        lock_busy: None,
    };
    let mut observations: Vec<Option<Observation>> = vec![None; script.probes.len()];
    let mut fact_lines = Vec::new();
    let mut pending: Vec<(usize, i32)> = Vec::new();
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
        if id == "wait" || id == "held" || id == "kept" {
            continue; // shown by the transport while the script waited; a run lock's holder
        }
        if id == "lock" {
            report.lock_busy = Some(decode_str(f.next())?);
            continue;
        }
        if id == "facts" {
            fact_lines = facts::pairs(&decode(f.next())?);
            continue;
        }
        if id == "out" {
            parse_command_outputs(&decode(f.next())?, &mut pending, &mut observations)?;
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
                // Its output follows in the `KF out` record.
                "cmd" if rest.ends_with(" @") => {
                    let rc = f.next().and_then(|r| r.parse().ok());
                    let rc = rc.ok_or_else(|| ProtocolError::Malformed("bad exit code".into()))?;
                    pending.push((i, rc));
                    continue;
                }
                "cmd" => Observation::Command(parse_command(f)?),
                "error" => Observation::Error(decode_str(f.next())?),
                k => parse_file(k, f)?,
            };
            *observations
                .get_mut(i)
                .ok_or_else(|| ProtocolError::Malformed(format!("unexpected {id}")))? = Some(obs);
        }
    }
    if !script.facts.is_empty() && report.complete {
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
                Probe::Command(format!(
                    "echo first; echo e1 >&2; readlink /proc/self/fd/3 3>&1 >> '{l}'"
                )),
                Probe::Command(format!(
                    "echo second; readlink /proc/self/fd/3 3>&1 >> '{l}'"
                )),
                Probe::Command("exit 4".into()),
            ],
            ..Default::default()
        };
        let r = run(&s);
        assert!(r.complete);
        assert_eq!(
            r.observations[0],
            Observation::Command(CommandOutput {
                rc: 0,
                stdout: "first\n".into(),
                stderr: "e1\n".into()
            })
        );
        assert_eq!(
            r.observations[1],
            Observation::Command(CommandOutput {
                rc: 0,
                stdout: "second\n".into(),
                stderr: "".into()
            })
        );
        assert_eq!(
            r.observations[2],
            Observation::Command(CommandOutput {
                rc: 4,
                stdout: "".into(),
                stderr: "".into()
            })
        );
        let outs = std::fs::read_to_string(&log).unwrap();
        let dirs: Vec<&std::path::Path> = outs
            .lines()
            .map(|l| std::path::Path::new(l).parent().unwrap())
            .collect();
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0], dirs[1], "one scratch directory for the script");
        assert!(dirs[0].is_absolute() && dirs[0] != std::path::Path::new("/"));
        assert!(!dirs[0].exists(), "removed when the script ends");
    }

    /// All command probes' outputs come back in one stream split by their sizes: outputs that
    /// are empty, without a final newline, with NULs, or large stay each with its probe; a probe
    /// whose output is missing from the stream is an error, never an empty output.
    #[test]
    fn command_outputs_come_back_in_one_stream() {
        let s = Script {
            probes: vec![
                Probe::Command("printf 'no newline'".into()),
                Probe::Command("true".into()),
                Probe::Command("printf 'a\\000b'; printf 'E' >&2; exit 2".into()),
                Probe::Command("seq 1 20000".into()),
                Probe::File("/nonexistent/kf".into()),
                Probe::Command("echo last".into()),
            ],
            ..Default::default()
        };
        let r = run(&s);
        assert!(r.complete);
        let out = |i: usize| match &r.observations[i] {
            Observation::Command(c) => c.clone(),
            o => panic!("{o:?}"),
        };
        assert_eq!(out(0).stdout, "no newline");
        assert_eq!(out(1), CommandOutput::ok(""));
        assert_eq!(
            (out(2).rc, out(2).stdout.as_str(), out(2).stderr.as_str()),
            (2, "a\0b", "E")
        );
        let seq: String = (1..=20000).map(|n| format!("{n}\n")).collect();
        assert_eq!(out(3).stdout, seq);
        assert_eq!(out(5).stdout, "last\n");
        // The stream without one of the records.
        let reply = "KF p0 cmd 0 @\nKF out =".to_string()
            + &B64.encode(b"p0.o\x005\0KF-DATA\0\0hello")
            + "\nKF end\n";
        let one = Script {
            probes: vec![Probe::Command("x".into())],
            ..Default::default()
        };
        assert!(parse(&one, reply.as_bytes()).is_err());
        // No `KF out` at all (the script was cut short): no answer, not an empty one.
        assert!(parse(&one, b"KF p0 cmd 0 @\n")
            .unwrap()
            .observations
            .is_empty());
    }

    /// The facts fragment, run by this machine's shell, says what the machine says.
    #[test]
    fn facts_are_gathered_with_builtins_and_agree_with_the_machine() {
        let r = run(&Script {
            facts: facts::Wanted::ALL,
            ..Default::default()
        });
        let f = r.facts.expect("facts");
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let sh = |c: &str| {
            let o = Command::new("sh").arg("-c").arg(c).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        assert_eq!(f.hostname, read("/proc/sys/kernel/hostname"));
        assert_eq!(f.kernel, sh("uname -r"));
        assert_eq!(f.arch, sh("uname -m"));
        assert_eq!(f.cpus.to_string(), sh("nproc"));
        assert_eq!(f.cmdline, read("/proc/cmdline"));
        assert!(!f.os_family.is_empty() && f.memory_mb > 0);
        let devices: Vec<String> = std::fs::read_dir("/sys/bus/pci/devices")
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("vendor").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(f.pci_devices.len(), devices.len());
        for d in &f.pci_devices {
            let base = format!("/sys/bus/pci/devices/{}", d.address);
            let link = |n: &str| {
                std::fs::read_link(format!("{base}/{n}"))
                    .ok()
                    .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .unwrap_or_default()
            };
            assert_eq!(d.driver, link("driver"), "{}", d.address);
            assert_eq!(d.iommu_group, link("iommu_group"), "{}", d.address);
            assert_eq!(format!("0x{}", d.vendor), read(&format!("{base}/vendor")));
        }
        let groups = std::fs::read_dir("/sys/kernel/iommu_groups").map_or(0, |d| d.count());
        assert_eq!(f.iommu_enabled, groups > 0);
        assert!(f.interfaces.contains_key("lo"));
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
                Probe::File("/proc/sys/kernel/hostname".into()),
                Probe::File("/proc/self/mountinfo".into()),
            ])
            .collect();
        let s = Script {
            probes,
            ..Default::default()
        };
        let r = run(&s);
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
            "size-0 /proc files are read by the shell"
        );
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(text(8).as_deref(), Some(hostname.as_str()));
        // A long many-line one, of the script's own shell.
        let mounts = text(9).unwrap();
        assert!(
            mounts.lines().count() > 3 && mounts.ends_with('\n'),
            "{mounts}"
        );
        assert!(s.render().contains("kf_rd /proc/sys/kernel/ostype"));
        assert_eq!(
            r.observations[6],
            Observation::Command(CommandOutput::ok("between\n"))
        );
        assert_eq!(r.observations[7], Observation::File(FileState::absent()));
    }

    /// A stream whose shell-read part does not add up (a file that changed while it was read)
    /// makes the files errors, not a malformed reply and not wrong contents.
    #[test]
    fn a_garbled_shell_read_part_is_an_error_per_file() {
        let probes = vec![Probe::File("/a".into()), Probe::File("/proc/x".into())];
        let rec = |p: &str, s: &str| format!("{p}\0f\0644\0root\0root\0{s}\0");
        for tail in ["7\0Linux\n", "x\0", "", "6\0Linux\nmore"] {
            let stream =
                rec("/a", "3") + &rec("/proc/x", "0") + "KF-DATA\0\0\0\0\0\0" + "abc" + tail;
            let mut out = vec![None, None];
            parse_file_batch(&probes, "m1r", stream.as_bytes(), &mut out).unwrap();
            assert!(
                out.iter().all(|o| matches!(o, Some(Observation::Error(_)))),
                "{tail:?}: {out:?}"
            );
        }
        let good = rec("/a", "3") + &rec("/proc/x", "0") + "KF-DATA\0\0\0\0\0\0abc6\0Linux\n";
        let mut out = vec![None, None];
        parse_file_batch(&probes, "m1r", good.as_bytes(), &mut out).unwrap();
        assert!(
            matches!(&out[1], Some(Observation::File(st)) if st.content.as_deref() == Some(&b"Linux\n"[..]))
        );
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

    /// Writes staged together: a failure in the middle of a batch leaves the writes before it
    /// done (and durable: synced before the rename), itself and the rest not, and no temporary
    /// file behind.
    #[test]
    fn a_failed_write_in_a_batch_keeps_the_ones_before_it_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        std::fs::write(p("b"), "old b\n").unwrap();
        std::fs::write(p("c"), "old c\n").unwrap();
        let s = Script {
            actions: vec![
                Action::write(&p("a"), "new a\n", Attrs::default(), false),
                Action::write(&p("b"), "new b\n", Attrs::default(), false)
                    .validated("grep -q never %s"),
                Action::write(&p("c"), "new c\n", Attrs::default(), false),
            ],
            ..Default::default()
        };
        let text = s.render();
        assert_eq!(text.matches("sync -- ").count(), 2, "{text}");
        let r = run(&s);
        assert_eq!(r.actions[0], ActionOutcome::Done);
        assert!(
            matches!(&r.actions[1], ActionOutcome::Failed(m) if m.contains("failed its check")),
            "{:?}",
            r.actions
        );
        assert_eq!(r.actions[2], ActionOutcome::NotRun);
        assert_eq!(std::fs::read_to_string(p("a")).unwrap(), "new a\n");
        assert_eq!(std::fs::read_to_string(p("b")).unwrap(), "old b\n");
        assert_eq!(std::fs::read_to_string(p("c")).unwrap(), "old c\n");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
    }

    /// A directory that refuses new files: the write fails with the system's reason, the old
    /// file stays, nothing is left behind.
    #[test]
    fn a_write_into_an_unwritable_directory_fails_with_the_reason() {
        if nix::unistd::geteuid().is_root() {
            // root writes anywhere; the lab test mounts a read-only file system instead
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f").to_str().unwrap().to_string();
        std::fs::write(&f, "old\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let r = run(&Script {
            actions: vec![Action::write(&f, "new\n", Attrs::default(), false)],
            ..Default::default()
        });
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            matches!(&r.actions[0], ActionOutcome::Failed(m) if m.contains("Permission denied")),
            "{:?}",
            r.actions
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A second changing script waits for the first one's lock, saying who holds it, and gives
    /// up after its wait without changing anything. Observing scripts take no lock.
    #[test]
    fn changing_scripts_take_the_host_lock_and_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = |wait, who: &str| HostLock::in_dir(dir.path(), wait, who);
        let target = dir.path().join("t").to_str().unwrap().to_string();
        let first = Script {
            actions: vec![Action::run("sleep 2")],
            ..Default::default()
        };
        let second = Script {
            actions: vec![Action::write(&target, "x\n", Attrs::default(), false)],
            ..Default::default()
        };
        let observe = Script {
            probes: vec![Probe::File(target.clone())],
            ..Default::default()
        };
        assert!(!observe.render_with(Some(&lock(1, "a"))).contains("kf_lock"));
        let spawn = |text: String| {
            let mut c = Command::new("sh")
                .arg("-s")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            c
        };
        let holder = spawn(first.render_with(Some(&lock(5, "pid 1 on ctl, since then"))));
        std::thread::sleep(std::time::Duration::from_millis(500));
        // Gives up after one second.
        let started = std::time::Instant::now();
        let out = spawn(second.render_with(Some(&lock(1, "pid 2")))).wait_with_output();
        let r = parse(&second, &out.unwrap().stdout).unwrap();
        assert_eq!(r.lock_busy.as_deref(), Some("pid 1 on ctl, since then"));
        assert_eq!(r.actions[0], ActionOutcome::NotRun);
        assert!(!std::path::Path::new(&target).exists());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Waits long enough: runs after the first one.
        let out = spawn(second.render_with(Some(&lock(10, "pid 2")))).wait_with_output();
        let stdout = out.unwrap().stdout;
        assert!(String::from_utf8_lossy(&stdout).contains("KF wait ="));
        let r = parse(&second, &stdout).unwrap();
        assert_eq!(r.actions[0], ActionOutcome::Done);
        assert!(r.lock_busy.is_none());
        assert!(holder.wait_with_output().unwrap().status.success());
        // Free again: no waiting.
        let out = spawn(second.render_with(Some(&lock(0, "pid 3")))).wait_with_output();
        let stdout = out.unwrap().stdout;
        assert!(!String::from_utf8_lossy(&stdout).contains("KF wait"));
        assert_eq!(
            parse(&second, &stdout).unwrap().actions[0],
            ActionOutcome::Done
        );
    }

    /// Where there is no flock: a directory made with mkdir, removed at the end, taken over
    /// when the process that made it is gone.
    #[test]
    fn without_flock_the_lock_is_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let lock = |wait, who: &str| HostLock::in_dir(dir.path(), wait, who);
        let lockdir = dir.path().join("kf.lock.d");
        let script = |cmd: &str| Script {
            actions: vec![Action::run(cmd)],
            ..Default::default()
        };
        let no_flock = |s: &Script, l: &HostLock| {
            s.render_with(Some(l))
                .replace("command -v flock", "command -v kf-no-flock")
        };
        let spawn = |text: String| {
            let mut c = Command::new("sh")
                .arg("-s")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            c
        };
        let slow = script("sleep 2");
        let holder = spawn(no_flock(&slow, &lock(5, "pid 1 on ctl")));
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(lockdir.is_dir());
        let quick = script("true");
        let out = spawn(no_flock(&quick, &lock(0, "pid 2"))).wait_with_output();
        let r = parse(&quick, &out.unwrap().stdout).unwrap();
        assert_eq!(r.lock_busy.as_deref(), Some("pid 1 on ctl"));
        let out = spawn(no_flock(&quick, &lock(10, "pid 2"))).wait_with_output();
        let stdout = out.unwrap().stdout;
        assert!(String::from_utf8_lossy(&stdout).contains("KF wait ="));
        assert_eq!(
            parse(&quick, &stdout).unwrap().actions[0],
            ActionOutcome::Ran(CommandOutput::ok(""))
        );
        assert!(holder.wait_with_output().unwrap().status.success());
        assert!(!lockdir.exists(), "removed when the script ends");
        // Left behind by a process that is gone: taken over at once.
        std::fs::create_dir(&lockdir).unwrap();
        std::fs::write(lockdir.join("owner"), "999999999 pid 9 on gone").unwrap();
        let out = spawn(no_flock(&quick, &lock(0, "pid 3"))).wait_with_output();
        let r = parse(&quick, &out.unwrap().stdout).unwrap();
        assert!(r.lock_busy.is_none());
        assert_eq!(r.actions[0], ActionOutcome::Ran(CommandOutput::ok("")));
        assert!(!lockdir.exists());
    }

    /// A shell that stays open: a run lock's holder as the transports start it.
    fn holder(text: String) -> (std::process::Child, std::process::ChildStdin, Vec<u8>) {
        let mut c = Command::new("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let mut out = Vec::new();
        let mut stdout = c.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while !out.ends_with(b"KF end\n") {
            if std::io::Read::read(&mut stdout, &mut byte).unwrap() == 0 {
                break;
            }
            out.push(byte[0]);
        }
        // Keep reading in the background so the holder never blocks on its output.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        (c, stdin, out)
    }

    fn sh(text: String) -> Vec<u8> {
        let mut c = Command::new("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        c.wait_with_output().unwrap().stdout
    }

    /// A run lock's holder takes the lock, observes under it, and keeps the lock for as long
    /// as its input is open: changing scripts of other runs wait, and get it once it closes.
    #[test]
    fn a_holder_keeps_the_lock_until_its_input_closes() {
        let dir = tempfile::tempdir().unwrap();
        let lock = |wait, who: &str| HostLock::in_dir(dir.path(), wait, who);
        let target = dir.path().join("t").to_str().unwrap().to_string();
        std::fs::write(&target, "before\n").unwrap();
        let observe = Script {
            probes: vec![Probe::File(target.clone())],
            ..Default::default()
        };
        let (mut child, stdin, out) = holder(observe.render_holder(&lock(5, "pid 1 on ctl")));
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("KF held\n"), "{text}");
        let r = parse(&observe, &out).unwrap();
        assert!(r.complete && r.lock_busy.is_none());
        assert!(
            matches!(&r.observations[0], Observation::File(st) if st.content.as_deref() == Some(&b"before\n"[..]))
        );
        let write = Script {
            actions: vec![Action::write(&target, "other\n", Attrs::default(), false)],
            ..Default::default()
        };
        let r = parse(&write, &sh(write.render_with(Some(&lock(1, "pid 2"))))).unwrap();
        assert_eq!(r.lock_busy.as_deref(), Some("pid 1 on ctl"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "before\n");
        // A second holder of another run waits and gives up the same way.
        let (_, _, out) = holder(observe.render_holder(&lock(1, "pid 3")));
        assert_eq!(
            parse(&observe, &out).unwrap().lock_busy.as_deref(),
            Some("pid 1 on ctl")
        );
        // The same run (its holder text) does not wait for itself.
        let r = parse(
            &write,
            &sh(write.render_with(Some(&lock(1, "pid 1 on ctl")))),
        )
        .unwrap();
        assert_eq!(r.actions[0], ActionOutcome::Done);
        // The input closes (the run ended, or the controller died): the lock is free.
        drop(stdin);
        child.wait().unwrap();
        let r = parse(&write, &sh(write.render_with(Some(&lock(0, "pid 2"))))).unwrap();
        assert!(r.lock_busy.is_none());
        assert_eq!(r.actions[0], ActionOutcome::Done);
    }

    /// Before a guarded network change the holder hands the lock to a keeper detached from it:
    /// the lock stays taken after the holder's session is gone, until the change is disarmed
    /// (its directory removed) or rolled back; and a change that never got armed lets go after
    /// the grace.
    #[test]
    fn a_keeper_holds_the_lock_until_the_guarded_change_settles() {
        for no_flock in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let lock = |wait, who: &str| HostLock::in_dir(dir.path(), wait, who);
            let render = |t: String| {
                if no_flock {
                    t.replace("command -v flock", "command -v kf-no-flock")
                } else {
                    t
                }
            };
            let write = Script {
                actions: vec![Action::run("true")],
                ..Default::default()
            };
            let busy = || {
                let out = sh(render(write.render_with(Some(&lock(0, "pid 2")))));
                parse(&write, &out).unwrap().lock_busy
            };
            let guard = dir.path().join("guard").to_str().unwrap().to_string();
            let (mut child, mut stdin, _) = holder(render(
                Script::default().render_holder(&lock(5, "pid 1 on ctl")),
            ));
            stdin
                .write_all(RunLock::keep_command(&guard, 600, 600).as_bytes())
                .unwrap();
            stdin.flush().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !std::path::Path::new(&guard).is_dir() {
                assert!(std::time::Instant::now() < deadline);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            // The session that held it is gone; the change is not settled: still taken.
            drop(stdin);
            child.wait().unwrap();
            std::fs::write(format!("{guard}/armed"), "sleeper").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            assert_eq!(
                busy().as_deref(),
                Some("pid 1 on ctl"),
                "no_flock={no_flock}"
            );
            // Disarmed: free within a second or two.
            std::fs::remove_dir_all(&guard).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while busy().is_some() {
                assert!(std::time::Instant::now() < deadline, "no_flock={no_flock}");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        // Never armed: let go after the grace; rolled back: let go at once.
        let dir = tempfile::tempdir().unwrap();
        let lock = |wait, who: &str| HostLock::in_dir(dir.path(), wait, who);
        let write = Script {
            actions: vec![Action::run("true")],
            ..Default::default()
        };
        let busy = || {
            let out = sh(write.render_with(Some(&lock(0, "pid 2"))));
            parse(&write, &out).unwrap().lock_busy
        };
        for (grace, rolled_back) in [(1, false), (600, true)] {
            let guard = dir
                .path()
                .join(format!("g{grace}"))
                .to_str()
                .unwrap()
                .to_string();
            let (mut child, mut stdin, _) =
                holder(Script::default().render_holder(&lock(5, "pid 1 on ctl")));
            stdin
                .write_all(RunLock::keep_command(&guard, 600, grace).as_bytes())
                .unwrap();
            drop(stdin);
            child.wait().unwrap();
            assert!(std::path::Path::new(&guard).is_dir());
            if rolled_back {
                std::fs::write(format!("{guard}/armed"), "").unwrap();
                assert!(busy().is_some());
                std::fs::write(format!("{guard}/rolled-back"), "ok").unwrap();
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while busy().is_some() {
                assert!(std::time::Instant::now() < deadline, "grace {grace}");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
        assert_eq!(utc_text(1_798_761_599), "2026-12-31 23:59:59 UTC");
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
