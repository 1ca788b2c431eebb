//! The built-in modules, grouped by family in folders (`files/`, `system/`, `kernel/`, `network/`, `libvirt/`, `services/`), with the
//! typed facts they share in `facts/` and the request pieces they share in `args.rs`. Every module is a pure planner (see [`crate::module`]);
//! this file only lists them.

pub mod args;
pub mod facts;
pub mod files;
pub mod kernel;
pub mod libvirt;
pub mod network;
pub mod services;
pub mod system;
#[cfg(test)]
pub mod testing;

use crate::module::DynModule;

/// Every built-in module, in the order `kvmforge modules` lists them.
pub static ALL: &[&dyn DynModule] = &[
    &system::authorized_key::AuthorizedKey,
    &files::blockinfile::BlockInFile,
    &system::command::Command,
    &files::copy::Copy,
    &services::dhcpd::Dhcpd,
    &files::file::File,
    &kernel::grub_cmdline::GrubCmdline,
    &kernel::hugepages::HugePagesModule,
    &kernel::kernel_module::KernelModule,
    &kernel::kvm_check::KvmCheck,
    &libvirt::config::LibvirtConfig,
    &libvirt::network::LibvirtNetworkModule,
    &libvirt::pool::LibvirtPoolModule,
    &libvirt::volume::LibvirtVolume,
    &files::lineinfile::LineInFile,
    &network::netplan_bridge::NetplanBridge,
    &network::nm_bridge::NmBridge,
    &system::package::Package,
    &system::proxy_env::ProxyEnv,
    &system::reboot::RebootModule,
    &system::service::Service,
    &system::command::Shell,
    &services::squid_proxy::SquidProxy,
    &services::ssh_tunnel::SshTunnel,
    &kernel::sysctl::Sysctl,
    &kernel::sysctl_bridge::SysctlBridge,
    &files::template::Template,
    &system::user::User,
    &kernel::vfio_bind::VfioBind,
    &network::vxlan::Vxlan,
];

/// The module called `name`.
pub fn find(name: &str) -> Option<&'static dyn DynModule> {
    ALL.iter().copied().find(|m| m.spec().name == name)
}

/// All module names.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|m| m.spec().name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ModuleError, PlanContext};
    use crate::params::{Args, ParamKind};
    use serde_json::{json, Map, Value};

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

    /// Sample values of each parameter kind.
    fn samples(kind: ParamKind) -> Vec<Value> {
        match kind {
            ParamKind::Str | ParamKind::Scalar => vec![json!("x")],
            ParamKind::Bool => vec![json!(true), json!(false)],
            ParamKind::Int => vec![json!(1)],
            ParamKind::Mode => vec![json!("0644")],
            ParamKind::Choice(c) => c.iter().map(|v| json!(v)).collect(),
            ParamKind::List => vec![json!(["x"])],
            ParamKind::Map => vec![json!({"k": "v"})],
            ParamKind::Data => vec![json!("x"), json!(["x"]), json!({"k": "v"})],
        }
    }

    /// Every parameter of every module, with every value of a choice, lands in a field of the
    /// module's typed request: a parameter the request does not read (a misspelt field, a
    /// choice without its enum variant) is an internal error here instead of a silently ignored
    /// argument. Other argument errors are fine: the samples are not meant to make sense.
    #[test]
    fn every_parameter_reaches_the_request() {
        for m in ALL {
            let spec = m.spec();
            let mut base = Map::new();
            for p in spec.params.iter().filter(|p| p.required) {
                base.insert(p.name.into(), samples(p.kind).remove(0));
            }
            for p in spec.params {
                for v in samples(p.kind) {
                    let mut raw = base.clone();
                    raw.insert(p.name.into(), v.clone());
                    let args = Args::validate(spec.params, &raw)
                        .unwrap_or_else(|e| panic!("{}.{} = {v}: {e}", spec.name, p.name));
                    if let Err(e @ ModuleError::Internal(_)) =
                        m.request(args, &PlanContext::default())
                    {
                        panic!("{}.{} = {v}: {e}", spec.name, p.name);
                    }
                }
            }
        }
    }
}
