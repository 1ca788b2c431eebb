//! SSH: a private key on the host, read without the secret ever leaving it.

use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, Observation, Probe};

/// Whether `word` is the type of a public key (`ssh-ed25519`, `ecdsa-sha2-nistp256`,
/// `sk-ssh-ed25519@openssh.com`, certificates).
pub fn is_key_type(word: Option<&str>) -> bool {
    word.is_some_and(|w| {
        w.starts_with("ssh-") || w.starts_with("ecdsa-sha2-") || w.starts_with("sk-")
    })
}

/// A private key file as the host sees it. The probe derives the public half on the host with
/// `ssh-keygen -y` instead of reading the file, so the private key is never transferred, and a
/// stale or missing `.pub` file next to it cannot mislead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKey {
    Absent,
    Present {
        /// Permission bits (`0o600`).
        mode: u32,
        /// `regular file`, `directory`, ... as `stat` names it.
        kind: String,
        /// The public key line `ssh-keygen -y` prints (its comment only with OpenSSH 7.9 and
        /// later), or `None` when it could not derive one (see `problem`).
        public: Option<String>,
        /// Why no public key could be derived: not a key, protected by a passphrase.
        problem: Option<String>,
    },
}

impl Fact for SshKey {
    const NAME: &'static str = "ssh private key";
    /// The private key's path.
    type Key = str;

    fn probe(path: &str) -> Probe {
        let p = shell_quote(path);
        Probe::Command(format!(
            "command -v ssh-keygen >/dev/null 2>&1 || {{ echo 'ssh-keygen not found: install the OpenSSH client' >&2; exit 3; }}; \
if [ ! -e {p} ] && [ ! -L {p} ]; then echo absent; exit 0; fi; \
stat -L -c 'mode %a %F' -- {p}; \
if [ -f {p} ]; then ssh-keygen -y -P '' -f {p} </dev/null 2>&1; fi"
        ))
    }

    fn parse(path: &str, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        if out.rc != 0 {
            return Err(format!(
                "cannot read the key {path} (rc {}): {}",
                out.rc,
                out.stderr.trim()
            ));
        }
        let mut lines = out.stdout.lines();
        let first = lines.next().unwrap_or_default();
        if first == "absent" {
            return Ok(SshKey::Absent);
        }
        let Some((mode, kind)) = first
            .strip_prefix("mode ")
            .and_then(|r| r.split_once(' '))
            .and_then(|(m, k)| Some((u32::from_str_radix(m, 8).ok()?, k)))
        else {
            return Err(format!(
                "unexpected output reading the key {path}: {first:?}"
            ));
        };
        // Every line after the first is ssh-keygen's (its key, or why it gave none).
        let said: Vec<&str> = lines.collect();
        let public = said
            .iter()
            .find(|l| is_key_type(l.split(' ').next()))
            .map(|l| l.trim().to_string());
        let problem = match (&public, kind) {
            (Some(_), _) => None,
            (None, "regular file") => Some(
                said.iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty())
                    .unwrap_or("ssh-keygen derived no public key")
                    .to_string(),
            ),
            (None, other) => Some(format!("it is a {other}, not a key file")),
        };
        Ok(SshKey::Present {
            mode,
            kind: kind.to_string(),
            public,
            problem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::run_here;

    fn parse(stdout: &str) -> SshKey {
        SshKey::parse("/k", &Observation::Command(CommandOutput::ok(stdout))).unwrap()
    }

    #[test]
    fn absent_present_and_unreadable_keys() {
        assert_eq!(parse("absent\n"), SshKey::Absent);
        assert_eq!(
            parse("mode 600 regular file\nssh-ed25519 AAAAC3Nz kvmforge-tunnel-v1\n"),
            SshKey::Present {
                mode: 0o600,
                kind: "regular file".into(),
                public: Some("ssh-ed25519 AAAAC3Nz kvmforge-tunnel-v1".into()),
                problem: None
            }
        );
        let SshKey::Present { problem, .. } = parse(
            "mode 644 regular file\nLoad key \"/k\": incorrect passphrase supplied to decrypt private key\n",
        ) else {
            panic!()
        };
        assert_eq!(
            problem.as_deref(),
            Some("Load key \"/k\": incorrect passphrase supplied to decrypt private key")
        );
        let SshKey::Present { problem, .. } = parse("mode 755 directory\n") else {
            panic!()
        };
        assert_eq!(
            problem.as_deref(),
            Some("it is a directory, not a key file")
        );
        let e = SshKey::parse(
            "/k",
            &Observation::Command(CommandOutput::failed(3, "ssh-keygen not found\n")),
        )
        .unwrap_err();
        assert!(e.contains("ssh-keygen not found"), "{e}");
    }

    /// The probe against this machine's ssh-keygen: a key made here reads back as its public
    /// half, and nothing of the private key is printed.
    #[test]
    fn probe_runs_in_a_real_shell() {
        if std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: no ssh-keygen here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let key = key.to_str().unwrap();
        assert_eq!(
            SshKey::parse(key, &run_here(&SshKey::probe(key))).unwrap(),
            SshKey::Absent
        );
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kf-test", "-f", key])
            .output()
            .unwrap();
        assert!(made.status.success());
        let seen = run_here(&SshKey::probe(key));
        let Observation::Command(c) = &seen else {
            panic!()
        };
        assert!(!c.stdout.contains("PRIVATE"), "{}", c.stdout);
        let pub_file = std::fs::read_to_string(format!("{key}.pub")).unwrap();
        match SshKey::parse(key, &seen).unwrap() {
            SshKey::Present { mode, public, .. } => {
                assert_eq!(mode, 0o600);
                let body = |s: &str| s.split(' ').take(2).collect::<Vec<_>>().join(" ");
                assert_eq!(body(&public.unwrap()), body(&pub_file));
            }
            other => panic!("{other:?}"),
        }
    }
}
