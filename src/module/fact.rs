//! Typed facts: each reading of a host (`ip -j addr`, the PCI tree, `systemctl show UNIT`,
//! `virsh net-dumpxml NET`) has one probe, one parser and one type, shared by every module that
//! needs it.
//!
//! A planner lists `F::probe(key)` among its probes and reads `observed.fact::<F>(key)` when it
//! plans. The engine observes equal probes once per round trip whoever asked for them, and
//! [`Observed`](super::Observed) parses each observation at most once per fact type, so twenty
//! tasks asking for the host's addresses cost one `ip -j addr` and one parse.
//!
//! The built-in facts live in `modules/facts/`, one file per family, each with fixture tests of
//! real hosts' output in `tests/facts/`.

use super::{CommandOutput, Observation, Probe};

/// A typed reading of a host.
pub trait Fact: Sized + Send + Sync + 'static {
    /// A short name for messages (`ip addresses`, `systemd unit`).
    const NAME: &'static str;
    /// What selects one reading among many of this kind: `str` for a unit, a network, a path;
    /// `()` for host-wide readings.
    type Key: ?Sized;
    /// The probe that observes it. Must not change the host: it also runs in check mode.
    fn probe(key: &Self::Key) -> Probe;
    /// Parse what the probe saw. An `Err` says, for the user, how the host differs from what the
    /// fact expects (`systemctl not found: this host does not run systemd`); it fails the task
    /// that asked as a [`ModuleError::Host`](super::ModuleError::Host).
    fn parse(key: &Self::Key, seen: &Observation) -> Result<Self, String>;
}

/// The command output of an observation, for facts read by a command.
pub fn command_output(seen: &Observation) -> Result<&CommandOutput, String> {
    match seen {
        Observation::Command(c) => Ok(c),
        Observation::Error(e) => Err(e.clone()),
        Observation::File(_) => Err("expected command output, got a file".into()),
    }
}

/// The stdout of a command that must have succeeded.
pub fn stdout_of(seen: &Observation) -> Result<&str, String> {
    let c = command_output(seen)?;
    if c.rc != 0 {
        return Err(format!(
            "exit code {}: {}",
            c.rc,
            c.stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
        ));
    }
    Ok(&c.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ModuleError, Observed};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static PARSES: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug, PartialEq)]
    struct Words(Vec<String>);

    impl Fact for Words {
        const NAME: &'static str = "words";
        type Key = str;
        fn probe(key: &str) -> Probe {
            Probe::Command(format!("echo {key}"))
        }
        fn parse(_key: &str, seen: &Observation) -> Result<Self, String> {
            PARSES.fetch_add(1, Ordering::SeqCst);
            let out = stdout_of(seen)?;
            if out.contains('!') {
                return Err("a bang".into());
            }
            Ok(Words(out.split_whitespace().map(str::to_string).collect()))
        }
    }

    #[test]
    fn parsed_once_per_observation_and_dropped_with_it() {
        let mut o = Observed::new()
            .with_fact::<Words>("a b", Observation::Command(CommandOutput::ok("a b\n")));
        let before = PARSES.load(Ordering::SeqCst);
        assert_eq!(o.fact::<Words>("a b").unwrap().0, ["a", "b"]);
        assert_eq!(o.fact::<Words>("a b").unwrap().0, ["a", "b"]);
        let copy = o.clone();
        assert_eq!(copy.fact::<Words>("a b").unwrap().0, ["a", "b"]);
        assert_eq!(PARSES.load(Ordering::SeqCst) - before, 1);
        o.insert(
            Words::probe("a b"),
            Observation::Command(CommandOutput::ok("c\n")),
        );
        assert_eq!(o.fact::<Words>("a b").unwrap().0, ["c"]);
    }

    #[test]
    fn parse_failures_are_host_states_and_probe_failures_observation_errors() {
        let o = Observed::new()
            .with_fact::<Words>("x", Observation::Command(CommandOutput::ok("!")))
            .with_fact::<Words>("y", Observation::Command(CommandOutput::failed(1, "no\n")))
            .with_fact::<Words>("z", Observation::Error("permission denied".into()));
        let e = o.fact::<Words>("x").unwrap_err();
        assert_eq!(e, ModuleError::Host("a bang".into()));
        let e = o.fact::<Words>("y").unwrap_err();
        assert_eq!(e, ModuleError::Host("exit code 1: no".into()));
        assert!(
            matches!(o.fact::<Words>("z"), Err(ModuleError::Observe(m)) if m.contains("permission denied"))
        );
        assert!(matches!(
            o.fact::<Words>("w"),
            Err(ModuleError::NotObserved(_))
        ));
    }
}
