//! `libvirt_pool`: a libvirt storage pool (dir, fs, netfs, logical): its definition, whether it
//! runs and starts at boot, and its removal.
//!
//! Decided from three readings: the pool's persistent definition and state ([`LibvirtPool`]),
//! its volumes ([`LibvirtVolumes`], so that nothing holding guests' disks is redefined or deleted
//! by accident; both from the pool's one probe), and whether its target exists (the directory, or for a logical pool the volume
//! group), which is when `pool-build` is needed. Data is never deleted unless asked with
//! `delete: true`.

use crate::module::{
    shell_quote, Action, ArgError, Change, Fact, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::modules::args::absolute_path;
use crate::modules::facts::block::BlockSignature;
use crate::modules::facts::libvirt::{LibvirtPool, Pool};
use crate::modules::facts::libvirt_volume::LibvirtVolumes;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct LibvirtPoolModule;

static SPEC: ModuleSpec = ModuleSpec {
    name: "libvirt_pool",
    summary: "Manage a libvirt storage pool (dir, fs, netfs, logical): define, build, start, autostart, remove",
    description: "Observes the pool with one `virsh` running `pool-dumpxml --inactive`, `pool-info` \
and `vol-list` (and, when it lists volumes, one more with the `vol-dumpxml` of each), and whether \
its target exists (the directory; for a logical pool the volume group, with `vgs`). Everything \
runs with `virsh -c qemu:///system`.\n\n\
The wanted definition (type, target path, source, and the target directory's permissions) \
is compared with the persistent one after leaving out what libvirt adds itself (uuid, sizes, the \
permissions and source format when not given). A missing pool is defined with `virsh pool-define` \
from an XML file written to a temporary file on the host. A differing one is redefined (keeping \
its uuid) and, when running, restarted so the new definition applies; if the pool runs and holds \
volumes this is refused unless `force: true`. Another `type` is always refused: remove the pool \
first. `--diff` shows the differing fields before and after.\n\n\
`pool-build` runs only when the target is missing and `build: true` (for fs and logical pools \
with `--no-overwrite`, so an existing file system or volume group is never formatted, unless \
`overwrite: true`). Before that the source devices are read with `blkid -p`: one that carries \
a file system, an LVM physical volume or a partition table is refused, naming what it carries \
(an fs pool whose device already has the wanted file system only gets its mount point). A new directory gets `permissions` from libvirt when it is built; those of an \
existing one are only recorded in the definition. `state: active` starts the pool, `inactive` stops it with `pool-destroy` \
(which keeps all data), `absent` stops and undefines it, keeping the data; with `delete: true` \
the data goes too (`pool-delete`: the directory, the file system's mount point contents, the \
volume group), refused while the pool holds volumes, or when its volumes cannot be listed because \
it is not running, unless `force: true`. `autostart` is set with `pool-autostart` independently \
of `state`.",
    params: &[
        ParamSpec::required("name", ParamKind::Str, "Storage pool name").aliases(&["pool"]),
        ParamSpec::with_default(
            "type",
            ParamKind::Choice(&["dir", "fs", "netfs", "logical"]),
            "dir",
            "Pool type: a directory, a block device's file system mounted on target, an NFS export mounted on target, or an LVM volume group",
        ),
        ParamSpec::optional(
            "target",
            ParamKind::Str,
            "Absolute path where the volumes appear (the directory or mount point); required except for logical pools, where it is /dev/<source_name>",
        ),
        ParamSpec::optional(
            "source_device",
            ParamKind::List,
            "Block devices: the one holding the file system (fs), the physical volumes of the volume group (logical)",
        ),
        ParamSpec::optional("source_host", ParamKind::Str, "NFS server (netfs)"),
        ParamSpec::optional("source_dir", ParamKind::Str, "Exported directory on source_host (netfs)"),
        ParamSpec::optional(
            "source_format",
            ParamKind::Str,
            "File system or label format: ext4, xfs (fs), nfs, cifs (netfs), lvm2 (logical); default: libvirt's",
        ),
        ParamSpec::optional(
            "source_name",
            ParamKind::Str,
            "Volume group name (logical); default: the pool's name",
        ),
        ParamSpec::optional(
            "permissions",
            ParamKind::Map,
            "The target directory's `mode` (octal string), `owner` and `group` (numeric ids), for dir, fs and netfs pools",
        ),
        ParamSpec::with_default("autostart", ParamKind::Bool, "true", "Start the pool at boot"),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["active", "inactive", "absent"]),
            "active",
            "active: defined and running; inactive: defined and stopped; absent: not defined (data kept unless delete: true)",
        ),
        ParamSpec::with_default(
            "build",
            ParamKind::Bool,
            "true",
            "Run pool-build when the target is missing",
        ),
        ParamSpec::with_default(
            "overwrite",
            ParamKind::Bool,
            "false",
            "Let pool-build format the source devices (fs, logical) even if they hold data",
        ),
        ParamSpec::with_default(
            "delete",
            ParamKind::Bool,
            "false",
            "With state: absent, also delete the pool's storage (pool-delete)",
        ),
        ParamSpec::with_default(
            "force",
            ParamKind::Bool,
            "false",
            "Redefine a running pool, or delete a pool, even though it holds volumes",
        ),
    ],
    free_form: None,
    example: r#"- name: the directory pool of the VM images
  libvirt_pool:
    name: okd
    type: dir
    target: /home/okd/okd/images
    permissions:
      mode: "0711"
- name: the LVM pool the guests' raw disks are carved from (the volume group is created on the disk if missing)
  libvirt_pool:
    name: images_lvm
    type: logical
    source_name: vg-libvirt
    source_device: [/dev/sdb]
    source_format: lvm2
    target: /dev/vg-libvirt
- name: remove an old pool, keeping its files
  libvirt_pool:
    name: scratch
    state: absent
"#,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PoolType {
    Dir,
    Fs,
    Netfs,
    Logical,
}

impl PoolType {
    fn word(self) -> &'static str {
        match self {
            PoolType::Dir => "dir",
            PoolType::Fs => "fs",
            PoolType::Netfs => "netfs",
            PoolType::Logical => "logical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PoolStateWanted {
    Active,
    Inactive,
    Absent,
}

/// The arguments as the parameter table gives them.
#[derive(Debug, Deserialize)]
struct Raw {
    name: String,
    #[serde(rename = "type")]
    pool_type: PoolType,
    target: Option<String>,
    source_device: Option<Vec<String>>,
    source_host: Option<String>,
    source_dir: Option<String>,
    source_format: Option<String>,
    source_name: Option<String>,
    permissions: Option<BTreeMap<String, String>>,
    autostart: bool,
    state: PoolStateWanted,
    build: bool,
    overwrite: bool,
    delete: bool,
    force: bool,
}

/// The target directory's permissions as libvirt's XML has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Permissions {
    mode: Option<u32>,
    owner: Option<u32>,
    group: Option<u32>,
}

/// The part of a pool's definition this module manages, canonical: what the user did not give
/// is `None` and not compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Definition {
    pool_type: String,
    target: String,
    /// Sorted.
    devices: Vec<String>,
    host: Option<String>,
    dir: Option<String>,
    format: Option<String>,
    vg: Option<String>,
    permissions: Permissions,
}

/// A `libvirt_pool` task's arguments, typed.
#[derive(Debug)]
pub struct Request {
    name: String,
    pool_type: PoolType,
    def: Definition,
    autostart: bool,
    state: PoolStateWanted,
    build: bool,
    overwrite: bool,
    delete: bool,
    force: bool,
}

const VIRSH: &str = "virsh -c qemu:///system";

fn non_empty(param: &'static str, v: &str) -> Result<(), ArgError> {
    if v.trim().is_empty() || v.contains('\n') {
        return Err(ArgError::invalid(
            param,
            format!("{v:?} is not a valid {param}"),
        ));
    }
    Ok(())
}

fn parse_permissions(map: &BTreeMap<String, String>) -> Result<Permissions, ArgError> {
    let mut p = Permissions::default();
    for (k, v) in map {
        let v = v.trim();
        match k.as_str() {
            "mode" => {
                let digits = v.strip_prefix("0o").unwrap_or(v);
                let mode = u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|m| !digits.is_empty() && *m <= 0o7777)
                    .ok_or_else(|| {
                        ArgError::invalid(
                            "permissions",
                            format!("permissions.mode {v:?} is not an octal mode like \"0755\""),
                        )
                    })?;
                p.mode = Some(mode);
            }
            "owner" | "group" => {
                let id = v.parse::<u32>().map_err(|_| {
                    ArgError::invalid(
                        "permissions",
                        format!("permissions.{k} {v:?} is not a numeric id (libvirt takes uid/gid numbers)"),
                    )
                })?;
                if k == "owner" {
                    p.owner = Some(id);
                } else {
                    p.group = Some(id);
                }
            }
            other => {
                return Err(ArgError::invalid(
                    "permissions",
                    format!("permissions has no key {other:?} (mode, owner, group)"),
                ))
            }
        }
    }
    Ok(p)
}

impl Module for LibvirtPoolModule {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let a: Raw = args.parse()?;
        non_empty("name", &a.name)?;
        if a.name.contains('/') {
            return Err(
                ArgError::invalid("name", format!("{:?} is not a valid name", a.name)).into(),
            );
        }
        let t = a.pool_type;
        let conflict = |param: &'static str, what: &str| -> ModuleError {
            ArgError::conflict(
                param,
                "type",
                format!("{param} is {what}, not for a {} pool", t.word()),
            )
            .into()
        };
        let devices = a.source_device.clone().unwrap_or_default();
        for d in &devices {
            non_empty("source_device", d)?;
            absolute_path("source_device", d)?;
        }
        match t {
            PoolType::Fs if devices.len() != 1 => {
                return Err(ArgError::invalid(
                    "source_device",
                    "an fs pool needs exactly one source_device (the block device holding the file system)",
                )
                .into())
            }
            PoolType::Dir | PoolType::Netfs if a.source_device.is_some() => {
                return Err(conflict("source_device", "for fs and logical pools"))
            }
            _ => {}
        }
        if t == PoolType::Netfs {
            let host = a.source_host.as_deref().ok_or_else(|| {
                ArgError::requires(
                    "source_host",
                    "type",
                    "a netfs pool needs source_host (the server)",
                )
            })?;
            non_empty("source_host", host)?;
            let dir = a.source_dir.as_deref().ok_or_else(|| {
                ArgError::requires(
                    "source_dir",
                    "type",
                    "a netfs pool needs source_dir (the export)",
                )
            })?;
            absolute_path("source_dir", dir)?;
        } else {
            if a.source_host.is_some() {
                return Err(conflict("source_host", "for netfs pools"));
            }
            if a.source_dir.is_some() {
                return Err(conflict("source_dir", "for netfs pools"));
            }
        }
        if let Some(f) = &a.source_format {
            if t == PoolType::Dir {
                return Err(conflict("source_format", "for fs, netfs and logical pools"));
            }
            if f.is_empty()
                || !f
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(ArgError::invalid(
                    "source_format",
                    format!("{f:?} is not a format name"),
                )
                .into());
            }
        }
        let vg = match (t, &a.source_name) {
            (PoolType::Logical, Some(vg)) => {
                non_empty("source_name", vg)?;
                if vg.contains('/') {
                    return Err(ArgError::invalid(
                        "source_name",
                        format!("{vg:?} is not a volume group name"),
                    )
                    .into());
                }
                Some(vg.clone())
            }
            (PoolType::Logical, None) => Some(a.name.clone()),
            (_, Some(_)) => return Err(conflict("source_name", "for logical pools")),
            (_, None) => None,
        };
        let target = match (&a.target, &vg) {
            (Some(p), _) => {
                absolute_path("target", p)?;
                if p.contains('\n') {
                    return Err(ArgError::invalid(
                        "target",
                        format!("{p:?} is not a valid target"),
                    )
                    .into());
                }
                let trimmed = p.trim_end_matches('/');
                if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    trimmed.to_string()
                }
            }
            (None, Some(vg)) => format!("/dev/{vg}"),
            // Removing a pool needs only its name.
            (None, None) if a.state == PoolStateWanted::Absent => String::new(),
            (None, None) => {
                return Err(ArgError::requires(
                    "type",
                    "target",
                    format!(
                        "a {} pool needs target (the directory its volumes are in)",
                        t.word()
                    ),
                )
                .into())
            }
        };
        let permissions = match &a.permissions {
            Some(_) if t == PoolType::Logical => {
                return Err(conflict("permissions", "for dir, fs and netfs pools"))
            }
            Some(m) => parse_permissions(m)?,
            None => Permissions::default(),
        };
        if a.delete && a.state != PoolStateWanted::Absent {
            return Err(
                ArgError::requires("delete", "state", "delete: true needs state: absent").into(),
            );
        }
        let mut devices = devices;
        devices.sort();
        devices.dedup();
        Ok(Request {
            def: Definition {
                pool_type: t.word().to_string(),
                target,
                devices,
                host: a.source_host,
                dir: a.source_dir.map(|d| trim_slash(&d)),
                format: a.source_format,
                vg,
                permissions,
            },
            name: a.name,
            pool_type: t,
            autostart: a.autostart,
            state: a.state,
            build: a.build,
            overwrite: a.overwrite,
            delete: a.delete,
            force: a.force,
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        // The pool's probe reads its volumes too (`LibvirtVolumes` shares it).
        let mut probes = vec![LibvirtPool::probe(&req.name), target_probe(req)];
        if formats(req) {
            probes.extend(req.def.devices.iter().map(|d| BlockSignature::probe(d)));
        }
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let seen = observed.fact::<LibvirtPool>(&req.name)?;
        let label = format!("storage pool {}", req.name);
        let name = shell_quote(&req.name);
        let mut plan = Plan::ok();
        let current = seen.get();
        if req.state == PoolStateWanted::Absent {
            let Some(pool) = current else {
                return Ok(plan);
            };
            let active = pool.state.active();
            let mut actions = Vec::new();
            let mut what = Vec::new();
            if active {
                actions.push(Action::run(format!("{VIRSH} pool-destroy {name}")));
                what.push("stop");
            }
            if req.delete {
                if !req.force {
                    if !active {
                        return Err(ModuleError::Host(format!(
                            "{label} is {}: its volumes cannot be listed, so its storage is not deleted (start it, or force: true)",
                            state_word(pool)
                        )));
                    }
                    let vols = volume_names(observed, &req.name)?;
                    if !vols.is_empty() {
                        return Err(ModuleError::Host(format!(
                            "{label} holds volumes ({}): its storage is not deleted (force: true deletes them too)",
                            vols.join(", ")
                        )));
                    }
                }
                actions.push(Action::run(format!("{VIRSH} pool-delete {name}")));
                what.push("delete the storage of");
            }
            if pool.persistent {
                actions.push(Action::run(format!("{VIRSH} pool-undefine {name}")));
                what.push("undefine");
            }
            let keep = if req.delete { "" } else { ", keeping its data" };
            plan.change(
                Change::new(format!("{} {label}{keep}", join_verbs(&what))).with_diff(
                    &label,
                    describe(&observed_def(pool, &req.def)?),
                    "",
                ),
                actions,
            );
            return Ok(plan);
        }

        let mut active = current.is_some_and(|p| p.state.active());
        let mut autostart = current.is_some_and(|p| p.autostart);
        match current {
            None => {
                plan.change(
                    Change::new(format!(
                        "define {label} ({}, {})",
                        req.def.pool_type, req.def.target
                    ))
                    .with_diff(&label, "", describe(&req.def)),
                    [define_action(&pool_xml(&req.name, None, &req.def))],
                );
            }
            Some(pool) => {
                if pool.pool_type != req.def.pool_type {
                    return Err(ModuleError::Host(format!(
                        "{label} is a {} pool, not {}: a pool's type is not changed (state: absent removes it first)",
                        pool.pool_type, req.def.pool_type
                    )));
                }
                let have = observed_def(pool, &req.def)?;
                let changed = have != req.def;
                if changed || !pool.persistent {
                    let vols = if active && changed {
                        volume_names(observed, &req.name)?
                    } else {
                        Vec::new()
                    };
                    if !vols.is_empty() && !req.force {
                        return Err(ModuleError::Host(format!(
                            "{label} is running and holds volumes ({}): its definition is not changed under them (force: true redefines and restarts it)",
                            vols.join(", ")
                        )));
                    }
                    let (mut before, mut after) = differing(&have, &req.def);
                    if !pool.persistent {
                        before += "persistent: no\n";
                        after += "persistent: yes\n";
                    }
                    let mut actions = vec![define_action(&pool_xml(
                        &req.name,
                        Some(&pool.uuid),
                        &req.def,
                    ))];
                    let mut summary = format!("redefine {label}");
                    if changed && active && req.state == PoolStateWanted::Active {
                        actions.push(Action::run(format!("{VIRSH} pool-destroy {name}")));
                        actions.push(Action::run(format!("{VIRSH} pool-start {name}")));
                        summary += " and restart it";
                    }
                    if !pool.persistent {
                        summary += " (make it persistent)";
                    }
                    plan.change(
                        Change::new(summary).with_diff(&label, before, after),
                        actions,
                    );
                }
            }
        }

        if req.build && !target_exists(req, observed)? {
            // What libvirt would format is looked at first: a device that carries anything is
            // refused here with its name and content, not left to pool-build's own refusal.
            let mut formatted = Vec::new();
            if formats(req) && !req.overwrite {
                for dev in &req.def.devices {
                    let sig = observed.fact::<BlockSignature>(dev.as_str())?;
                    if !sig.exists {
                        return Err(ModuleError::Host(format!(
                            "{label}: source device {dev} is not a block device on this host"
                        )));
                    }
                    if sig.blank() {
                        continue;
                    }
                    if req.pool_type == PoolType::Fs && sig.kind == req.def.format {
                        formatted.push(dev.clone());
                        continue;
                    }
                    return Err(ModuleError::Host(format!(
                        "{label}: {dev} already carries {}; building the pool would format it \
                         (overwrite: true does, destroying what is on it)",
                        sig.describe()
                    )));
                }
            }
            if !formatted.is_empty() {
                // The file system is there already: only the mount point is missing.
                plan.change(
                    Change::new(format!(
                        "create the mount point {} of {label} ({} already has its file system)",
                        req.def.target,
                        formatted.join(", ")
                    )),
                    [Action::MakeDir {
                        path: req.def.target.clone(),
                        attrs: Default::default(),
                    }],
                );
            } else {
                let mut cmd = format!("{VIRSH} pool-build {name}");
                if matches!(req.pool_type, PoolType::Fs | PoolType::Logical) {
                    cmd += if req.overwrite {
                        " --overwrite"
                    } else {
                        " --no-overwrite"
                    };
                }
                let what = match req.pool_type {
                    PoolType::Logical => {
                        format!("volume group {}", req.def.vg.as_deref().unwrap_or(""))
                    }
                    _ => req.def.target.clone(),
                };
                plan.change(
                    Change::new(format!("build {label} ({what} is missing)")),
                    [Action::run(cmd)],
                );
            }
        }

        match (req.state, active) {
            (PoolStateWanted::Active, false) => {
                plan.change(
                    Change::new(format!("start {label}")).with_diff(
                        &label,
                        "state: inactive\n",
                        "state: active\n",
                    ),
                    [Action::run(format!("{VIRSH} pool-start {name}"))],
                );
                active = true;
            }
            (PoolStateWanted::Inactive, true) => {
                plan.change(
                    Change::new(format!("stop {label} (pool-destroy keeps its data)")).with_diff(
                        &label,
                        "state: active\n",
                        "state: inactive\n",
                    ),
                    [Action::run(format!("{VIRSH} pool-destroy {name}"))],
                );
                active = false;
            }
            _ => {}
        }
        if current.is_none() {
            // A new pool starts without autostart.
            autostart = false;
        }
        if autostart != req.autostart {
            let (cmd, verb) = if req.autostart {
                (format!("{VIRSH} pool-autostart {name}"), "enable")
            } else {
                (
                    format!("{VIRSH} pool-autostart --disable {name}"),
                    "disable",
                )
            };
            plan.change(
                Change::new(format!("{verb} autostart of {label}")).with_diff(
                    &label,
                    format!("autostart: {autostart}\n"),
                    format!("autostart: {}\n", req.autostart),
                ),
                [Action::run(cmd)],
            );
        }
        Ok(plan.with_data(
            "pool",
            serde_json::json!({
                "name": req.name,
                "type": req.def.pool_type,
                "target": req.def.target,
                "active": active,
                "autostart": req.autostart,
            }),
        ))
    }
}

fn trim_slash(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}

fn state_word(pool: &Pool) -> &'static str {
    match pool.state {
        crate::modules::facts::libvirt::PoolState::Inactive => "inactive",
        crate::modules::facts::libvirt::PoolState::Building => "building",
        crate::modules::facts::libvirt::PoolState::Running => "running",
        crate::modules::facts::libvirt::PoolState::Degraded => "degraded",
        crate::modules::facts::libvirt::PoolState::Inaccessible => "inaccessible",
    }
}

/// "stop, delete the storage of and undefine".
fn join_verbs(v: &[&str]) -> String {
    match v {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// How the target's existence is observed: the directory, or for a logical pool the volume
/// group (its /dev directory only exists while it has active logical volumes).
/// A build of this pool formats its source devices (a file system, a volume group).
fn formats(req: &Request) -> bool {
    matches!(req.pool_type, PoolType::Fs | PoolType::Logical)
}

fn target_probe(req: &Request) -> Probe {
    match (&req.pool_type, &req.def.vg) {
        (PoolType::Logical, Some(vg)) => Probe::Command(vg_command(vg)),
        _ => Probe::File(req.def.target.clone()),
    }
}

fn vg_command(vg: &str) -> String {
    format!(
        "LC_ALL=C vgs --noheadings -o vg_name -- {}",
        shell_quote(vg)
    )
}

fn target_exists(req: &Request, observed: &Observed) -> Result<bool, ModuleError> {
    match (&req.pool_type, &req.def.vg) {
        (PoolType::Logical, Some(vg)) => Ok(observed.command(&vg_command(vg))?.rc == 0),
        _ => Ok(observed.file(&req.def.target)?.exists()),
    }
}

/// The names of the pool's volumes (empty when it is not running or not defined).
fn volume_names(observed: &Observed, pool: &str) -> Result<Vec<String>, ModuleError> {
    let vols = observed.fact::<LibvirtVolumes>(pool)?;
    Ok(vols
        .get()
        .map(|p| p.volumes.iter().map(|v| v.name.clone()).collect())
        .unwrap_or_default())
}

/// The observed definition, canonical against the wanted one: fields libvirt fills in by
/// itself are taken as wanted when the user left them out.
fn observed_def(pool: &Pool, want: &Definition) -> Result<Definition, ModuleError> {
    // Without source_device, a logical pool is its volume group by name, whatever its devices.
    let mut devices = if want.devices.is_empty() && want.pool_type == "logical" {
        Vec::new()
    } else {
        pool.source.devices.clone()
    };
    devices.sort();
    devices.dedup();
    let perms = observed_permissions(&pool.xml)?;
    let wp = &want.permissions;
    Ok(Definition {
        pool_type: pool.pool_type.clone(),
        target: pool
            .target_path
            .as_deref()
            .map(trim_slash)
            .unwrap_or_default(),
        devices,
        host: pool.source.hosts.first().cloned(),
        dir: pool.source.dir.as_deref().map(trim_slash),
        format: want
            .format
            .as_ref()
            .map(|_| pool.source.format.clone().unwrap_or_else(|| "auto".into())),
        vg: pool.source.name.clone(),
        permissions: Permissions {
            mode: wp.mode.and(perms.mode),
            owner: wp.owner.and(perms.owner),
            group: wp.group.and(perms.group),
        },
    })
}

fn observed_permissions(xml: &str) -> Result<Permissions, ModuleError> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| ModuleError::Host(format!("invalid pool XML: {e}")))?;
    let perms = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("target"))
        .and_then(|t| t.children().find(|n| n.has_tag_name("permissions")));
    let field = |tag: &str, radix: u32| {
        perms
            .and_then(|p| p.children().find(|n| n.has_tag_name(tag)))
            .and_then(|n| n.text())
            .and_then(|t| u32::from_str_radix(t.trim(), radix).ok())
    };
    Ok(Permissions {
        mode: field("mode", 8),
        owner: field("owner", 10),
        group: field("group", 10),
    })
}

/// The fields of a definition, one per line, as `--diff` shows them.
fn fields(d: &Definition) -> Vec<(&'static str, String)> {
    let mut out = vec![("type", d.pool_type.clone()), ("target", d.target.clone())];
    if !d.devices.is_empty() {
        out.push(("source_device", d.devices.join(", ")));
    }
    let opt = |v: &Option<String>| v.clone();
    for (k, v) in [
        ("source_host", opt(&d.host)),
        ("source_dir", opt(&d.dir)),
        ("source_format", opt(&d.format)),
        ("source_name", opt(&d.vg)),
        ("mode", d.permissions.mode.map(|m| format!("{m:04o}"))),
        ("owner", d.permissions.owner.map(|o| o.to_string())),
        ("group", d.permissions.group.map(|g| g.to_string())),
    ] {
        if let Some(v) = v {
            out.push((k, v));
        }
    }
    out
}

fn describe(d: &Definition) -> String {
    fields(d)
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}

/// Before and after of only the fields that differ.
fn differing(have: &Definition, want: &Definition) -> (String, String) {
    let h = fields(have);
    let w = fields(want);
    let mut keys: Vec<&str> = h.iter().chain(w.iter()).map(|(k, _)| *k).collect();
    keys.dedup();
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(*k));
    let get = |list: &[(&str, String)], k: &str| {
        list.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    };
    let (mut before, mut after) = (String::new(), String::new());
    for k in keys {
        let (b, a) = (get(&h, k), get(&w, k));
        if b != a {
            before += &format!("{k}: {}\n", b.unwrap_or_else(|| "(none)".into()));
            after += &format!("{k}: {}\n", a.unwrap_or_else(|| "(none)".into()));
        }
    }
    (before, after)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The pool's XML definition; `uuid` keeps an existing pool's identity when redefining it.
fn pool_xml(name: &str, uuid: Option<&str>, d: &Definition) -> String {
    let mut x = format!(
        "<pool type=\"{}\">\n  <name>{}</name>\n",
        d.pool_type,
        esc(name)
    );
    if let Some(u) = uuid {
        x += &format!("  <uuid>{}</uuid>\n", esc(u));
    }
    let mut source = String::new();
    if let Some(h) = &d.host {
        source += &format!("    <host name=\"{}\"/>\n", esc(h));
    }
    if let Some(dir) = &d.dir {
        source += &format!("    <dir path=\"{}\"/>\n", esc(dir));
    }
    for dev in &d.devices {
        source += &format!("    <device path=\"{}\"/>\n", esc(dev));
    }
    if let Some(vg) = &d.vg {
        source += &format!("    <name>{}</name>\n", esc(vg));
    }
    if let Some(f) = &d.format {
        source += &format!("    <format type=\"{}\"/>\n", esc(f));
    }
    if !source.is_empty() {
        x += &format!("  <source>\n{source}  </source>\n");
    }
    x += &format!("  <target>\n    <path>{}</path>\n", esc(&d.target));
    let p = &d.permissions;
    if *p != Permissions::default() {
        x += "    <permissions>\n";
        if let Some(m) = p.mode {
            x += &format!("      <mode>{m:04o}</mode>\n");
        }
        if let Some(o) = p.owner {
            x += &format!("      <owner>{o}</owner>\n");
        }
        if let Some(g) = p.group {
            x += &format!("      <group>{g}</group>\n");
        }
        x += "    </permissions>\n";
    }
    x += "  </target>\n</pool>\n";
    x
}

/// `virsh pool-define` of the XML, written to a temporary file on the host first.
fn define_action(xml: &str) -> Action {
    Action::run(format!(
        "f=$(mktemp) || exit; printf '%s' {} > \"$f\" && {VIRSH} pool-define \"$f\"; rc=$?; rm -f \"$f\"; exit $rc",
        shell_quote(xml)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::facts::libvirt::testing;
    use crate::modules::testing::{arg_error, req, runs};
    use serde_json::json;

    const V: &str = "virsh -c qemu:///system";

    fn missing(f: &str) -> Observation {
        Observation::Command(CommandOutput::failed(1, &fixture(f)))
    }

    /// The pool probe's output: a pool fixture's definition and `pool-info` with the volumes
    /// of a volumes fixture.
    fn both(pool: &str, volumes: &str) -> Observation {
        let text = testing::pool(&fixture(pool), &fixture(volumes));
        Observation::Command(CommandOutput::ok(&text))
    }

    /// `images` as in the dir-active fixture, with the volumes of the volume fixture (or none).
    fn seen(pool: Observation, target_exists: bool) -> Observed {
        let target = if target_exists {
            FileState::dir()
        } else {
            FileState::absent()
        };
        Observed::new()
            .with_fact::<LibvirtPool>("images", pool)
            .with_file("/tmp/kf-images", target)
    }
    fn nothing() -> Observed {
        seen(missing("libvirt_pool/not-found.stderr"), false)
    }
    fn active_with_volumes() -> Observed {
        seen(
            both("libvirt_pool/dir-active.txt", "libvirt_volumes/images.txt"),
            true,
        )
    }
    fn active_empty() -> Observed {
        seen(
            both(
                "libvirt_pool/dir-active.txt",
                "libvirt_volumes/inactive.txt",
            ),
            true,
        )
    }
    fn plan(args: serde_json::Value, o: &Observed) -> Result<Plan, ModuleError> {
        LibvirtPoolModule.plan(&req(&LibvirtPoolModule, args), o)
    }
    fn host_error(args: serde_json::Value, o: &Observed) -> String {
        match plan(args, o) {
            Err(ModuleError::Host(m)) => m,
            other => panic!("expected a host error, got {other:?}"),
        }
    }
    fn images() -> serde_json::Value {
        json!({"name": "images", "type": "dir", "target": "/tmp/kf-images"})
    }
    fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn probes() {
        let r = req(&LibvirtPoolModule, images());
        assert_eq!(
            LibvirtPoolModule.probes(&r),
            [
                LibvirtPool::probe("images"),
                Probe::File("/tmp/kf-images".into())
            ]
        );
        let r = req(
            &LibvirtPoolModule,
            json!({"name": "vg0", "type": "logical"}),
        );
        assert_eq!(
            LibvirtPoolModule.probes(&r)[1],
            Probe::Command("LC_ALL=C vgs --noheadings -o vg_name -- vg0".into())
        );
    }

    #[test]
    fn dir_pool_from_nothing() {
        let p = plan(
            with(images(), json!({"permissions": {"mode": "0711"}})),
            &nothing(),
        )
        .unwrap();
        let cmds = runs(&p);
        assert_eq!(cmds.len(), 4, "{cmds:?}");
        let xml = "<pool type=\"dir\">\n  <name>images</name>\n  <target>\n    <path>/tmp/kf-images</path>\n    \
                   <permissions>\n      <mode>0711</mode>\n    </permissions>\n  </target>\n</pool>\n";
        assert_eq!(
            cmds[0],
            format!(
                "f=$(mktemp) || exit; printf '%s' '{xml}' > \"$f\" && {V} pool-define \"$f\"; rc=$?; rm -f \"$f\"; exit $rc"
            )
        );
        assert_eq!(
            &cmds[1..],
            [
                format!("{V} pool-build images"),
                format!("{V} pool-start images"),
                format!("{V} pool-autostart images"),
            ]
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("", "type: dir\ntarget: /tmp/kf-images\nmode: 0711\n")
        );
        assert_eq!(
            p.changes[0].summary,
            "define storage pool images (dir, /tmp/kf-images)"
        );
        // The directory already there: no build.
        let o = seen(missing("libvirt_pool/not-found.stderr"), true);
        let p = plan(
            with(images(), json!({"autostart": false, "state": "inactive"})),
            &o,
        )
        .unwrap();
        assert_eq!(runs(&p).len(), 1);
        assert!(runs(&p)[0].contains("pool-define"));
    }

    #[test]
    fn equal_pool_is_ok() {
        for args in [
            images(),
            with(
                images(),
                json!({"target": "/tmp/kf-images/", "permissions": {"mode": "711", "owner": "0"}}),
            ),
            with(
                images(),
                json!({"permissions": {"mode": "0711", "owner": 0, "group": 0}}),
            ),
        ] {
            let p = plan(args.clone(), &active_with_volumes()).unwrap();
            assert!(!p.changed(), "{args}: {:?}", p.changes);
            assert!(p.actions.is_empty());
        }
        let p = plan(images(), &active_with_volumes()).unwrap();
        assert_eq!(p.data["pool"]["active"], json!(true));
    }

    #[test]
    fn autostart_toggled_only() {
        let p = plan(
            with(images(), json!({"autostart": false})),
            &active_with_volumes(),
        )
        .unwrap();
        assert_eq!(runs(&p), [format!("{V} pool-autostart --disable images")]);
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("autostart: true\n", "autostart: false\n")
        );
        // fs pool, inactive, no autostart: enabling it alone does not start it.
        let o = Observed::new()
            .with_fact::<LibvirtPool>(
                "fsdata",
                both("libvirt_pool/fs.txt", "libvirt_volumes/inactive.txt"),
            )
            .with_file("/srv/vmdata", FileState::dir());
        let p = plan(
            json!({"name": "fsdata", "type": "fs", "target": "/srv/vmdata", "source_device": ["/dev/vdb1"],
                   "source_format": "ext4", "state": "inactive"}),
            &o,
        )
        .unwrap();
        assert_eq!(runs(&p), [format!("{V} pool-autostart fsdata")]);
    }

    #[test]
    fn inactive_stops_keeping_data() {
        let p = plan(
            with(images(), json!({"state": "inactive"})),
            &active_with_volumes(),
        )
        .unwrap();
        assert_eq!(runs(&p), [format!("{V} pool-destroy images")]);
        assert_eq!(
            p.changes[0].summary,
            "stop storage pool images (pool-destroy keeps its data)"
        );
    }

    #[test]
    fn absent_keeps_data() {
        let p = plan(
            with(images(), json!({"state": "absent"})),
            &active_with_volumes(),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            [
                format!("{V} pool-destroy images"),
                format!("{V} pool-undefine images")
            ]
        );
        assert_eq!(
            p.changes[0].summary,
            "stop and undefine storage pool images, keeping its data"
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("type: dir\ntarget: /tmp/kf-images\n", "")
        );
        let p = plan(
            json!({"name": "images", "state": "absent", "type": "dir", "target": "/x"}),
            &nothing(),
        )
        .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn delete_refused_with_volumes() {
        let args = with(images(), json!({"state": "absent", "delete": true}));
        let e = host_error(args.clone(), &active_with_volumes());
        assert!(
            e.starts_with("storage pool images holds volumes (base.qcow2, "),
            "{e}"
        );
        assert!(
            e.ends_with("its storage is not deleted (force: true deletes them too)"),
            "{e}"
        );
        let p = plan(
            with(args.clone(), json!({"force": true})),
            &active_with_volumes(),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            [
                format!("{V} pool-destroy images"),
                format!("{V} pool-delete images"),
                format!("{V} pool-undefine images"),
            ]
        );
        let p = plan(args, &active_empty()).unwrap();
        assert_eq!(runs(&p).len(), 3);
        assert_eq!(
            p.changes[0].summary,
            "stop, delete the storage of and undefine storage pool images"
        );
        // An inactive pool's volumes cannot be listed.
        let o = Observed::new().with_fact::<LibvirtPool>(
            "vg0",
            both("libvirt_pool/logical.txt", "libvirt_volumes/inactive.txt"),
        );
        let e = host_error(
            json!({"name": "vg0", "type": "logical", "state": "absent", "delete": true}),
            &o,
        );
        assert_eq!(
            e,
            "storage pool vg0 is inactive: its volumes cannot be listed, so its storage is not deleted (start it, or force: true)"
        );
    }

    #[test]
    fn definition_change_on_active_pool_with_volumes() {
        let args = with(images(), json!({"target": "/srv/images"}));
        let mut o = active_with_volumes();
        o = o.with_file("/srv/images", FileState::dir());
        let e = host_error(args.clone(), &o);
        assert!(
            e.starts_with("storage pool images is running and holds volumes (base.qcow2"),
            "{e}"
        );
        assert!(e.ends_with(
            "its definition is not changed under them (force: true redefines and restarts it)"
        ));
        let p = plan(with(args, json!({"force": true})), &o).unwrap();
        let cmds = runs(&p);
        assert!(
            cmds[0].contains("<uuid>2addee11-0132-44ef-a4c1-03aa863198b1</uuid>"),
            "{}",
            cmds[0]
        );
        assert!(cmds[0].contains("<path>/srv/images</path>"));
        assert_eq!(
            &cmds[1..],
            [
                format!("{V} pool-destroy images"),
                format!("{V} pool-start images")
            ]
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("target: /tmp/kf-images\n", "target: /srv/images\n")
        );
        // Without volumes no force is needed; a mode change.
        let p = plan(
            with(images(), json!({"permissions": {"mode": "0755"}})),
            &active_empty(),
        )
        .unwrap();
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("mode: 0711\n", "mode: 0755\n")
        );
        // Another type is never a redefinition.
        let e = host_error(
            json!({"name": "images", "type": "logical", "force": true}),
            &active_empty(),
        );
        assert!(
            e.starts_with("storage pool images is a dir pool, not logical"),
            "{e}"
        );
    }

    #[test]
    fn transient_pool_is_made_persistent() {
        let text = fixture("libvirt_pool/dir-active.txt")
            .replace("Persistent:     yes", "Persistent:     no");
        let text = testing::pool(&text, &fixture("libvirt_volumes/images.txt"));
        let o = seen(Observation::Command(CommandOutput::ok(&text)), true);
        let p = plan(images(), &o).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "redefine storage pool images (make it persistent)"
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("persistent: no\n", "persistent: yes\n")
        );
        assert!(runs(&p)[0].contains("<uuid>2addee11-0132-44ef-a4c1-03aa863198b1</uuid>"));
        // Removing it only stops it: libvirt forgets a transient pool when it stops.
        let p = plan(with(images(), json!({"state": "absent"})), &o).unwrap();
        assert_eq!(runs(&p), [format!("{V} pool-destroy images")]);
    }

    /// A build never formats a device that carries something, unless overwrite is asked for.
    #[test]
    fn builds_look_at_the_devices_first() {
        let base = |sig: &str| {
            Observed::new()
                .with_fact::<LibvirtPool>("vg0", missing("libvirt_pool/not-found.stderr"))
                .with_command(
                    &vg_command("vg0"),
                    CommandOutput::failed(5, "  Volume group \"vg0\" not found\n"),
                )
                .with_fact::<BlockSignature>(
                    "/dev/nvme1n1",
                    Observation::Command(CommandOutput::ok(sig)),
                )
        };
        let lvm = json!({"name": "vg0", "type": "logical", "source_device": "/dev/nvme1n1"});
        let p = plan(lvm.clone(), &base("")).unwrap();
        assert!(runs(&p).contains(&format!("{V} pool-build vg0 --no-overwrite")));
        for (fx, what) in [
            ("block/blkid-ext4.txt", "a file system (ext4)"),
            ("block/blkid-lvm.txt", "an LVM physical volume"),
            ("block/blkid-gpt.txt", "a gpt partition table"),
        ] {
            let m = host_error(lvm.clone(), &base(&fixture(fx)));
            assert_eq!(
                m,
                format!(
                    "storage pool vg0: /dev/nvme1n1 already carries {what}; building the pool \
                         would format it (overwrite: true does, destroying what is on it)"
                )
            );
        }
        let p = plan(
            with(lvm.clone(), json!({"overwrite": true})),
            &base(&fixture("block/blkid-ext4.txt")),
        )
        .unwrap();
        assert!(runs(&p).contains(&format!("{V} pool-build vg0 --overwrite")));
        let m = host_error(lvm, &base("kvmforge-no-block-device\n"));
        assert!(m.contains("/dev/nvme1n1 is not a block device"), "{m}");

        // A file system pool whose device has that file system already: only the mount point.
        let fs = json!({"name": "vg0", "type": "fs", "source_device": "/dev/nvme1n1",
                        "source_format": "ext4", "target": "/srv/images"});
        let o =
            base(&fixture("block/blkid-ext4.txt")).with_file("/srv/images", FileState::absent());
        let p = plan(fs.clone(), &o).unwrap();
        assert!(p.actions.contains(&Action::MakeDir {
            path: "/srv/images".into(),
            attrs: Default::default()
        }));
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, Action::Run { cmd, .. } if cmd.contains("pool-build"))));
        let m = host_error(with(fs, json!({"source_format": "xfs"})), &o);
        assert!(m.contains("already carries a file system (ext4)"), "{m}");
    }

    #[test]
    fn logical_and_netfs_fixtures() {
        let o = Observed::new()
            .with_fact::<LibvirtPool>(
                "vg0",
                both("libvirt_pool/logical.txt", "libvirt_volumes/inactive.txt"),
            )
            .with_command(&vg_command("vg0"), CommandOutput::ok("  vg0\n"));
        let p = plan(
            json!({"name": "vg0", "type": "logical", "source_device": "/dev/sdb",
                            "source_format": "lvm2", "autostart": false}),
            &o,
        )
        .unwrap();
        assert_eq!(runs(&p), [format!("{V} pool-start vg0")]);
        // A missing volume group is built without overwriting.
        let o = o.with_command(
            &vg_command("vg0"),
            CommandOutput::failed(5, "  Volume group \"vg0\" not found\n"),
        );
        let p = plan(
            json!({"name": "vg0", "type": "logical", "autostart": false, "state": "inactive"}),
            &o,
        )
        .unwrap();
        assert_eq!(runs(&p), [format!("{V} pool-build vg0 --no-overwrite")]);
        let o = Observed::new()
            .with_fact::<LibvirtPool>(
                "nfsimages",
                both("libvirt_pool/netfs.txt", "libvirt_volumes/inactive.txt"),
            )
            .with_file("/mnt/nfsimages", FileState::dir());
        let p = plan(
            json!({"name": "nfsimages", "type": "netfs", "target": "/mnt/nfsimages", "source_host": "nas.example",
                   "source_dir": "/export/images/", "source_format": "nfs", "autostart": false, "state": "inactive"}),
            &o,
        )
        .unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        let p = plan(
            json!({"name": "nfsimages", "type": "netfs", "target": "/mnt/nfsimages", "source_host": "nas2.example",
                   "source_dir": "/export/images", "autostart": false, "state": "inactive"}),
            &o,
        )
        .unwrap();
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("source_host: nas.example\n", "source_host: nas2.example\n")
        );
    }

    #[test]
    fn argument_errors() {
        for (v, kind, param) in [
            (
                json!({"name": "p"}),
                ArgErrorKind::Requires { other: "target" },
                "type",
            ),
            (
                json!({"name": "p", "target": "rel/dir"}),
                ArgErrorKind::Invalid,
                "target",
            ),
            (
                json!({"name": "p", "type": "fs", "target": "/m"}),
                ArgErrorKind::Invalid,
                "source_device",
            ),
            (
                json!({"name": "p", "type": "fs", "target": "/m", "source_device": ["sdb"]}),
                ArgErrorKind::Invalid,
                "source_device",
            ),
            (
                json!({"name": "p", "type": "netfs", "target": "/m", "source_dir": "/e"}),
                ArgErrorKind::Requires { other: "type" },
                "source_host",
            ),
            (
                json!({"name": "p", "type": "netfs", "target": "/m", "source_host": "h"}),
                ArgErrorKind::Requires { other: "type" },
                "source_dir",
            ),
            (
                json!({"name": "p", "type": "netfs", "target": "/m", "source_host": "h", "source_dir": "e"}),
                ArgErrorKind::Invalid,
                "source_dir",
            ),
            (
                json!({"name": "p", "target": "/d", "source_host": "h"}),
                ArgErrorKind::Conflict { with: "type" },
                "source_host",
            ),
            (
                json!({"name": "p", "target": "/d", "source_name": "vg"}),
                ArgErrorKind::Conflict { with: "type" },
                "source_name",
            ),
            (
                json!({"name": "p", "target": "/d", "source_device": ["/dev/sdb"]}),
                ArgErrorKind::Conflict { with: "type" },
                "source_device",
            ),
            (
                json!({"name": "p", "type": "logical", "permissions": {"mode": "0755"}}),
                ArgErrorKind::Conflict { with: "type" },
                "permissions",
            ),
            (
                json!({"name": "p", "target": "/d", "permissions": {"mode": "0999"}}),
                ArgErrorKind::Invalid,
                "permissions",
            ),
            (
                json!({"name": "p", "target": "/d", "permissions": {"mode": "17777"}}),
                ArgErrorKind::Invalid,
                "permissions",
            ),
            (
                json!({"name": "p", "target": "/d", "permissions": {"owner": "qemu"}}),
                ArgErrorKind::Invalid,
                "permissions",
            ),
            (
                json!({"name": "p", "target": "/d", "permissions": {"user": "0"}}),
                ArgErrorKind::Invalid,
                "permissions",
            ),
            (
                json!({"name": "p", "target": "/d", "delete": true}),
                ArgErrorKind::Requires { other: "state" },
                "delete",
            ),
            (
                json!({"name": "a/b", "target": "/d"}),
                ArgErrorKind::Invalid,
                "name",
            ),
        ] {
            let e = arg_error(&LibvirtPoolModule, v.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{v}");
        }
        let r = req(
            &LibvirtPoolModule,
            json!({"name": "data", "type": "logical"}),
        );
        assert_eq!(
            (r.def.target.as_str(), r.def.vg.as_deref()),
            ("/dev/data", Some("data"))
        );
    }
}
