//! The built-in modules, one file each. Every module is a pure planner (see
//! [`crate::module`]); this file only lists them.

pub mod support;

mod blockinfile;
mod command;
mod copy;
mod file;
mod grub_cmdline;
mod kernel_module;
mod lineinfile;
mod package;
mod service;
mod sysctl;
mod sysctl_bridge;
mod template;
mod user;

use crate::module::Module;

/// Every built-in module, in the order `kvmforge modules` lists them.
pub static ALL: &[&dyn Module] = &[
    &blockinfile::BlockInFile,
    &command::Command,
    &copy::Copy,
    &file::File,
    &grub_cmdline::GrubCmdline,
    &kernel_module::KernelModule,
    &lineinfile::LineInFile,
    &package::Package,
    &service::Service,
    &command::Shell,
    &sysctl::Sysctl,
    &sysctl_bridge::SysctlBridge,
    &template::Template,
    &user::User,
];

/// The module called `name`.
pub fn find(name: &str) -> Option<&'static dyn Module> {
    ALL.iter().copied().find(|m| m.spec().name == name)
}

/// All module names.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|m| m.spec().name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Args;

    /// Every module's defaults must satisfy its own parameter table, and names are unique.
    #[test]
    fn specs_are_consistent() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            let spec = m.spec();
            assert!(seen.insert(spec.name), "duplicate module {}", spec.name);
            assert!(
                !spec.summary.is_empty() && !spec.example.is_empty(),
                "{}",
                spec.name
            );
            for p in spec.params {
                if let Some(d) = p.default {
                    assert!(
                        serde_yaml::from_str::<serde_yaml::Value>(d).is_ok(),
                        "{}.{}",
                        spec.name,
                        p.name
                    );
                }
            }
            if let Some(ff) = spec.free_form {
                assert!(spec.params.iter().any(|p| p.name == ff), "{}", spec.name);
            }
            // The example parses as a task list whose first task uses this module.
            let ex: serde_yaml::Value = serde_yaml::from_str(spec.example).expect(spec.name);
            let task = ex.as_sequence().and_then(|s| s.first()).expect(spec.name);
            let args = task.get(spec.name).expect(spec.name);
            if let serde_yaml::Value::Mapping(_) = args {
                let json: serde_json::Value = serde_yaml::from_value(args.clone()).unwrap();
                let templated = json.to_string().contains("{{");
                if !templated {
                    Args::from_json(spec.params, json)
                        .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
                }
            }
        }
    }
}
