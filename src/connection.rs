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
    #[error("timed out after {0} s")]
    Timeout(u64),
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
            ConnectionError::Unreachable(_) | ConnectionError::Timeout(_) => true,
            ConnectionError::LostDuringChange(e) => e.is_unreachable(),
            _ => false,
        }
    }
    /// The connection was lost while changes were being made.
    pub fn lost_during_change(&self) -> bool {
        matches!(self, ConnectionError::LostDuringChange(_))
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

    /// Run a [`Script`] and parse its report.
    fn execute(&mut self, script: &Script) -> Result<remote::Report, ConnectionError> {
        let text = script.render_with(self.host_lock());
        let out = match self.run_script(&text, script.become_) {
            Err(
                e @ (ConnectionError::Unreachable(_)
                | ConnectionError::Timeout(_)
                | ConnectionError::Io(_)),
            ) if !script.actions.is_empty() => {
                return Err(ConnectionError::LostDuringChange(Box::new(e)))
            }
            r => r?,
        };
        let report = remote::parse(script, &out.stdout)?;
        if let Some(holder) = &report.lock_busy {
            let wait = self.host_lock().map_or(0, |l| l.wait);
            return Err(ConnectionError::Io(format!(
                "another kvmforge run holds the host lock ({holder}): gave up waiting after \
                 {wait} s (--lock-timeout); nothing was changed"
            )));
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
}

impl LocalConnection {
    pub fn new(become_: Become) -> Self {
        LocalConnection {
            become_,
            invocations: 0,
            name: "localhost".into(),
            lock: None,
        }
    }
}

impl Connection for LocalConnection {
    fn run_script(&mut self, script: &str, become_: bool) -> Result<ScriptOutput, ConnectionError> {
        self.invocations += 1;
        let root = nix::unistd::geteuid().is_root();
        let (argv, preamble) = self.become_.wrap(become_, root);
        // Its own process group: a Ctrl-C at the terminal stops the run from starting new
        // work, but lets the script in flight finish.
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ConnectionError::Io(format!("cannot start {}: {e}", argv[0])))?;
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
