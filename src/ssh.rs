//! SSH connections through the system OpenSSH client (the `openssh` crate).
//!
//! One multiplexed master connection per host lives for the whole run, so `~/.ssh/config`,
//! keys, agents and ProxyJump work exactly as with `ssh`, and each remote invocation afterwards
//! costs one channel on the existing connection. Scripts and file contents travel on the
//! channel's stdin; nothing is copied with scp/sftp.

use crate::connection::{
    announce_waits, become_failure, take_lines, Become, Channel, ConnectOptions, Connection,
    ConnectionError, HeldLocks, ScriptOutput,
};
use crate::inventory::ConnectionSpec;
use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One runtime drives every connection's I/O; worker threads call into it with `block_on`.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

pub struct SshConnection {
    name: String,
    session: Option<Arc<Session>>,
    become_: Become,
    /// The login user is root: no sudo needed.
    root: bool,
    timeout: Option<Duration>,
    invocations: u32,
    lock: Option<crate::remote::HostLock>,
    /// Run locks held on channels of this connection's master.
    locks: HeldLocks,
}

/// A remote shell on a channel of its own over the host's master connection (see
/// [`Channel`]). Dropping it closes the channel's input: the shell ends.
struct SshChannel {
    host: String,
    child: Option<openssh::Child<Arc<Session>>>,
    stdin: Option<openssh::ChildStdin>,
    stdout: openssh::ChildStdout,
    pending: Vec<u8>,
    /// How long one read may wait, and the limits it stands for (see
    /// [`ConnectionError::Timeout`]).
    timeout: Option<(Duration, u64, u64)>,
}

impl Channel for SshChannel {
    fn send(&mut self, text: &[u8]) -> Result<(), ConnectionError> {
        let host = self.host.clone();
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| ConnectionError::Io(format!("{host}: the channel's input is closed")))?;
        runtime()
            .block_on(async {
                stdin.write_all(text).await?;
                stdin.flush().await
            })
            .map_err(|e| ConnectionError::Io(format!("{host}: {e}")))
    }

    fn read_until(&mut self, marker: &[u8]) -> Result<(Vec<u8>, bool), ConnectionError> {
        let mut out = Vec::new();
        let host = self.host.clone();
        let (stdout, pending) = (&mut self.stdout, &mut self.pending);
        let work = async {
            let mut chunk = vec![0u8; 65536];
            loop {
                if take_lines(&host, pending, &mut out, marker) {
                    return Ok(true);
                }
                let n = stdout.read(&mut chunk).await?;
                if n == 0 {
                    out.append(pending);
                    return Ok::<_, std::io::Error>(false);
                }
                pending.extend_from_slice(&chunk[..n]);
            }
        };
        let done = match self.timeout {
            Some((t, secs, wait)) => runtime()
                .block_on(async { tokio::time::timeout(t, work).await })
                .map_err(|_| ConnectionError::Timeout {
                    host: host.clone(),
                    secs,
                    lock_wait: Some(wait),
                })?,
            None => runtime().block_on(work),
        }
        .map_err(|e| ConnectionError::Io(format!("{host}: {e}")))?;
        Ok((out, done))
    }

    fn errors(&mut self) -> String {
        let Some(child) = self.child.as_mut() else {
            return String::new();
        };
        let Some(mut err) = child.stderr().take() else {
            return String::new();
        };
        let mut e = Vec::new();
        let _ = runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(5), err.read_to_end(&mut e)).await
        });
        String::from_utf8_lossy(&e).into_owned()
    }
}

impl Drop for SshChannel {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(child) = self.child.take() {
            let _ = runtime().block_on(async {
                tokio::time::timeout(Duration::from_secs(5), child.wait()).await
            });
        }
    }
}

/// Why a connection failed, in words a sysadmin can act on.
fn explain(name: &str, spec: &ConnectionSpec, e: &openssh::Error) -> ConnectionError {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    let addr = &spec.address;
    let reason = if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || text.contains("Host key for") && text.contains("has changed")
    {
        format!(
            "host key of {addr} has CHANGED since it was recorded in known_hosts: refusing to connect \
             (possible man-in-the-middle). If the host was reinstalled, remove the old key with \
             `ssh-keygen -R {addr}` and run again"
        )
    } else if text.contains("Host key verification failed")
        || text.contains("No ED25519 host key is known")
        || text.contains("host key is not known")
    {
        format!(
            "host key of {addr} is not in known_hosts and checking is strict: add it (ssh-keyscan) or use \
             --host-key-checking accept-new"
        )
    } else if text.contains("Could not resolve hostname")
        || text.contains("Name or service not known")
    {
        format!("cannot resolve {addr} (DNS)")
    } else if text.contains("Connection refused") {
        format!("connection to {addr} refused (is sshd running?)")
    } else if text.contains("timed out") || text.contains("Connection timed out") {
        format!("connection to {addr} timed out")
    } else if text.contains("Permission denied") {
        format!("authentication to {addr} failed (permission denied)")
    } else if text.contains("No route to host") || text.contains("Network is unreachable") {
        format!("no route to {addr}")
    } else {
        text.lines().last().unwrap_or(&text).trim().to_string()
    };
    ConnectionError::Unreachable(format!("{name}: {reason}"))
}

impl SshConnection {
    pub fn connect(
        name: &str,
        spec: &ConnectionSpec,
        become_: &Become,
        opts: &ConnectOptions,
    ) -> Result<Self, ConnectionError> {
        let mut b = SessionBuilder::default();
        if let Some(u) = &spec.user {
            b.user(u.clone());
        }
        if let Some(p) = spec.port {
            b.port(p);
        }
        if let Some(k) = &spec.key {
            b.keyfile(shellexpand_home(k));
        }
        if let Some(j) = &spec.jump {
            b.jump_hosts(j.split(',').map(str::trim).filter(|s| !s.is_empty()));
        }
        if !spec.ssh_options.is_empty() {
            let cfg = options_config(spec).map_err(|e| {
                ConnectionError::Unreachable(format!("{name}: cannot write its ssh options: {e}"))
            })?;
            b.config_file(cfg);
        } else if let Some(cfg) = &spec.ssh_config {
            b.config_file(shellexpand_home(cfg));
        }
        if let Some(kh) = &spec.known_hosts {
            b.user_known_hosts_file(shellexpand_home(kh));
        }
        let policy = spec
            .host_key_checking
            .as_deref()
            .unwrap_or(&opts.host_key_checking);
        b.known_hosts_check(match policy {
            "strict" | "yes" => KnownHosts::Strict,
            "off" | "no" => {
                eprintln!(
                    "WARNING: host key checking is OFF for {name}: its identity is not verified"
                );
                KnownHosts::Accept
            }
            _ => KnownHosts::Add,
        });
        b.connect_timeout(Duration::from_secs(opts.connect_timeout.max(1)));
        b.server_alive_interval(Duration::from_secs(15));
        let session = runtime()
            .block_on(async {
                tokio::time::timeout(
                    // ProxyJump chains connect several times over.
                    Duration::from_secs(opts.connect_timeout.max(1) * 3 + 5),
                    b.connect_mux(&spec.address),
                )
                .await
            })
            .map_err(|_| {
                ConnectionError::Unreachable(format!(
                    "{name}: connection to {} timed out",
                    spec.address
                ))
            })?
            .map_err(|e| explain(name, spec, &e))?;
        let root = spec.user.as_deref() == Some("root");
        Ok(SshConnection {
            name: name.to_string(),
            session: Some(Arc::new(session)),
            become_: become_.clone(),
            root,
            timeout: opts.command_timeout.map(Duration::from_secs),
            invocations: 0,
            lock: opts.lock.clone(),
            locks: HeldLocks::default(),
        })
    }
}

/// An ssh client config carrying the host's extra options (from `ansible_ssh_common_args` and
/// the like), then including the config ssh would have read anyway: options obtained first win,
/// as they would on ssh's command line. The openssh crate takes no arbitrary `-o`, so the
/// options travel this way. Files are named by their content and live in a private directory.
fn options_config(spec: &ConnectionSpec) -> std::io::Result<PathBuf> {
    let mut text = String::from("# ssh options of an inventory host, written by kvmforge\n");
    for (k, v) in &spec.ssh_options {
        if v.contains(['\n', '\r']) || k.contains(|c: char| !c.is_ascii_alphanumeric()) {
            return Err(std::io::Error::other(format!(
                "option `{k}` cannot be written to a config file"
            )));
        }
        let raw = [
            "ProxyCommand",
            "LocalCommand",
            "RemoteCommand",
            "KnownHostsCommand",
        ]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(k));
        if raw || !v.contains(char::is_whitespace) || v.starts_with('"') {
            text.push_str(&format!("{k} {v}\n"));
        } else {
            text.push_str(&format!("{k} \"{v}\"\n"));
        }
    }
    match &spec.ssh_config {
        Some(cfg) => text.push_str(&format!("Include \"{}\"\n", shellexpand_home(cfg))),
        None => {
            if let Ok(home) = std::env::var("HOME") {
                text.push_str(&format!("Include \"{home}/.ssh/config\"\n"));
            }
            text.push_str("Include /etc/ssh/ssh_config\n");
        }
    }
    let dir = private_dir()?;
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    };
    let path = dir.join(format!("ssh-options-{hash:016x}.conf"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        // Hosts with the same options connect at once from several threads: each writes its
        // own temporary file, so none renames away another's.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".ssh-options-{hash:016x}.{}.{n}",
            std::process::id()
        ));
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// `$XDG_RUNTIME_DIR/kvmforge` or `/tmp/kvmforge-UID`: made mode 700, and refused if it is
/// someone else's or a symlink.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("kvmforge"),
        _ => std::env::temp_dir().join(format!("kvmforge-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(&dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private directory of this user",
            dir.display()
        )));
    }
    Ok(dir)
}

fn shellexpand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}

impl Connection for SshConnection {
    fn run_script(&mut self, script: &str, become_: bool) -> Result<ScriptOutput, ConnectionError> {
        self.invocations += 1;
        let session = self.session.as_ref().ok_or_else(|| {
            ConnectionError::Unreachable(format!("{}: connection closed", self.name))
        })?;
        let (argv, preamble) = self.become_.wrap(become_, self.root);
        let input = [preamble, script.as_bytes().to_vec()].concat();
        let timeout = self.timeout;
        let name = self.name.clone();
        let session = &**session;
        let result = runtime().block_on(async {
            let work = async {
                let mut cmd = session.command(&argv[0]);
                cmd.args(&argv[1..])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = cmd.spawn().await?;
                let mut stdin = child.stdin().take().expect("piped stdin");
                let mut stdout = child.stdout().take().expect("piped stdout");
                let mut stderr = child.stderr().take().expect("piped stderr");
                let writer = async move {
                    let r = stdin.write_all(&input).await;
                    drop(stdin);
                    r
                };
                // stdout is read as it comes, to show at once that the script waits for
                // another run's lock.
                let reader = async {
                    let (mut buf, mut seen, mut chunk) = (Vec::new(), 0, vec![0u8; 65536]);
                    loop {
                        let n = stdout.read(&mut chunk).await?;
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        announce_waits(&name, &buf, &mut seen);
                    }
                    Ok::<_, std::io::Error>(buf)
                };
                let errors = async {
                    let mut e = Vec::new();
                    stderr.read_to_end(&mut e).await.map(|_| e)
                };
                let (w, out, err) = tokio::join!(writer, reader, errors);
                let _ = w;
                let status = child.wait().await?;
                Ok::<_, openssh::Error>(std::process::Output {
                    status,
                    stdout: out.map_err(openssh::Error::ChildIo)?,
                    stderr: err.map_err(openssh::Error::ChildIo)?,
                })
            };
            match timeout {
                Some(t) => tokio::time::timeout(t, work).await.map_err(|_| ()),
                None => Ok(work.await),
            }
        });
        let out = match result {
            Err(()) => {
                return Err(ConnectionError::Timeout {
                    host: name,
                    secs: timeout.map_or(0, |t| t.as_secs()),
                    lock_wait: None,
                })
            }
            Ok(Err(e)) => {
                // The channel failed: find out whether the master connection is gone.
                let alive = runtime().block_on(session.check()).is_ok();
                return Err(if alive {
                    ConnectionError::Io(format!("{name}: {e}"))
                } else {
                    ConnectionError::Unreachable(format!("{name}: connection lost ({e})"))
                });
            }
            Ok(Ok(out)) => out,
        };
        let status = out.status.code();
        if status == Some(255) && runtime().block_on(session.check()).is_err() {
            return Err(ConnectionError::Unreachable(format!(
                "{name}: connection lost"
            )));
        }
        if status != Some(0) {
            if let Some(msg) = become_failure(&out.stderr) {
                return Err(ConnectionError::Become(msg));
            }
        }
        Ok(ScriptOutput {
            status,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn invocations(&self) -> u32 {
        self.invocations
    }

    fn host_lock(&self) -> Option<&crate::remote::HostLock> {
        self.lock.as_ref()
    }

    fn as_root(&self, become_: bool) -> bool {
        become_ || self.root
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
        allowance: Duration,
    ) -> Result<Box<dyn Channel>, ConnectionError> {
        self.invocations += 1;
        let session = self.session.clone().ok_or_else(|| {
            ConnectionError::Unreachable(format!("{}: connection closed", self.name))
        })?;
        let (argv, preamble) = self.become_.wrap(become_, self.root);
        let spawned = runtime().block_on(async {
            let mut cmd = Session::to_command(session.clone(), argv[0].clone());
            cmd.args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().await
        });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let alive = runtime().block_on(session.check()).is_ok();
                return Err(if alive {
                    ConnectionError::Io(format!("{}: {e}", self.name))
                } else {
                    ConnectionError::Unreachable(format!("{}: connection lost ({e})", self.name))
                });
            }
        };
        let stdin = child.stdin().take().expect("piped stdin");
        let stdout = child.stdout().take().expect("piped stdout");
        let mut ch = SshChannel {
            host: self.name.clone(),
            child: Some(child),
            stdin: Some(stdin),
            stdout,
            pending: Vec::new(),
            timeout: self
                .timeout
                .map(|t| (t + allowance, t.as_secs(), allowance.as_secs())),
        };
        if !preamble.is_empty() {
            ch.send(&preamble)?;
        }
        Ok(Box::new(ch))
    }
}

impl Drop for SshConnection {
    fn drop(&mut self) {
        // The run locks go first: their channels hold the master.
        self.locks = HeldLocks::default();
        if let Some(s) = self.session.take() {
            if let Ok(s) = Arc::try_unwrap(s) {
                let _ = runtime().block_on(s.close());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ConnectionKind;

    /// Hosts with the same options connect at once, each from its own thread: every one gets
    /// the options file.
    #[test]
    fn options_files_are_written_safely_from_many_threads() {
        let spec = ConnectionSpec {
            kind: ConnectionKind::Ssh,
            address: "192.0.2.1".into(),
            user: None,
            port: None,
            key: None,
            jump: None,
            become_: None,
            host_key_checking: None,
            known_hosts: None,
            ssh_config: Some("/dev/null".into()),
            // Content of its own, so the file does not exist yet.
            ssh_options: vec![(
                "SetEnv".into(),
                format!(
                    "KF_TEST={}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                ),
            )],
            become_password: None,
        };
        let start = std::sync::Barrier::new(16);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        options_config(&spec)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results {
            let path = r.as_ref().expect("written");
            assert!(std::fs::read_to_string(path)
                .unwrap()
                .contains("SetEnv KF_TEST="));
        }
        let _ = std::fs::remove_file(results[0].as_ref().unwrap());
    }
}
