//! `kernel_module`: a kernel module loaded (with options) or unloaded, now and at boot.
//!
//! Loading is observed in /proc/modules, where the kernel lists modules under their canonical
//! name (`vfio-pci` is `vfio_pci`); built-in modules never appear there but have
//! /sys/module/NAME (when they have parameters) or a line in modules.builtin. Options of a loaded
//! module can only change by reloading it, which fails while it is in use (kvm_intel with VMs
//! running), so that is opt-in.

use super::module_name;
use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, FileKind, Module, ModuleError, ModuleSpec,
    Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::modules::facts::kmod::{ModuleQuery, ModuleState};
use crate::modules::files::edit;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct KernelModule;

static SPEC: ModuleSpec = ModuleSpec {
    name: "kernel_module",
    summary: "Load or unload a kernel module, with options, now and at boot",
    description: "`state: present` runs `modprobe NAME PARAMS` when the module is not in \
/proc/modules (names compare with `-` and `_` equal, as the kernel does; give the module's real \
name, not an alias, or it is loaded on every run). When it is loaded and `params` are given, each \
option is compared with /sys/module/NAME/parameters/OPTION (booleans compare as the kernel reads \
them: Y, y, 1, on are equal); options the module does not expose there are not compared and are \
listed in `unverified_params`. If they differ, `reload: true` runs `modprobe -r NAME && modprobe \
NAME PARAMS` (fails while the module is in use); otherwise nothing is run, `msg` says what \
differs and `reboot_required` is set when `persistent` makes the options apply at the next boot. \
A module built into the kernel needs no loading; differing options on a built-in module are an \
error (they can only be set on the kernel command line as NAME.OPTION=VALUE, see \
`grub_cmdline`).\n\n\
With `persistent: true` (default) /etc/modules-load.d/NAME.conf contains `NAME` and, when \
`params` is given, /etc/modprobe.d/NAME.conf contains `options NAME PARAMS`; both are compared as \
whole files and rewritten when different (without `params` the options file is not managed). \
`state: absent` runs `modprobe -r NAME` when loaded (unused dependencies go too) and, with \
`persistent`, removes both files; it does not blacklist the module, so udev or a dependent module \
may still load it.",
    params: &[
        ParamSpec::required(
            "name",
            ParamKind::Str,
            "Module name, e.g. kvm_intel or vfio-pci",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "present loads the module, absent unloads it",
        ),
        ParamSpec::optional(
            "params",
            ParamKind::Str,
            "Module options separated by spaces, e.g. \"nested=1\"",
        ),
        ParamSpec::with_default(
            "persistent",
            ParamKind::Bool,
            "true",
            "Also load it at boot (modules-load.d) with its options (modprobe.d)",
        ),
        ParamSpec::with_default(
            "reload",
            ParamKind::Bool,
            "false",
            "Unload and load a loaded module whose options differ",
        ),
    ],
    free_form: None,
    example: r#"- name: Nested virtualisation
  kernel_module:
    name: kvm_intel
    params: nested=1
"#,
};

/// A `kernel_module` task's arguments as given.
/// A `kernel_module` task's arguments as given.
#[derive(Deserialize)]
struct Params {
    name: String,
    state: Presence,
    params: Option<String>,
    persistent: bool,
    reload: bool,
}

/// A `kernel_module` task's arguments, checked.
pub struct Request {
    /// As given: used for modprobe and the file names.
    name: String,
    /// With underscores: how /proc/modules and /sys/module name it.
    canonical: String,
    /// `option=value` or bare `option` words.
    params: Vec<String>,
    present: bool,
    persistent: bool,
    reload: bool,
}

impl Request {
    fn load_conf(&self) -> String {
        format!("/etc/modules-load.d/{}.conf", self.name)
    }
    fn options_conf(&self) -> String {
        format!("/etc/modprobe.d/{}.conf", self.name)
    }
    fn sys_dir(&self) -> String {
        format!("/sys/module/{}", self.canonical)
    }
    fn modprobe(&self) -> String {
        let mut cmd = format!("modprobe {}", shell_quote(&self.name));
        for p in &self.params {
            cmd.push(' ');
            cmd.push_str(&shell_quote(p));
        }
        cmd
    }
    /// What the kernel is asked about the module: modules.builtin and the given options.
    fn query(&self) -> ModuleQuery {
        ModuleQuery {
            name: self.canonical.clone(),
            options: self.params.iter().map(|p| option_name(p)).collect(),
        }
    }
}

/// An option's name as sysfs spells it (the kernel treats `-` and `_` alike in option names).
fn option_name(word: &str) -> String {
    word.split_once('=')
        .map_or(word, |(k, _)| k)
        .replace('-', "_")
}

/// The value an option word sets; a bare boolean option means true.
fn option_value(word: &str) -> &str {
    word.split_once('=').map_or("1", |(_, v)| v)
}

/// kstrtobool(): how the kernel reads a boolean option.
fn kernel_bool(v: &str) -> Option<bool> {
    let mut c = v.chars();
    match (c.next(), c.next()) {
        (Some('y' | 'Y' | '1'), _) => Some(true),
        (Some('n' | 'N' | '0'), _) => Some(false),
        (Some('o' | 'O'), Some('n' | 'N')) => Some(true),
        (Some('o' | 'O'), Some('f' | 'F')) => Some(false),
        _ => None,
    }
}

/// Whether a live sysfs value is what `wanted` sets. Boolean options show as Y/N.
fn same_value(live: &str, wanted: &str) -> bool {
    if live == wanted {
        return true;
    }
    if live == "Y" || live == "N" {
        return kernel_bool(wanted) == Some(live == "Y");
    }
    matches!((live.parse::<i64>(), wanted.parse::<i64>()), (Ok(a), Ok(b)) if a == b)
}

impl Module for KernelModule {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        let name = p.name.trim().to_string();
        let canonical = module_name("name", &name)?;
        let params: Vec<String> = p
            .params
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for word in &params {
            let opt = option_name(word);
            if opt.is_empty() || !opt.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(
                    ArgError::invalid("params", format!("invalid module option {word:?}")).into(),
                );
            }
            if word.contains(['"', '\'', '\\']) {
                return Err(ArgError::invalid(
                    "params",
                    format!("module option {word:?}: quoted values are not supported"),
                )
                .into());
            }
        }
        let present = p.state == Presence::Present;
        if !present && !params.is_empty() {
            return Err(ArgError::conflict(
                "params",
                "state",
                "params cannot be given with state=absent",
            )
            .into());
        }
        Ok(Request {
            canonical,
            name,
            params,
            present,
            persistent: p.persistent,
            reload: p.reload,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        let mut probes = vec![
            Probe::File("/proc/modules".into()),
            Probe::File(r.sys_dir()),
            ModuleState::probe(&r.query()),
        ];
        if r.persistent {
            probes.push(Probe::File(r.load_conf()));
            if !r.params.is_empty() || !r.present {
                probes.push(Probe::File(r.options_conf()));
            }
        }
        probes
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let proc_modules = observed.file("/proc/modules")?;
        let loaded = edit::existing_text("/proc/modules", proc_modules)?
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(r.canonical.as_str()));
        let state = observed.fact::<ModuleState>(&r.query())?;
        let builtin =
            !loaded && (observed.file(&r.sys_dir())?.kind == FileKind::Dir || state.listed_builtin);

        let mut plan = Plan::ok()
            .with_data("name", r.name.clone())
            .with_data("loaded", loaded)
            .with_data("builtin", builtin);

        if !r.present {
            if builtin {
                return Err(ModuleError::Host(format!(
                    "{} is built into the kernel and cannot be unloaded",
                    r.name
                )));
            }
            if loaded {
                plan.change(
                    Change::new(format!("unload {}", r.name)),
                    [Action::run(format!("modprobe -r {}", shell_quote(&r.name)))],
                );
            }
            if r.persistent {
                for path in [r.load_conf(), r.options_conf()] {
                    edit::ensure_absent(&mut plan, &path, observed.file(&path)?);
                }
            }
            return Ok(plan);
        }

        // Options of a loaded or built-in module, as far as sysfs shows them.
        let mut differing = Vec::new();
        let mut unverified = Vec::new();
        if loaded || builtin {
            for p in &r.params {
                let opt = option_name(p);
                match state.option(&opt) {
                    Some(v) if same_value(v, option_value(p)) => {}
                    Some(v) => differing.push(format!("{opt}={v} (wanted {})", option_value(p))),
                    None => unverified.push(opt),
                }
            }
        }
        if builtin && !differing.is_empty() {
            return Err(ModuleError::Host(format!(
                "{} is built into the kernel: its options ({}) cannot change at runtime or through \
                 /etc/modprobe.d; put {} on the kernel command line (grub_cmdline)",
                r.name,
                differing.join(", "),
                r.params
                    .iter()
                    .map(|p| format!("{}.{}", r.canonical, p))
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }

        if r.persistent {
            let attrs = Attrs::default();
            let load = r.load_conf();
            let content = format!("{}\n", r.name);
            edit::ensure_content(
                &mut plan,
                &load,
                observed.file(&load)?,
                content.as_bytes(),
                &attrs,
                false,
            )?;
            if !r.params.is_empty() {
                let opts = r.options_conf();
                let content = format!("options {} {}\n", r.name, r.params.join(" "));
                edit::ensure_content(
                    &mut plan,
                    &opts,
                    observed.file(&opts)?,
                    content.as_bytes(),
                    &attrs,
                    false,
                )?;
            }
        }

        if !loaded && !builtin {
            let what = if r.params.is_empty() {
                format!("load {}", r.name)
            } else {
                format!("load {} ({})", r.name, r.params.join(" "))
            };
            plan.change(Change::new(what), [Action::run(r.modprobe())]);
        } else if !differing.is_empty() {
            if r.reload {
                plan.change(
                    Change::new(format!("reload {}: {}", r.name, differing.join(", "))),
                    [Action::run(format!(
                        "modprobe -r {} && {}",
                        shell_quote(&r.name),
                        r.modprobe()
                    ))],
                );
            } else {
                let when = if r.persistent {
                    plan.reboot_required = true;
                    "after `reload: true` or a reboot"
                } else {
                    "only after `reload: true`"
                };
                plan.msg = Some(format!(
                    "{} is loaded with {}; the options apply {when}",
                    r.name,
                    differing.join(", ")
                ));
            }
        }
        if !unverified.is_empty() {
            plan.data
                .insert("unverified_params".into(), unverified.into());
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, req};
    use serde_json::json;

    const MODULES_LOADED: &str = "kvm_intel 372736 0 - Live 0x0000000000000000\n\
kvm 1142784 1 kvm_intel, Live 0x0000000000000000\nvfio_pci 16384 0 - Live 0x0000000000000000\n";
    const LOAD: &str = "/etc/modules-load.d/kvm_intel.conf";
    const OPTS: &str = "/etc/modprobe.d/kvm_intel.conf";

    fn args(v: serde_json::Value) -> Request {
        req(&KernelModule, v)
    }

    fn state_cmd(r: &Request) -> String {
        match ModuleState::probe(&r.query()) {
            Probe::Command(cmd) => cmd,
            other => panic!("{other:?}"),
        }
    }

    /// A host's observations: /proc/modules, whether /sys/module/NAME is there, the state
    /// command's output, and the two configuration files.
    fn host(
        r: &Request,
        modules: &str,
        sys: bool,
        state: &str,
        load: FileState,
        opts: FileState,
    ) -> Observed {
        Observed::new()
            .with_file("/proc/modules", FileState::file(modules))
            .with_file(
                &r.sys_dir(),
                if sys {
                    FileState::dir()
                } else {
                    FileState::absent()
                },
            )
            .with_fact::<ModuleState>(&r.query(), Observation::Command(CommandOutput::ok(state)))
            .with_file(&r.load_conf(), load)
            .with_file(&r.options_conf(), opts)
    }

    fn plan(r: &Request, obs: &Observed) -> Plan {
        KernelModule.plan(r, obs).unwrap()
    }

    fn nested() -> Request {
        args(json!({"name": "kvm_intel", "params": "nested=1"}))
    }

    #[test]
    fn state_command_is_quoted_and_read_only() {
        assert_eq!(
            state_cmd(&nested()),
            "grep -Eqs '/kvm[-_]intel\\.ko$' \"/lib/modules/$(uname -r)/modules.builtin\" && echo builtin; \
             cd /sys/module/kvm_intel/parameters 2>/dev/null && for p in nested; do [ -r \"$p\" ] && \
             printf '%s=%s\\n' \"$p\" \"$(cat \"$p\")\"; done; true"
        );
        assert_eq!(
            state_cmd(&args(json!({"name": "vfio-pci"}))),
            "grep -Eqs '/vfio[-_]pci\\.ko$' \"/lib/modules/$(uname -r)/modules.builtin\" && echo builtin; true"
        );
    }

    #[test]
    fn fresh_host_loads_and_persists() {
        let a = nested();
        let obs = host(
            &a,
            "kvm 1 0 - Live 0x0\n",
            false,
            "",
            FileState::absent(),
            FileState::absent(),
        );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::write(LOAD, "kvm_intel\n", Attrs::default(), false),
                Action::write(
                    OPTS,
                    "options kvm_intel nested=1\n",
                    Attrs::default(),
                    false
                ),
                Action::run("modprobe kvm_intel nested=1"),
            ]
        );
        assert_eq!(p.changes.len(), 3);
        assert!(!p.reboot_required);
    }

    #[test]
    fn converged_host_is_ok() {
        let a = nested();
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "nested=Y\n",
            FileState::file("kvm_intel\n"),
            FileState::file("options kvm_intel nested=1\n"),
        );
        let p = plan(&a, &obs);
        assert!(!p.changed(), "{:?}", p.changes);
        assert!(!p.reboot_required);
        assert_eq!(p.msg, None);
    }

    #[test]
    fn dash_and_underscore_names_are_the_same_module() {
        let a = args(json!({"name": "vfio-pci"}));
        assert_eq!(a.sys_dir(), "/sys/module/vfio_pci");
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "",
            FileState::file("vfio-pci\n"),
            FileState::absent(),
        );
        assert!(!plan(&a, &obs).changed());
        // Without params the options file is neither probed nor managed.
        assert!(!KernelModule
            .probes(&a)
            .contains(&Probe::File("/etc/modprobe.d/vfio-pci.conf".into())));
    }

    #[test]
    fn loaded_with_other_options_reports_reboot_without_reload() {
        let a = nested();
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "nested=N\n",
            FileState::file("kvm_intel\n"),
            FileState::absent(),
        );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![Action::write(
                OPTS,
                "options kvm_intel nested=1\n",
                Attrs::default(),
                false
            )]
        );
        assert!(p.reboot_required);
        assert!(
            p.msg.as_deref().unwrap().contains("nested=N (wanted 1)"),
            "{:?}",
            p.msg
        );
        // Next run: persisted, still loaded with the old value: no change, still needs a reboot.
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "nested=N\n",
            FileState::file("kvm_intel\n"),
            FileState::file("options kvm_intel nested=1\n"),
        );
        let p = plan(&a, &obs);
        assert!(!p.changed());
        assert!(p.reboot_required);
    }

    #[test]
    fn reload_true_reloads_the_module() {
        let a = args(json!({"name": "kvm_intel", "params": "nested=1", "reload": true}));
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "nested=N\n",
            FileState::file("kvm_intel\n"),
            FileState::file("options kvm_intel nested=1\n"),
        );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![Action::run(
                "modprobe -r kvm_intel && modprobe kvm_intel nested=1"
            )]
        );
        assert!(!p.reboot_required);
    }

    #[test]
    fn not_persistent_touches_no_files() {
        let a = args(json!({"name": "kvm_intel", "params": "nested=1", "persistent": false}));
        let probes = KernelModule.probes(&a);
        assert_eq!(probes.len(), 3);
        let obs = host(&a, "", false, "", FileState::absent(), FileState::absent());
        assert_eq!(
            plan(&a, &obs).actions,
            vec![Action::run("modprobe kvm_intel nested=1")]
        );
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "nested=N\n",
            FileState::absent(),
            FileState::absent(),
        );
        let p = plan(&a, &obs);
        assert!(!p.changed() && !p.reboot_required);
        assert!(p.msg.unwrap().contains("only after"));
    }

    #[test]
    fn option_values_compare_as_the_kernel_reads_them() {
        assert!(same_value("Y", "1") && same_value("Y", "y") && same_value("Y", "on"));
        assert!(same_value("N", "0") && same_value("N", "off") && !same_value("N", "1"));
        assert!(same_value("1", "01") && !same_value("1", "2"));
        assert!(same_value("Y", option_value("nested")));
        // Options sysfs does not show are reported, not reloaded for.
        let a = args(json!({"name": "kvm_intel", "params": "nested=1 secret=3"}));
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "nested=Y\n",
            FileState::file("kvm_intel\n"),
            FileState::file("options kvm_intel nested=1 secret=3\n"),
        );
        let p = plan(&a, &obs);
        assert!(!p.changed());
        assert_eq!(p.data["unverified_params"], json!(["secret"]));
    }

    /// A kernel without loadable modules (no /proc/modules) where kvm is built in and shows its
    /// options in sysfs.
    #[test]
    fn real_host_with_builtin_kvm() {
        let a = args(json!({
            "name": "kvm", "params": "enable_pmu=0 eager_page_split=1 nosuch=1", "persistent": false
        }));
        let obs = Observed::new()
            .with_file("/proc/modules", FileState::absent())
            .with_file("/sys/module/kvm", FileState::dir())
            .with_fact::<ModuleState>(
                &a.query(),
                Observation::Command(CommandOutput::ok(&fixture(
                    "kernel_module_state/kvm-builtin-bool-options.txt",
                ))),
            );
        let p = plan(&a, &obs);
        assert!(!p.changed());
        assert_eq!(p.data["builtin"], json!(true));
        assert_eq!(p.data["unverified_params"], json!(["nosuch"]));
        let a = args(json!({"name": "kvm", "params": "enable_pmu=1", "persistent": false}));
        let obs = obs.with_fact::<ModuleState>(
            &a.query(),
            Observation::Command(CommandOutput::ok(&fixture(
                "kernel_module_state/kvm-builtin-bool-options.txt",
            ))),
        );
        let e = KernelModule.plan(&a, &obs).unwrap_err();
        assert!(e.to_string().contains("enable_pmu=N (wanted 1)"), "{e}");
    }

    #[test]
    fn builtin_module() {
        let a = args(json!({"name": "kvm_intel", "persistent": false}));
        let obs = host(
            &a,
            "",
            false,
            "builtin\n",
            FileState::absent(),
            FileState::absent(),
        );
        let p = plan(&a, &obs);
        assert!(!p.changed());
        assert_eq!(p.data["builtin"], json!(true));
        // Built-in with matching options: fine; with other options: the command line is the way.
        let a = nested();
        let obs = host(
            &a,
            "",
            true,
            "nested=Y\n",
            FileState::file("kvm_intel\n"),
            FileState::file("options kvm_intel nested=1\n"),
        );
        assert!(!plan(&a, &obs).changed());
        let obs = host(
            &a,
            "",
            true,
            "nested=N\n",
            FileState::absent(),
            FileState::absent(),
        );
        let e = KernelModule.plan(&a, &obs).unwrap_err();
        assert!(e.to_string().contains("kvm_intel.nested=1"), "{e}");
        // Cannot be unloaded.
        let a = args(json!({"name": "kvm_intel", "state": "absent"}));
        let obs = host(&a, "", true, "", FileState::absent(), FileState::absent());
        assert!(matches!(
            KernelModule.plan(&a, &obs),
            Err(ModuleError::Host(_))
        ));
    }

    #[test]
    fn absent_unloads_and_removes_files() {
        let a = args(json!({"name": "kvm_intel", "state": "absent"}));
        let obs = host(
            &a,
            MODULES_LOADED,
            true,
            "",
            FileState::file("kvm_intel\n"),
            FileState::file("options kvm_intel nested=1\n"),
        );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::run("modprobe -r kvm_intel"),
                Action::Remove { path: LOAD.into() },
                Action::Remove { path: OPTS.into() },
            ]
        );
        let obs = host(
            &a,
            "kvm 1 0 - Live 0x0\n",
            false,
            "",
            FileState::absent(),
            FileState::absent(),
        );
        assert!(!plan(&a, &obs).changed());
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let invalid = ArgErrorKind::Invalid;
        for (bad, kind, param) in [
            (json!({"name": "../etc/passwd"}), invalid, "name"),
            (json!({"name": "kvm intel"}), invalid, "name"),
            (json!({"name": ""}), invalid, "name"),
            (json!({"name": "-r"}), invalid, "name"),
            (
                json!({"name": "kvm_intel", "params": "=1"}),
                invalid,
                "params",
            ),
            (
                json!({"name": "kvm_intel", "params": "nested=\"1\""}),
                invalid,
                "params",
            ),
            (
                json!({"name": "kvm_intel", "params": "a;b=1"}),
                invalid,
                "params",
            ),
            (
                json!({"name": "kvm_intel", "state": "absent", "params": "nested=1"}),
                ArgErrorKind::Conflict { with: "state" },
                "params",
            ),
        ] {
            let e = arg_error(&KernelModule, bad.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{bad}");
        }
    }

    #[test]
    fn unreadable_proc_modules_is_an_error() {
        let a = nested();
        let obs = host(&a, "", false, "", FileState::absent(), FileState::absent())
            .with_file("/proc/modules", FileState::dir());
        assert!(KernelModule.plan(&a, &obs).is_err());
    }
}
