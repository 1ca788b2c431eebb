//! `libvirt_volume`: a storage volume (a VM disk image) in a libvirt pool.
//!
//! Decided from two readings: the pool's volumes with their definitions ([`LibvirtVolumes`]),
//! and, to delete, the disks of every domain ([`LibvirtDomainDisks`]). Volumes hold guests'
//! data, so the module only ever creates, grows (when asked) and deletes unused volumes: a
//! smaller capacity, another format or another backing image is an error, never a silent
//! recreation.

use crate::module::{
    shell_quote, Action, ArgError, Change, Fact, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::modules::facts::libvirt_volume::{
    unit_scale, LibvirtDomainDisks, LibvirtVolumes, PoolVolumes,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct LibvirtVolume;

static SPEC: ModuleSpec = ModuleSpec {
    name: "libvirt_volume",
    summary: "Manage a storage volume (VM disk image) in a libvirt pool: create, grow, delete",
    description: "Observes the pool with one `virsh` running `pool-dumpxml --inactive`, `pool-info` \
and `vol-list`, and, when it lists volumes, one more with the `vol-dumpxml` of each \
(`-c qemu:///system`; the same reading as libvirt_pool's, made once for both). The pool must exist and be running: a missing or inactive pool \
fails the task.\n\n\
`state: present` creates a missing volume with `virsh vol-create-as` (`--backing-vol` for a \
copy-on-write image on top of `backing`). An existing volume is compared, never recreated: \
another format, or another backing image when `backing` is given, fails the task (delete it \
with `state: absent` first). A larger `capacity` grows the volume with `vol-resize` only with \
`resize: true` (the guest's partitions and file systems are not grown); without it the task \
fails saying so. A smaller `capacity` always fails: volumes are never shrunk. `capacity` is \
rounded up to a multiple of 512 bytes, as qemu-img does.\n\n\
`state: absent` deletes the volume with `vol-delete`, unless a domain (running or only \
defined) has it as a disk, by path or as `<source pool=... volume=...>`, or another volume of \
the pool uses it as its backing image: the task then fails naming them. Reading the domains \
costs one `virsh dumpxml` per domain, and only for `state: absent`.\n\n\
`--diff` shows the volume's capacity and format before and after. Results: `volume` holds the \
name, path, capacity (bytes) and format as planned.",
    params: &[
        ParamSpec::required("pool", ParamKind::Str, "Storage pool name"),
        ParamSpec::required("name", ParamKind::Str, "Volume name (the image's file name in a dir pool)")
            .aliases(&["volume"]),
        ParamSpec::optional(
            "capacity",
            ParamKind::Scalar,
            "Size the guest sees: bytes, or with a unit (`512M`, `128G`, `1T`; K/M/G/T and KiB... are powers of 1024, KB/MB/GB/TB of 1000); required with state: present",
        )
        .aliases(&["size"]),
        ParamSpec::with_default(
            "format",
            ParamKind::Choice(&["qcow2", "raw"]),
            "qcow2",
            "Image format",
        ),
        ParamSpec::optional(
            "backing",
            ParamKind::Str,
            "Backing image for a copy-on-write volume (qcow2 only): a volume of the same pool by name, or a volume's path",
        ),
        ParamSpec::optional(
            "backing_format",
            ParamKind::Choice(&["qcow2", "raw"]),
            "The backing image's format; default: the backing volume's own format when it is in the pool, else qcow2",
        ),
        ParamSpec::with_default(
            "resize",
            ParamKind::Bool,
            "false",
            "Grow an existing volume that is smaller than capacity",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "present creates (or grows), absent deletes an unused volume",
        ),
    ],
    free_form: None,
    example: r#"- name: a 128G disk for each node
  libvirt_volume:
    pool: okd
    name: "{{ item }}.{{ inventory_hostname }}.0.qcow2"
    capacity: 128G
  loop: [bootstrap, master-0, master-1, master-2, compute-0, compute-1, compute-2,
         storage-0, storage-1, storage-2, infra-0, infra-1, infra-2]
- name: the services node's disk is larger
  libvirt_volume:
    pool: okd
    name: "services.{{ inventory_hostname }}.0.qcow2"
    capacity: 256G
- name: a disk on top of a base image
  libvirt_volume:
    pool: okd
    name: scratch.qcow2
    capacity: 20G
    backing: fedora-base.qcow2
"#,
};

/// `format` and `backing_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    Qcow2,
    Raw,
}

impl Format {
    fn word(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

/// The arguments as the parameter table gives them.
#[derive(Debug, Deserialize)]
struct Raw {
    pool: String,
    name: String,
    capacity: Option<String>,
    format: Format,
    backing: Option<String>,
    backing_format: Option<Format>,
    resize: bool,
    state: Presence,
}

/// A `libvirt_volume` task's arguments, typed.
#[derive(Debug)]
pub struct Request {
    pool: String,
    name: String,
    /// Bytes, rounded up to 512; `Some` with state: present.
    capacity: Option<u64>,
    format: Format,
    backing: Option<String>,
    backing_format: Option<Format>,
    resize: bool,
    state: Presence,
}

const VIRSH: &str = "virsh -c qemu:///system";

/// `128G` → bytes (see the `capacity` parameter).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || format!("capacity {s:?} is not a size like 512M, 128G, 1T or a number of bytes");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = unit_scale(unit.trim()).ok_or_else(bad)?;
    let bytes = number.checked_mul(scale).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("capacity {s:?} is zero"));
    }
    bytes.checked_next_multiple_of(512).ok_or_else(bad)
}

/// Bytes for people: `128 GiB`, or the exact count when no binary unit divides it.
pub fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

fn check_name(param: &'static str, v: &str) -> Result<(), ArgError> {
    if v.trim().is_empty() {
        return Err(ArgError::invalid(
            param,
            format!("{param} must not be empty"),
        ));
    }
    if v.contains('/') || v.contains('\n') || v.contains("   ") || v.starts_with(' ') {
        return Err(ArgError::invalid(
            param,
            format!("{v:?} is not a valid {param}"),
        ));
    }
    Ok(())
}

impl Module for LibvirtVolume {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let a: Raw = args.parse()?;
        check_name("pool", &a.pool)?;
        check_name("name", &a.name)?;
        let capacity = a
            .capacity
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| ArgError::invalid("capacity", e))?;
        if a.state == Presence::Present && capacity.is_none() {
            return Err(
                ArgError::requires("state", "capacity", "state: present needs capacity").into(),
            );
        }
        if let Some(b) = &a.backing {
            if b.trim().is_empty() {
                return Err(ArgError::invalid("backing", "backing must not be empty").into());
            }
            if a.format != Format::Qcow2 {
                return Err(ArgError::conflict(
                    "backing",
                    "format",
                    "only a qcow2 volume can have a backing image",
                )
                .into());
            }
        } else if a.backing_format.is_some() {
            return Err(ArgError::requires(
                "backing_format",
                "backing",
                "backing_format is the format of `backing`, which is not given",
            )
            .into());
        }
        Ok(Request {
            pool: a.pool,
            name: a.name,
            capacity,
            format: a.format,
            backing: a.backing,
            backing_format: a.backing_format,
            resize: a.resize,
            state: a.state,
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        let mut probes = vec![LibvirtVolumes::probe(&req.pool)];
        if req.state == Presence::Absent {
            probes.push(LibvirtDomainDisks::probe(&()));
        }
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let seen = observed.fact::<LibvirtVolumes>(&req.pool)?;
        let Some(pool) = seen.get() else {
            return Err(ModuleError::Host(format!(
                "storage pool {} does not exist",
                req.pool
            )));
        };
        if !pool.running() {
            return Err(ModuleError::Host(format!(
                "storage pool {} is {}, not running: its volumes cannot be read or changed (virsh pool-start {})",
                req.pool,
                pool.state,
                shell_quote(&req.pool)
            )));
        }
        let label = format!("volume {}/{}", req.pool, req.name);
        let current = pool.volume(&req.name);
        match req.state {
            Presence::Absent => {
                let Some(vol) = current else {
                    return Ok(Plan::ok());
                };
                let disks = observed.fact::<LibvirtDomainDisks>(&())?;
                let users = disks.users(&req.pool, vol);
                if !users.is_empty() {
                    return Err(ModuleError::Host(format!(
                        "{label} is a disk of domain {}: not deleting it",
                        users.join(", ")
                    )));
                }
                let backed: Vec<&str> = pool
                    .volumes
                    .iter()
                    .filter(|v| {
                        v.backing.as_ref().map(|b| Some(b.path.as_str()))
                            == Some(vol.path.as_deref())
                    })
                    .map(|v| v.name.as_str())
                    .collect();
                if !backed.is_empty() {
                    return Err(ModuleError::Host(format!(
                        "{label} is the backing image of {}: not deleting it",
                        backed.join(", ")
                    )));
                }
                let mut plan = Plan::ok();
                plan.change(
                    Change::new(format!("delete {label} ({})", human_size(vol.capacity)))
                        .with_diff(&label, describe(vol.capacity, vol.format.as_deref()), ""),
                    [Action::run(format!(
                        "{VIRSH} vol-delete --pool {} {}",
                        shell_quote(&req.pool),
                        shell_quote(&req.name)
                    ))],
                );
                Ok(plan)
            }
            Presence::Present => {
                let want = req.capacity.ok_or_else(|| {
                    ModuleError::Internal("state: present without capacity".into())
                })?;
                let backing = req
                    .backing
                    .as_deref()
                    .map(|b| resolve_backing(pool, b, req.backing_format))
                    .transpose()?;
                let mut plan = Plan::ok();
                let Some(vol) = current else {
                    let mut cmd = format!(
                        "{VIRSH} vol-create-as {} {} {want} --format {}",
                        shell_quote(&req.pool),
                        shell_quote(&req.name),
                        req.format.word()
                    );
                    let mut summary = format!(
                        "create {label} ({}, {})",
                        human_size(want),
                        req.format.word()
                    );
                    if let Some((path, format)) = &backing {
                        cmd += &format!(
                            " --backing-vol {} --backing-vol-format {}",
                            shell_quote(path),
                            format.word()
                        );
                        summary += &format!(" on top of {path}");
                    }
                    plan.change(
                        Change::new(summary).with_diff(
                            &label,
                            "",
                            describe(want, Some(req.format.word())),
                        ),
                        [Action::run(cmd)],
                    );
                    return Ok(finish(plan, vol_path(pool, &req.name), req, want));
                };
                let have_format = vol.format.as_deref().unwrap_or("unknown");
                if have_format != req.format.word() {
                    return Err(ModuleError::Host(format!(
                        "{label} is {have_format}, not {}: volumes are not converted or recreated (state: absent deletes it first)",
                        req.format.word()
                    )));
                }
                if let Some((path, _)) = &backing {
                    let have = vol.backing.as_ref().map(|b| b.path.as_str());
                    if have != Some(path.as_str()) {
                        return Err(ModuleError::Host(format!(
                            "{label} is backed by {}, not {path}: volumes are not recreated (state: absent deletes it first)",
                            have.unwrap_or("nothing")
                        )));
                    }
                }
                let have = vol.capacity;
                if want < have {
                    return Err(ModuleError::Host(format!(
                        "{label} is {} ({have} bytes), larger than capacity {} ({want} bytes): volumes are never shrunk",
                        human_size(have),
                        human_size(want)
                    )));
                }
                if want > have {
                    if !req.resize {
                        return Err(ModuleError::Host(format!(
                            "{label} is {} ({have} bytes), smaller than capacity {} ({want} bytes): growing it needs resize: true",
                            human_size(have),
                            human_size(want)
                        )));
                    }
                    plan.change(
                        Change::new(format!(
                            "grow {label} from {} to {}",
                            human_size(have),
                            human_size(want)
                        ))
                        .with_diff(
                            &label,
                            describe(have, Some(have_format)),
                            describe(want, Some(have_format)),
                        ),
                        [Action::run(format!(
                            "{VIRSH} vol-resize --pool {} {} {want}",
                            shell_quote(&req.pool),
                            shell_quote(&req.name)
                        ))],
                    );
                }
                Ok(finish(plan, vol.path.clone(), req, want))
            }
        }
    }
}

/// The backing image's path and format: a volume of the pool by name or path, or a path
/// elsewhere (virsh finds it by path in whichever pool holds it).
fn resolve_backing(
    pool: &PoolVolumes,
    backing: &str,
    format: Option<Format>,
) -> Result<(String, Format), ModuleError> {
    if let Some(v) = pool.find(backing) {
        let own = match v.format.as_deref() {
            Some("raw") => Some(Format::Raw),
            Some("qcow2") => Some(Format::Qcow2),
            _ => None,
        };
        let path = v
            .path
            .clone()
            .ok_or_else(|| ModuleError::Host(format!("backing volume {backing} has no path")))?;
        return Ok((path, format.or(own).unwrap_or(Format::Qcow2)));
    }
    if !backing.starts_with('/') {
        return Err(ModuleError::Host(format!(
            "backing volume {backing} is not in storage pool {}",
            pool.pool
        )));
    }
    Ok((backing.to_string(), format.unwrap_or(Format::Qcow2)))
}

/// The path a new volume will most likely get: the one its name would have next to the pool's
/// other volumes (a dir pool's target), for `register`.
fn vol_path(pool: &PoolVolumes, name: &str) -> Option<String> {
    let dir = pool.volumes.first()?.path.as_deref()?.rsplit_once('/')?.0;
    Some(format!("{dir}/{name}"))
}

fn describe(capacity: u64, format: Option<&str>) -> String {
    format!(
        "capacity: {} ({capacity} bytes)\nformat: {}\n",
        human_size(capacity),
        format.unwrap_or("unknown")
    )
}

fn finish(plan: Plan, path: Option<String>, req: &Request, capacity: u64) -> Plan {
    plan.with_data(
        "volume",
        serde_json::json!({
            "pool": req.pool,
            "name": req.name,
            "path": path,
            "capacity": capacity,
            "format": req.format.word(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::facts::libvirt::testing;
    use crate::modules::testing::{arg_error, req, runs};
    use serde_json::json;

    const IMAGES: &str = "/var/lib/libvirt/images";

    /// The pool probe's output for `images`, running (its `pool-info` as in the dir-active
    /// fixture, or inactive as in the fs one) with the volumes of a volumes fixture.
    fn seen(pool_file: &str) -> Observed {
        let out = |f: &str| Observation::Command(CommandOutput::ok(&fixture(f)));
        let info = match pool_file.ends_with("inactive.txt") {
            true => "libvirt_pool/fs.txt",
            false => "libvirt_pool/dir-active.txt",
        };
        let pool = testing::pool(&fixture(info), &fixture(pool_file));
        Observed::new()
            .with_fact::<LibvirtVolumes>("images", Observation::Command(CommandOutput::ok(&pool)))
            .with_fact::<LibvirtDomainDisks>(&(), out("libvirt_domain_disks/two-domains.txt"))
    }

    fn plan(args: serde_json::Value) -> Result<Plan, ModuleError> {
        LibvirtVolume.plan(
            &req(&LibvirtVolume, args),
            &seen("libvirt_volumes/images.txt"),
        )
    }

    fn host_error(args: serde_json::Value) -> String {
        match plan(args) {
            Err(ModuleError::Host(m)) => m,
            other => panic!("expected a host error, got {other:?}"),
        }
    }

    #[test]
    fn probes() {
        let r = req(
            &LibvirtVolume,
            json!({"pool": "images", "name": "a", "capacity": "1G"}),
        );
        assert_eq!(LibvirtVolume.probes(&r), [LibvirtVolumes::probe("images")]);
        let r = req(
            &LibvirtVolume,
            json!({"pool": "images", "name": "a", "state": "absent"}),
        );
        assert_eq!(
            LibvirtVolume.probes(&r),
            [
                LibvirtVolumes::probe("images"),
                LibvirtDomainDisks::probe(&())
            ]
        );
    }

    #[test]
    fn missing_volume_is_created() {
        let p = plan(json!({"pool": "images", "name": "new.qcow2", "capacity": "128G"})).unwrap();
        assert_eq!(
            runs(&p),
            ["virsh -c qemu:///system vol-create-as images new.qcow2 137438953472 --format qcow2"]
        );
        assert_eq!(
            p.changes[0].summary,
            "create volume images/new.qcow2 (128 GiB, qcow2)"
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            (
                "",
                "capacity: 128 GiB (137438953472 bytes)\nformat: qcow2\n"
            )
        );
        assert_eq!(
            p.data["volume"]["path"],
            json!(format!("{IMAGES}/new.qcow2"))
        );
        let p =
            plan(json!({"pool": "images", "name": "d b.img", "capacity": 1000, "format": "raw"}))
                .unwrap();
        assert_eq!(
            runs(&p),
            ["virsh -c qemu:///system vol-create-as images 'd b.img' 1024 --format raw"]
        );
    }

    #[test]
    fn created_on_a_backing_volume() {
        let p = plan(json!({"pool": "images", "name": "vm2.qcow2", "capacity": "20G", "backing": "base.qcow2"}))
            .unwrap();
        assert_eq!(
            runs(&p),
            [format!("virsh -c qemu:///system vol-create-as images vm2.qcow2 21474836480 --format qcow2 \
                      --backing-vol {IMAGES}/base.qcow2 --backing-vol-format qcow2")]
        );
        let p = plan(json!({"pool": "images", "name": "vm2.qcow2", "capacity": "20G", "backing": "data.raw"}))
            .unwrap();
        assert!(
            runs(&p)[0].ends_with("--backing-vol-format raw"),
            "{:?}",
            runs(&p)
        );
        let p = plan(json!({"pool": "images", "name": "x", "capacity": "1G",
                            "backing": "/srv/base.img", "backing_format": "raw"}))
        .unwrap();
        assert!(runs(&p)[0].ends_with("--backing-vol /srv/base.img --backing-vol-format raw"));
        let e = host_error(
            json!({"pool": "images", "name": "x", "capacity": "1G", "backing": "nope.qcow2"}),
        );
        assert_eq!(e, "backing volume nope.qcow2 is not in storage pool images");
    }

    #[test]
    fn present_volume_is_ok() {
        for args in [
            json!({"pool": "images", "name": "vm1.qcow2", "capacity": "128G"}),
            json!({"pool": "images", "name": "vm1.qcow2", "capacity": "128G", "backing": "base.qcow2", "resize": true}),
            json!({"pool": "images", "name": "vm1.qcow2", "capacity": "128G", "backing": format!("{IMAGES}/base.qcow2")}),
            json!({"pool": "images", "name": "data.raw", "capacity": "512M", "format": "raw"}),
            json!({"pool": "images", "name": "data.raw", "capacity": 536870912, "format": "raw"}),
            json!({"pool": "images", "name": "scratch disk.qcow2", "capacity": "10MiB"}),
        ] {
            let p = plan(args.clone()).unwrap();
            assert!(!p.changed(), "{args}");
            assert!(p.actions.is_empty(), "{args}");
        }
        let p = plan(json!({"pool": "images", "name": "vm1.qcow2", "capacity": "128G"})).unwrap();
        assert_eq!(
            p.data["volume"]["path"],
            json!(format!("{IMAGES}/vm1.qcow2"))
        );
    }

    #[test]
    fn growing_needs_resize() {
        let e = host_error(json!({"pool": "images", "name": "vm1.qcow2", "capacity": "256G"}));
        assert_eq!(
            e,
            "volume images/vm1.qcow2 is 128 GiB (137438953472 bytes), smaller than capacity 256 GiB \
             (274877906944 bytes): growing it needs resize: true"
        );
        let p = plan(
            json!({"pool": "images", "name": "vm1.qcow2", "capacity": "256G", "resize": true}),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            ["virsh -c qemu:///system vol-resize --pool images vm1.qcow2 274877906944"]
        );
        assert_eq!(
            p.changes[0].summary,
            "grow volume images/vm1.qcow2 from 128 GiB to 256 GiB"
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            d.before,
            "capacity: 128 GiB (137438953472 bytes)\nformat: qcow2\n"
        );
        assert_eq!(
            d.after,
            "capacity: 256 GiB (274877906944 bytes)\nformat: qcow2\n"
        );
    }

    #[test]
    fn shrinking_is_refused() {
        for resize in [false, true] {
            let e = host_error(
                json!({"pool": "images", "name": "vm1.qcow2", "capacity": "64G", "resize": resize}),
            );
            assert_eq!(
                e,
                "volume images/vm1.qcow2 is 128 GiB (137438953472 bytes), larger than capacity 64 GiB \
                 (68719476736 bytes): volumes are never shrunk"
            );
        }
    }

    #[test]
    fn other_format_or_backing_is_refused() {
        let e = host_error(json!({"pool": "images", "name": "data.raw", "capacity": "512M"}));
        assert!(
            e.starts_with("volume images/data.raw is raw, not qcow2"),
            "{e}"
        );
        let e = host_error(
            json!({"pool": "images", "name": "vm1.qcow2", "capacity": "1G", "format": "raw"}),
        );
        assert!(
            e.starts_with("volume images/vm1.qcow2 is qcow2, not raw"),
            "{e}"
        );
        let e = host_error(
            json!({"pool": "images", "name": "base.qcow2", "capacity": "1G", "backing": "vm1.qcow2"}),
        );
        assert_eq!(
            e,
            format!(
                "volume images/base.qcow2 is backed by nothing, not {IMAGES}/vm1.qcow2: \
                     volumes are not recreated (state: absent deletes it first)"
            )
        );
    }

    #[test]
    fn absent_deletes_only_unused_volumes() {
        let p = plan(json!({"pool": "images", "name": "scratch disk.qcow2", "state": "absent"}))
            .unwrap();
        assert_eq!(
            runs(&p),
            ["virsh -c qemu:///system vol-delete --pool images 'scratch disk.qcow2'"]
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("capacity: 10 MiB (10485760 bytes)\nformat: qcow2\n", "")
        );
        let p = plan(json!({"pool": "images", "name": "gone.qcow2", "state": "absent"})).unwrap();
        assert!(!p.changed());
        let e = host_error(json!({"pool": "images", "name": "vm1.qcow2", "state": "absent"}));
        assert_eq!(
            e,
            "volume images/vm1.qcow2 is a disk of domain vm1: not deleting it"
        );
        let e = host_error(json!({"pool": "images", "name": "data.raw", "state": "absent"}));
        assert_eq!(
            e,
            "volume images/data.raw is a disk of domain vm2: not deleting it"
        );
        let e = host_error(json!({"pool": "images", "name": "base.qcow2", "state": "absent"}));
        assert_eq!(
            e,
            "volume images/base.qcow2 is the backing image of vm1.qcow2: not deleting it"
        );
    }

    #[test]
    fn missing_or_inactive_pool_fails() {
        let r = req(
            &LibvirtVolume,
            json!({"pool": "images", "name": "a", "capacity": "1G"}),
        );
        let missing = Observed::new().with_fact::<LibvirtVolumes>(
            "images",
            Observation::Command(CommandOutput::failed(
                1,
                &fixture("libvirt_volumes/not-found.stderr"),
            )),
        );
        assert_eq!(
            LibvirtVolume.plan(&r, &missing),
            Err(ModuleError::Host(
                "storage pool images does not exist".into()
            ))
        );
        let e = LibvirtVolume
            .plan(&r, &seen("libvirt_volumes/inactive.txt"))
            .unwrap_err();
        assert_eq!(
            e,
            ModuleError::Host(
                "storage pool images is inactive, not running: its volumes cannot be read or \
                 changed (virsh pool-start images)"
                    .into()
            )
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128G"), Ok(128 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1000"), Ok(1024));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(human_size(128 << 30), "128 GiB");
        assert_eq!(human_size(1_000_000_000), "1000000000 bytes");
        assert_eq!(human_size(1536 << 20), "1536 MiB");
    }

    #[test]
    fn argument_errors() {
        for (v, kind, param) in [
            (
                json!({"pool": "p", "name": "a"}),
                ArgErrorKind::Requires { other: "capacity" },
                "state",
            ),
            (
                json!({"pool": "p", "name": "a", "capacity": "lots"}),
                ArgErrorKind::Invalid,
                "capacity",
            ),
            (
                json!({"pool": "p", "name": "a/b", "capacity": "1G"}),
                ArgErrorKind::Invalid,
                "name",
            ),
            (
                json!({"pool": "", "name": "a", "capacity": "1G"}),
                ArgErrorKind::Invalid,
                "pool",
            ),
            (
                json!({"pool": "p", "name": "a", "capacity": "1G", "format": "raw", "backing": "b"}),
                ArgErrorKind::Conflict { with: "format" },
                "backing",
            ),
            (
                json!({"pool": "p", "name": "a", "capacity": "1G", "backing_format": "raw"}),
                ArgErrorKind::Requires { other: "backing" },
                "backing_format",
            ),
        ] {
            let e = arg_error(&LibvirtVolume, v.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{v}");
        }
        // Deleting needs no capacity.
        req(
            &LibvirtVolume,
            json!({"pool": "p", "name": "a", "state": "absent"}),
        );
    }
}
