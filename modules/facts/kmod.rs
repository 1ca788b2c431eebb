//! Kernel modules: whether the running kernel has one built in, and the live values of its
//! options.
//!
//! Whether a module is loaded comes from /proc/modules and whether it is built in with
//! parameters from the /sys/module/NAME directory, both plain file probes; this fact reads what
//! files alone cannot: the running kernel's modules.builtin (its path depends on `uname -r`) and
//! the values of the options asked about.

use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, Observation, Probe};

/// Which module and which of its options to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleQuery {
    /// The module name (`-` and `_` match either in modules.builtin).
    pub name: String,
    /// Option names as sysfs spells them (underscores).
    pub options: Vec<String>,
}

/// One kernel module as the running kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleState {
    /// The kernel's modules.builtin lists it: it is part of the kernel, never in /proc/modules.
    pub listed_builtin: bool,
    /// `(option, value)` for each asked option the module exposes in
    /// /sys/module/NAME/parameters, in the order asked; booleans show as `Y`/`N`. A module that is
    /// neither loaded nor built in shows none.
    pub options: Vec<(String, String)>,
}

impl ModuleState {
    /// The live value of an option, when sysfs shows it.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Fact for ModuleState {
    const NAME: &'static str = "kernel module state";
    type Key = ModuleQuery;

    /// A read-only command printing `builtin` when modules.builtin lists the module, then
    /// `option=value` for each asked option the module exposes in sysfs. It always exits 0: a
    /// missing modules.builtin or parameters directory means "no".
    fn probe(q: &ModuleQuery) -> Probe {
        let pattern: String = q
            .name
            .chars()
            .map(|c| {
                if c == '-' || c == '_' {
                    "[-_]".to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        let mut cmd = format!(
            "grep -Eqs {} \"/lib/modules/$(uname -r)/modules.builtin\" && echo builtin",
            shell_quote(&format!("/{pattern}\\.ko$"))
        );
        if !q.options.is_empty() {
            let names: Vec<String> = q.options.iter().map(|o| shell_quote(o)).collect();
            cmd.push_str(&format!(
                "; cd {}/parameters 2>/dev/null && for p in {}; do [ -r \"$p\" ] && printf '%s=%s\\n' \"$p\" \"$(cat \"$p\")\"; done",
                shell_quote(&format!("/sys/module/{}", q.name.replace('-', "_"))),
                names.join(" ")
            ));
        }
        cmd.push_str("; true");
        Probe::Command(cmd)
    }

    fn parse(_q: &ModuleQuery, seen: &Observation) -> Result<Self, String> {
        let mut lines = command_output(seen)?.stdout.lines().peekable();
        let listed_builtin = lines.next_if_eq(&"builtin").is_some();
        let options = lines
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(ModuleState {
            listed_builtin,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::fixture;

    fn query(name: &str, options: &[&str]) -> ModuleQuery {
        ModuleQuery {
            name: name.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    fn parse(q: &ModuleQuery, file: &str) -> ModuleState {
        let out = CommandOutput::ok(&fixture(&format!("kernel_module_state/{file}")));
        ModuleState::parse(q, &Observation::Command(out)).unwrap()
    }

    #[test]
    fn probe_is_quoted_and_read_only() {
        assert_eq!(
            ModuleState::probe(&query("kvm_intel", &["nested"])),
            Probe::Command(
                "grep -Eqs '/kvm[-_]intel\\.ko$' \"/lib/modules/$(uname -r)/modules.builtin\" && echo builtin; \
                 cd /sys/module/kvm_intel/parameters 2>/dev/null && for p in nested; do [ -r \"$p\" ] && \
                 printf '%s=%s\\n' \"$p\" \"$(cat \"$p\")\"; done; true"
                    .into()
            )
        );
        assert_eq!(
            ModuleState::probe(&query("vfio-pci", &[])),
            Probe::Command(
                "grep -Eqs '/vfio[-_]pci\\.ko$' \"/lib/modules/$(uname -r)/modules.builtin\" && echo builtin; true"
                    .into()
            )
        );
    }

    /// A kernel without loadable modules (no /lib/modules) where kvm and loop are built in and
    /// show their parameters in sysfs.
    #[test]
    fn builtin_modules_show_their_options() {
        let q = query("kvm", &["enable_pmu", "eager_page_split", "nosuch"]);
        let kvm = parse(&q, "kvm-builtin-bool-options.txt");
        assert!(!kvm.listed_builtin);
        assert_eq!(kvm.option("enable_pmu"), Some("N"));
        assert_eq!(kvm.option("eager_page_split"), Some("Y"));
        assert_eq!(kvm.option("nosuch"), None);
        let q = query("loop", &["max_loop", "max_part"]);
        let looped = parse(&q, "loop-builtin-int-options.txt");
        assert_eq!(
            looped.options,
            [
                ("max_loop".into(), "8".into()),
                ("max_part".into(), "0".into())
            ]
        );
    }

    #[test]
    fn missing_module_shows_nothing() {
        let q = query("vfio_pci", &["ids"]);
        assert_eq!(
            parse(&q, "vfio_pci-missing.txt"),
            ModuleState {
                listed_builtin: false,
                options: Vec::new()
            }
        );
    }

    #[test]
    fn builtin_line_comes_first() {
        let q = query("kvm_intel", &["nested"]);
        let seen = Observation::Command(CommandOutput::ok("builtin\nnested=Y\n"));
        let s = ModuleState::parse(&q, &seen).unwrap();
        assert!(s.listed_builtin);
        assert_eq!(s.option("nested"), Some("Y"));
    }
}
