//! How the executor reaches a host.
//!
//! Every remote interaction is one shell script run by `sh -s` with the script on stdin: the
//! executor never needs more from a transport than [`Connection::run_script`]. Reading and
//! writing single files are built on it, with the same atomic write the modules' actions use.

use crate::inventory::{ConnectionKind, ConnectionSpec};
use crate::module::{Action, Attrs, FileState, Observation, Probe};
use crate::remote::{self, ActionOutcome, Script};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// What running a script produced.
#[derive(Debug, Clone, Default)]
pub struct ScriptOutput {
    /// Exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The host cannot be reached or logged into; it is reported `unreachable`.
    #[error("{0}")]
    Unreachable(String),
    /// Privilege escalation failed (wrong or missing sudo password, no sudo).
    #[error("become failed: {0}")]
    Become(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Protocol(#[from] remote::ProtocolError),
    /// One invocation took longer than `--timeout` (plus, for a run lock's holder, the
    /// `--lock-timeout` it may wait for another run).
    #[error("{}", timeout_text(host, *secs, *lock_wait))]
    Timeout {
        host: String,
        /// The `--timeout` that fired.
        secs: u64,
        /// The `--lock-timeout` allowed on top, when the invocation waited for the host lock.
        lock_wait: Option<u64>,
    },
    /// The connection failed (unreachable, timed out, I/O) while running a script that changes
    /// the host: its changes may be partly made, and the host may have become unreachable
    /// *because* of them (a network change). Told apart from a host that was never reached so
    /// that confirming or rolling back a change can react to it; shown as the failure itself.
    #[error(transparent)]
    LostDuringChange(Box<ConnectionError>),
}

impl ConnectionError {
    /// The host is to be reported unreachable (not merely failed).
    pub fn is_unreachable(&self) -> bool {
        match self {
            ConnectionError::Unreachable(_) | ConnectionError::Timeout { .. } => true,
            ConnectionError::LostDuringChange(e) => e.is_unreachable(),
            _ => false,
        }
    }
    /// The connection was lost while changes were being made.
    pub fn lost_during_change(&self) -> bool {
        matches!(self, ConnectionError::LostDuringChange(_))
    }
}

/// What a timed-out invocation says: which limit fired and how to raise it.
fn timeout_text(host: &str, secs: u64, lock_wait: Option<u64>) -> String {
    match lock_wait {
        None => format!(
            "no answer from {host} within {secs} s: timed out after {secs} s (--timeout {secs}); \
             raise the limit with --timeout SECONDS"
        ),
        Some(w) => format!(
            "no answer from {host} within {} s: timed out after {secs} s (--timeout {secs}) \
             plus {w} s of waiting for the host lock (--lock-timeout {w}); raise the limits with \
             --timeout SECONDS or --lock-timeout SECONDS",
            secs + w
        ),
    }
}

/// What a run says when another run held the host lock for longer than `--lock-timeout`.
pub fn lock_busy_text(holder: &str, wait: u64) -> String {
    format!(
        "another kvmforge run holds the host lock ({holder}): gave up waiting after {wait} s \
         (--lock-timeout {wait}; raise it with --lock-timeout SECONDS); nothing was changed"
    )
}

/// A shell on a channel of its own that stays open as long as this value lives: a run lock's
/// holder (see [`remote::RunLock`]). Dropping it closes the shell's standard input, which ends
/// it and frees the lock.
pub trait Channel: Send {
    /// Send more shell text.
    fn send(&mut self, text: &[u8]) -> Result<(), ConnectionError>;
    /// What the shell prints up to and including the first line starting with `marker`
    /// (`KF wait` lines are shown as they arrive), and whether that line came before the output
    /// ended.
    fn read_until(&mut self, marker: &[u8]) -> Result<(Vec<u8>, bool), ConnectionError>;
    /// What the shell printed on stderr, once its output has ended.
    fn errors(&mut self) -> String;
}

/// Take complete lines out of `pending` into `out` until one starts with `marker`, showing the
/// `KF wait` records among them. Returns whether the marker line was found.
pub fn take_lines(host: &str, pending: &mut Vec<u8>, out: &mut Vec<u8>, marker: &[u8]) -> bool {
    while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = pending.drain(..=nl).collect();
        let mut seen = 0;
        announce_waits(host, &line, &mut seen);
        let found = line.starts_with(marker);
        out.extend_from_slice(&line);
        if found {
            return true;
        }
    }
    false
}

/// The run locks a connection holds, one per privilege: root and the login user lock
/// different files (see [`remote::HostLock`]).
#[derive(Default)]
pub struct HeldLocks {
    held: Vec<(bool, Box<dyn Channel>)>,
}

impl HeldLocks {
    pub fn holds(&self, root: bool) -> bool {
        self.held.iter().any(|(r, _)| *r == root)
    }
}

/// A way to run scripts on one host.
pub trait Connection: Send {
    /// Run a POSIX shell script on the host with `sh -s`; as root when `become_` is set and the
    /// login user is not root already.
    fn run_script(&mut self, script: &str, become_: bool) -> Result<ScriptOutput, ConnectionError>;

    /// How many remote invocations this connection has made (shown with `-v` and in the JSON
    /// recap, so round trips can be checked).
    fn invocations(&self) -> u32;

    /// The lock a changing script takes on the host (see [`remote::HostLock`]); none by default.
    fn host_lock(&self) -> Option<&remote::HostLock> {
        None
    }

    /// Whether a script with `become_` runs as root.
    fn as_root(&self, become_: bool) -> bool {
        become_
    }

    /// The run locks this connection holds; `None` when it cannot hold any.
    fn held_locks(&self) -> Option<&HeldLocks> {
        None
    }

    fn held_locks_mut(&mut self) -> Option<&mut HeldLocks> {
        None
    }

    /// Start a shell (as root with `become_`) on a channel of its own, which may take up to
    /// `allowance` longer than one invocation may (see [`Channel`]).
    fn open_channel(
        &mut self,
        _become_: bool,
        _allowance: std::time::Duration,
    ) -> Result<Box<dyn Channel>, ConnectionError> {
        Err(ConnectionError::Io(
            "this connection opens no channels".into(),
        ))
    }

    /// This run holds the host lock for scripts with `become_`: they take none of their own.
    fn holds_lock(&self, become_: bool) -> bool {
        let root = self.as_root(become_);
        self.held_locks().is_some_and(|h| h.holds(root))
    }

    /// A change with `become_` needs the run lock taken first (see [`remote::RunLock`]).
    fn needs_run_lock(&self, become_: bool) -> bool {
        self.host_lock().is_some() && self.held_locks().is_some() && !self.holds_lock(become_)
    }

    /// Take the run lock for `script.become_` and run `script` (observations) under it,
    /// keeping the lock until this connection is dropped (see [`remote::RunLock`]). Without a
    /// lock to take, just runs the script.
    fn hold_lock(&mut self, script: &Script) -> Result<remote::Report, ConnectionError> {
        let lock = match self.host_lock() {
            Some(l) if self.held_locks().is_some() && !self.holds_lock(script.become_) => l.clone(),
            _ => return self.execute(script),
        };
        let root = self.as_root(script.become_);
        let mut ch =
            self.open_channel(script.become_, std::time::Duration::from_secs(lock.wait))?;
        ch.send(script.render_holder(&lock).as_bytes())?;
        let (out, done) = ch.read_until(b"KF end")?;
        let report = remote::parse(script, &out)?;
        if let Some(holder) = &report.lock_busy {
            return Err(ConnectionError::Io(lock_busy_text(holder, lock.wait)));
        }
        if !done || !report.complete {
            return Err(ConnectionError::Io(format!(
                "the shell taking the host lock stopped early: {}",
                ch.errors().trim()
            )));
        }
        if let Some(h) = self.held_locks_mut() {
            h.held.push((root, ch));
        }
        Ok(report)
    }

    /// Keep the root run lock held until the guarded network change saved in `dir` is
    /// settled, even if this connection drops meanwhile (see [`remote::RunLock`]). Nothing to
    /// do when this run holds no root lock.
    fn keep_lock(&mut self, dir: &str, seconds: u64, grace: u64) -> Result<(), ConnectionError> {
        let Some(h) = self.held_locks_mut() else {
            return Ok(());
        };
        let Some((_, ch)) = h.held.iter_mut().find(|(root, _)| *root) else {
            return Ok(());
        };
        ch.send(remote::RunLock::keep_command(dir, seconds, grace).as_bytes())?;
        match ch.read_until(b"KF kept")? {
            (_, true) => Ok(()),
            (_, false) => Err(ConnectionError::Io(format!(
                "the shell holding the host lock ended: {}",
                ch.errors().trim()
            ))),
        }
    }

    /// Run a [`Script`] and parse its report.
    fn execute(&mut self, script: &Script) -> Result<remote::Report, ConnectionError> {
        let lock = if self.holds_lock(script.become_) {
            None
        } else {
            self.host_lock()
        };
        let text = script.render_with(lock);
        let out = match self.run_script(&text, script.become_) {
            Err(
                e @ (ConnectionError::Unreachable(_)
                | ConnectionError::Timeout { .. }
                | ConnectionError::Io(_)),
            ) if !script.actions.is_empty() => {
                return Err(ConnectionError::LostDuringChange(Box::new(e)))
            }
            r => r?,
        };
        let report = remote::parse(script, &out.stdout)?;
        if let Some(holder) = &report.lock_busy {
            let wait = self.host_lock().map_or(0, |l| l.wait);
            return Err(ConnectionError::Io(lock_busy_text(holder, wait)));
        }
        if !report.complete
            && report.actions.iter().all(|a| *a == ActionOutcome::NotRun)
            && !script.actions.is_empty()
        {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ConnectionError::Io(format!(
                "remote shell stopped early (status {:?}): {}",
                out.status,
                err.trim()
            )));
        }
        if !report.complete && script.actions.is_empty() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ConnectionError::Io(format!(
                "remote shell did not finish (status {:?}): {}",
                out.status,
                err.trim()
            )));
        }
        Ok(report)
    }

    /// Read one file's state and content.
    fn read_file(&mut self, path: &str) -> Result<FileState, ConnectionError> {
        let script = Script {
            probes: vec![Probe::File(path.into())],
            ..Default::default()
        };
        match self.execute(&script)?.observations.pop() {
            Some(Observation::File(f)) => Ok(f),
            Some(Observation::Error(e)) => Err(ConnectionError::Io(format!("{path}: {e}"))),
            _ => Err(ConnectionError::Io(format!("{path}: no answer"))),
        }
    }

    /// Write a file atomically (temporary file + rename; mode and owner of an existing file kept).
    fn write_file(
        &mut self,
        path: &str,
        content: &[u8],
        attrs: Attrs,
    ) -> Result<(), ConnectionError> {
        let script = Script {
            actions: vec![Action::write(path, content, attrs, false)],
            ..Default::default()
        };
        match self.execute(&script)?.actions.pop() {
            Some(ActionOutcome::Done) => Ok(()),
            Some(ActionOutcome::Failed(e)) => Err(ConnectionError::Io(format!("{path}: {e}"))),
            _ => Err(ConnectionError::Io(format!(
                "{path}: write did not complete"
            ))),
        }
    }
}

/// Privilege escalation settings for a connection.
#[derive(Clone, Default)]
pub struct Become {
    /// The sudo password, sent on stdin only; never logged.
    pub password: Option<String>,
}

impl std::fmt::Debug for Become {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.password.is_some() {
            "Become(password: <hidden>)"
        } else {
            "Become"
        })
    }
}

impl Become {
    /// The command line and stdin preamble that run `sh -s`, through sudo when `enabled` and the
    /// user is not root already.
    pub fn wrap(&self, enabled: bool, already_root: bool) -> (Vec<String>, Vec<u8>) {
        if !enabled || already_root {
            return (vec!["sh".into(), "-s".into()], Vec::new());
        }
        match &self.password {
            // The password is the first line on stdin. A user whose sudo needs none (NOPASSWD,
            // or credentials still cached) must not pass that line on to `sh -s`, which would
            // run it as a command and print it in an error: it is read first and only handed
            // to sudo when sudo asks. `read` and `printf` are shell builtins, so the password
            // is in no process's arguments.
            Some(pw) => (
                vec![
                    "sh".into(),
                    "-c".into(),
                    "IFS= read -r kf_pw || exit 1\n\
                     if sudo -n true 2>/dev/null; then unset kf_pw; exec sudo -n -- sh -s; fi\n\
                     { printf '%s\\n' \"$kf_pw\"; unset kf_pw; exec cat; } | sudo -S -p '' -k -- sh -s"
                        .into(),
                ],
                format!("{pw}\n").into_bytes(),
            ),
            None => (
                ["sudo", "-n", "--", "sh", "-s"].map(String::from).to_vec(),
                Vec::new(),
            ),
        }
    }
}

/// Show the `KF wait` records of a script's output as they arrive: another run holds the host
/// lock and this one waits for it. `seen` is how much of `out` was scanned already.
pub fn announce_waits(host: &str, out: &[u8], seen: &mut usize) {
    while let Some(nl) = out[*seen..].iter().position(|b| *b == b'\n') {
        let line = &out[*seen..*seen + nl];
        *seen += nl + 1;
        if let Some(holder) = line.strip_prefix(b"KF wait =") {
            use base64::Engine as _;
            let holder = base64::engine::general_purpose::STANDARD
                .decode(holder)
                .map(|h| String::from_utf8_lossy(&h).into_owned())
                .unwrap_or_default();
            eprintln!("waiting for another kvmforge run on {host} ({holder})");
        }
    }
}

/// Interpret sudo's complaints, which arrive on stderr of the wrapped command.
pub fn become_failure(stderr: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(stderr);
    for needle in [
        "a password is required",
        "incorrect password",
        "Sorry, try again",
        "is not in the sudoers file",
        "no tty present",
        "sudo: command not found",
        "sudo: not found",
    ] {
        if s.contains(needle) {
            return Some(
                s.lines()
                    .find(|l| l.contains("sudo"))
                    .unwrap_or(needle)
                    .trim()
                    .to_string(),
            );
        }
    }
    None
}

/// Transport settings from the command line.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Seconds to wait for a connection to be established.
    pub connect_timeout: u64,
    /// Seconds one remote invocation may take; `None` waits forever.
    pub command_timeout: Option<u64>,
    /// `accept-new` (default), `strict` or `off`; a host's `host_key_checking` variable wins.
    pub host_key_checking: String,
    /// The lock a changing script takes on its host; `None` takes none.
    pub lock: Option<remote::HostLock>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: 10,
            command_timeout: None,
            host_key_checking: "accept-new".into(),
            lock: None,
        }
    }
}

/// Open a connection to a host.
pub fn connect(
    name: &str,
    spec: &ConnectionSpec,
    become_: &Become,
    opts: &ConnectOptions,
) -> Result<Box<dyn Connection>, ConnectionError> {
    // A sudo password in the inventory (`ansible_become_password`) is the host's own.
    let own;
    let become_ = match &spec.become_password {
        Some(p) => {
            own = Become {
                password: Some(p.expose().to_string()),
            };
            &own
        }
        None => become_,
    };
    match spec.kind {
        ConnectionKind::Local => {
            let mut c = LocalConnection::new(become_.clone());
            c.name = name.to_string();
            c.lock = opts.lock.clone();
            Ok(Box::new(c))
        }
        ConnectionKind::Ssh => Ok(Box::new(crate::ssh::SshConnection::connect(
            name, spec, become_, opts,
        )?)),
    }
}

/// Runs scripts on the controller itself (`connection: local`).
pub struct LocalConnection {
    become_: Become,
    invocations: u32,
    name: String,
    lock: Option<remote::HostLock>,
    locks: HeldLocks,
}

impl LocalConnection {
    pub fn new(become_: Become) -> Self {
        LocalConnection {
            become_,
            invocations: 0,
            name: "localhost".into(),
            lock: None,
            locks: HeldLocks::default(),
        }
    }

    /// Run with this host lock (see [`remote::HostLock`]).
    pub fn with_lock(mut self, lock: remote::HostLock) -> Self {
        self.lock = Some(lock);
        self
    }
}

/// A local shell that stays open (see [`Channel`]).
struct LocalChannel {
    host: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::process::ChildStdout,
    pending: Vec<u8>,
}

impl Channel for LocalChannel {
    fn send(&mut self, text: &[u8]) -> Result<(), ConnectionError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| ConnectionError::Io("the shell's input is closed".into()))?;
        stdin
            .write_all(text)
            .and_then(|()| stdin.flush())
            .map_err(|e| ConnectionError::Io(format!("cannot write to the local shell: {e}")))
    }

    fn read_until(&mut self, marker: &[u8]) -> Result<(Vec<u8>, bool), ConnectionError> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if take_lines(&self.host, &mut self.pending, &mut out, marker) {
                return Ok((out, true));
            }
            match std::io::Read::read(&mut self.stdout, &mut chunk) {
                Ok(0) => {
                    out.append(&mut self.pending);
                    return Ok((out, false));
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnectionError::Io(e.to_string())),
            }
        }
    }

    fn errors(&mut self) -> String {
        let mut e = Vec::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_end(&mut err, &mut e);
        }
        String::from_utf8_lossy(&e).into_owned()
    }
}

impl Drop for LocalChannel {
    fn drop(&mut self) {
        // End of input: the shell exits and the lock is free.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl LocalConnection {
    /// A shell for one invocation (through sudo for `become_` when not root), with the input
    /// that must precede the script. Its own process group: a Ctrl-C at the terminal stops the
    /// run from starting new work, but lets the script in flight finish.
    fn spawn_shell(
        &mut self,
        become_: bool,
    ) -> Result<(std::process::Child, Vec<u8>), ConnectionError> {
        self.invocations += 1;
        let root = nix::unistd::geteuid().is_root();
        let (argv, preamble) = self.become_.wrap(become_, root);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ConnectionError::Io(format!("cannot start {}: {e}", argv[0])))?;
        Ok((child, preamble))
    }
}

impl Connection for LocalConnection {
    fn run_script(&mut self, script: &str, become_: bool) -> Result<ScriptOutput, ConnectionError> {
        let (mut child, preamble) = self.spawn_shell(become_)?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = [preamble, script.as_bytes().to_vec()].concat();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let mut stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut e = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut e);
            e
        });
        let mut stdout = child.stdout.take().expect("piped");
        let (mut buf, mut seen, mut chunk) = (Vec::new(), 0, [0u8; 65536]);
        loop {
            match std::io::Read::read(&mut stdout, &mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    announce_waits(&self.name, &buf, &mut seen);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnectionError::Io(e.to_string())),
            }
        }
        let status = child
            .wait()
            .map_err(|e| ConnectionError::Io(e.to_string()))?;
        let out = std::process::Output {
            status,
            stdout: buf,
            stderr: errors.join().unwrap_or_default(),
        };
        let _ = writer.join();
        if out.status.code() != Some(0) {
            if let Some(msg) = become_failure(&out.stderr) {
                return Err(ConnectionError::Become(msg));
            }
        }
        Ok(ScriptOutput {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn invocations(&self) -> u32 {
        self.invocations
    }

    fn host_lock(&self) -> Option<&remote::HostLock> {
        self.lock.as_ref()
    }

    fn as_root(&self, become_: bool) -> bool {
        become_ || nix::unistd::geteuid().is_root()
    }

    fn held_locks(&self) -> Option<&HeldLocks> {
        Some(&self.locks)
    }

    fn held_locks_mut(&mut self) -> Option<&mut HeldLocks> {
        Some(&mut self.locks)
    }

    fn open_channel(
        &mut self,
        become_: bool,
        _allowance: std::time::Duration,
    ) -> Result<Box<dyn Channel>, ConnectionError> {
        let (mut child, preamble) = self.spawn_shell(become_)?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let mut ch = LocalChannel {
            host: self.name.clone(),
            child,
            stdin: Some(stdin),
            stdout,
            pending: Vec::new(),
        };
        if !preamble.is_empty() {
            ch.send(&preamble)?;
        }
        Ok(Box::new(ch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_read_write_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f").to_str().unwrap().to_string();
        let mut c = LocalConnection::new(Become::default());
        c.write_file(&path, b"hello\n", Attrs::default()).unwrap();
        let st = c.read_file(&path).unwrap();
        assert_eq!(st.content.as_deref(), Some(&b"hello\n"[..]));
        assert_eq!(c.invocations(), 2);
    }

    /// A run that holds the run lock: its own changing scripts take no lock of their own and
    /// never wait for it; another run's wait and give up naming `--lock-timeout`; dropping the
    /// connection frees the lock.
    #[test]
    fn the_run_lock_is_held_until_the_connection_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = |wait, who: &str| remote::HostLock::in_dir(dir.path(), wait, who);
        let target = dir.path().join("f").to_str().unwrap().to_string();
        let mut a = LocalConnection::new(Become::default()).with_lock(lock(5, "pid 1"));
        assert!(a.needs_run_lock(false));
        let observe = Script {
            probes: vec![Probe::File(target.clone())],
            ..Default::default()
        };
        let r = a.hold_lock(&observe).unwrap();
        assert_eq!(r.observations.len(), 1);
        assert!(a.holds_lock(false) && !a.needs_run_lock(false));
        assert_eq!(a.invocations(), 1);
        a.write_file(&target, b"a\n", Attrs::default()).unwrap();
        let mut b = LocalConnection::new(Become::default()).with_lock(lock(1, "pid 2"));
        let e = b.write_file(&target, b"b\n", Attrs::default()).unwrap_err();
        assert!(
            e.to_string().contains("holds the host lock (pid 1)")
                && e.to_string()
                    .contains("gave up waiting after 1 s (--lock-timeout 1;"),
            "{e}"
        );
        let e = b.hold_lock(&observe).unwrap_err();
        assert!(e.to_string().contains("--lock-timeout 1"), "{e}");
        drop(a);
        b.write_file(&target, b"b\n", Attrs::default()).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "b\n");
    }

    #[test]
    fn a_timeout_names_the_limit_and_how_to_raise_it() {
        let e = ConnectionError::Timeout {
            host: "h1".into(),
            secs: 60,
            lock_wait: None,
        };
        assert_eq!(
            e.to_string(),
            "no answer from h1 within 60 s: timed out after 60 s (--timeout 60); raise the limit with --timeout SECONDS"
        );
        assert!(e.is_unreachable());
        let e = ConnectionError::Timeout {
            host: "h1".into(),
            secs: 60,
            lock_wait: Some(300),
        };
        let t = e.to_string();
        assert!(
            t.contains("within 360 s")
                && t.contains("--timeout 60")
                && t.contains("--lock-timeout 300"),
            "{t}"
        );
    }

    /// A transport that fails every script the way a dropped SSH session does.
    struct Dropped(ConnectionError);

    impl Connection for Dropped {
        fn run_script(&mut self, _: &str, _: bool) -> Result<ScriptOutput, ConnectionError> {
            Err(self.0.clone())
        }
        fn invocations(&self) -> u32 {
            1
        }
    }

    #[test]
    fn a_connection_lost_while_changing_is_its_own_case() {
        let lost = ConnectionError::Unreachable("h1: connection lost (broken pipe)".into());
        let mut c = Dropped(lost.clone());
        let change = Script {
            actions: vec![Action::run("true")],
            ..Default::default()
        };
        let e = c.execute(&change).unwrap_err();
        assert!(e.lost_during_change() && e.is_unreachable(), "{e:?}");
        assert_eq!(e.to_string(), lost.to_string());
        let observe = Script {
            probes: vec![Probe::File("/etc/hostname".into())],
            ..Default::default()
        };
        let e = c.execute(&observe).unwrap_err();
        assert_eq!(e, lost);
        // sudo refusing runs nothing: no change was under way.
        let mut c = Dropped(ConnectionError::Become("incorrect password".into()));
        assert!(!c.execute(&change).unwrap_err().lost_during_change());
        let mut c = Dropped(ConnectionError::Io("broken pipe".into()));
        let e = c.execute(&change).unwrap_err();
        assert!(e.lost_during_change() && !e.is_unreachable());
    }

    #[test]
    fn become_password_goes_to_stdin_not_argv() {
        let b = Become {
            password: Some("s3cret".into()),
        };
        let (argv, pre) = b.wrap(true, false);
        assert!(argv.iter().all(|a| !a.contains("s3cret")));
        assert_eq!(pre, b"s3cret\n");
        assert_eq!(b.wrap(true, true).0, vec!["sh", "-s"]);
        assert_eq!(b.wrap(false, false).0, vec!["sh", "-s"]);
        assert!(!format!("{b:?}").contains("s3cret"));
    }
}
