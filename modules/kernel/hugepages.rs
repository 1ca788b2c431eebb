//! `hugepages`: huge pages reserved for guests, now and at every boot, with their hugetlbfs
//! mounts and libvirt told where they are.
//!
//! Pages the running kernel can reserve (2M, usually) are written to sysfs and read back in the
//! same script; they are kept across reboots by a systemd-tmpfiles line writing the same sysfs
//! file early at boot. Pages the running kernel cannot be trusted to find (1G: a contiguous
//! gigabyte is rarely free once a host has run for a while), and pages a runtime reservation
//! came short of, are planned as kernel arguments through `grub_cmdline`, with
//! `reboot_required`.

use super::grub_cmdline::{self, GrubCmdline};
use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, Module, ModuleError, ModuleSpec, Observed,
    Plan, PlanContext, Probe,
};
use crate::modules::args;
use crate::modules::facts::hugepages::{parse_size_kb, HugePages};
use crate::modules::files::edit;
use crate::modules::libvirt::config::{self as libvirt_config, ConfValue, LibvirtConfig};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub struct HugePagesModule;

static SPEC: ModuleSpec = ModuleSpec {
    name: "hugepages",
    summary: "Reserve huge pages (2M, 1G, per NUMA node) now and at boot, mount hugetlbfs, tell libvirt",
    description: "`pages` lists reservations: `{size: 2M, count: 512}` for the whole host, \
`{size: 1G, count: 4, node: 0}` on one NUMA node. A size is given for the whole host or per node, \
not both. Counts are exact: fewer pages than reserved now frees the difference.\n\n\
**Now or at boot.** A reservation with `boot: false` (the default below 1G) is written to \
/sys/.../hugepages-SIZEkB/nr_hugepages (the node's under /sys/devices/system/node/nodeN when \
`node` is given) and read back in the same step: the kernel reserves what it can find, and \
when free memory is too fragmented it gives fewer. That shortfall fails the task with both \
numbers, and the next run reserves those pages at boot instead (kernel arguments, \
`reboot_required`), when memory is not yet fragmented. Runtime reservations are kept across \
reboots by a systemd-tmpfiles `w` line per reservation in `persist_file`, writing the same sysfs \
file early at boot (before libvirt starts): unlike `vm.nr_hugepages` in sysctl.d, it names the \
page size and the node (sysctl only sets the default size, for the whole machine, and means 1G \
pages once default_hugepagesz=1G), and unlike kernel arguments it needs no reboot and no \
grub.cfg regeneration for what the running kernel already did. With `boot: true` (the default \
for 1G pages) the pages are reserved at boot only: `hugepagesz=1G hugepages=4` (per node \
`hugepages=0:4,1:4`, Linux 5.16+) and `default_hugepagesz` when `default_size` is given go into \
the GRUB drop-in `dropin` through the `grub_cmdline` module's rules, and `reboot_required` is \
set until the running kernel has them; a kernel that booted with them but reserved fewer pages \
is an error naming both numbers.\n\n\
**Safety.** Huge pages are taken out of the memory the host and its processes can use, and a \
host whose memory is all in huge pages dies of out-of-memory at boot. So the module refuses, \
naming the numbers, to reserve more than `max_percent` (default 90) of the memory: of MemTotal \
in /proc/meminfo for the whole host (all sizes together, also those this task does not manage), \
of the node's MemTotal for a node. Sizes the CPU does not support (1G needs the pdpe1gb flag) are \
refused. With setup-kvm.sh's pools (512 x 2M and 4 x 1G: 5 GiB) a host needs at least 5.6 GiB; \
on a 2 GiB host, 4000 x 2M is refused with `huge pages would take 8000 MiB, more than \
max_percent 90% (1768 MiB) of this host's 1964 MiB of memory`. In a container /sys is read-only and the kernel belongs to the machine running it: the \
task fails saying so instead of trying.\n\n\
**Mounts and libvirt.** With `mount: true` each size gets a hugetlbfs mount, in /etc/fstab and \
mounted now: 2M at /dev/hugepages (where systemd mounts the default size; the fstab line pins \
`pagesize=2M`), 1G at /dev/hugepages1G, other sizes at /dev/hugepagesSIZE. With `qemu_conf` \
(default /etc/libvirt/qemu.conf, \"\" leaves it alone) `hugetlbfs_mount` lists those mounts, \
the default size first, edited by the `libvirt_config` module's rules; a missing qemu.conf \
(libvirt not installed yet) is left alone and the message says so. libvirtd only reads the \
mounts when it starts: give the task a `notify:` that restarts it; the result's \
`libvirt_restart` says whether it is needed.",
    params: &[
        ParamSpec::required(
            "pages",
            ParamKind::Data,
            "List of {size: 2M|1G, count: N, node: N (optional), boot: true|false (optional)}",
        ),
        ParamSpec::optional(
            "default_size",
            ParamKind::Choice(&["2M", "1G"]),
            "The kernel's default huge page size (default_hugepagesz, at boot)",
        ),
        ParamSpec::with_default(
            "max_percent",
            ParamKind::Int,
            "90",
            "Most of the memory (host's, or node's) huge pages may take, in percent",
        ),
        ParamSpec::with_default(
            "mount",
            ParamKind::Bool,
            "true",
            "Mount a hugetlbfs per size (fstab and now)",
        ),
        ParamSpec::with_default(
            "qemu_conf",
            ParamKind::Str,
            "/etc/libvirt/qemu.conf",
            "libvirt's qemu.conf, whose hugetlbfs_mount lists the mounts; \"\" leaves it alone",
        ),
        ParamSpec::with_default(
            "persist_file",
            ParamKind::Str,
            "/etc/tmpfiles.d/kvmforge-hugepages.conf",
            "systemd-tmpfiles file that repeats runtime reservations at boot",
        ),
        ParamSpec::with_default(
            "dropin",
            ParamKind::Str,
            "/etc/default/grub.d/96-kvmforge-hugepages.cfg",
            "GRUB drop-in for the boot-time kernel arguments (see grub_cmdline)",
        ),
    ],
    free_form: None,
    example: r#"- name: huge pages for the guests (setup-kvm.sh's 2M and 1G pools)
  hugepages:
    pages:
      - {size: 2M, count: 512}
      - {size: 1G, count: 4}
  register: hugepages
  notify: restart libvirt
"#,
};

const FSTAB: &str = "/etc/fstab";
const KB_1G: u64 = 1024 * 1024;

/// The arguments as given.
#[derive(Deserialize)]
struct Params {
    pages: Value,
    default_size: Option<String>,
    max_percent: i64,
    mount: bool,
    qemu_conf: String,
    persist_file: String,
    dropin: String,
}

/// One reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pages {
    pub size_kb: u64,
    pub count: u64,
    pub node: Option<u32>,
    /// Reserved on the kernel command line, not at runtime.
    pub boot: bool,
}

/// A `hugepages` task's arguments, checked.
pub struct Request {
    pages: Vec<Pages>,
    default_kb: Option<u64>,
    max_percent: u64,
    mount: bool,
    qemu_conf: Option<String>,
    persist_file: String,
    dropin: String,
}

/// `2M`, `1G`, `2048kB` as people write them; `2048 kB` pages are `2M`.
fn size_name(kb: u64) -> String {
    if kb % KB_1G == 0 {
        format!("{}G", kb / KB_1G)
    } else if kb % 1024 == 0 {
        format!("{}M", kb / 1024)
    } else {
        format!("{kb}K")
    }
}

fn mib(kb: u64) -> u64 {
    kb / 1024
}

/// Where the hugetlbfs of a size is mounted.
fn mount_point(kb: u64) -> String {
    if kb == 2048 {
        "/dev/hugepages".into()
    } else {
        format!("/dev/hugepages{}", size_name(kb))
    }
}

fn sysfs(p: &Pages) -> String {
    match p.node {
        Some(n) => format!(
            "/sys/devices/system/node/node{n}/hugepages/hugepages-{}kB/nr_hugepages",
            p.size_kb
        ),
        None => format!(
            "/sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages",
            p.size_kb
        ),
    }
}

fn where_(node: Option<u32>) -> String {
    match node {
        Some(n) => format!("on node {n}"),
        None => "on the host".into(),
    }
}

fn parse_pages(v: &Value) -> Result<Vec<Pages>, ArgError> {
    let bad = |m: String| ArgError::invalid("pages", m);
    let Value::Array(items) = v else {
        return Err(bad(
            "pages must be a list of {size, count} mappings, e.g. [{size: 2M, count: 512}]".into(),
        ));
    };
    if items.is_empty() {
        return Err(ArgError::nothing_to_do("nothing to do: pages is empty"));
    }
    let mut out: Vec<Pages> = Vec::new();
    for item in items {
        let Value::Object(m) = item else {
            return Err(bad(format!(
                "{item} is not a mapping: give each entry as {{size: 2M, count: 512}}"
            )));
        };
        if let Some(k) = m
            .keys()
            .find(|k| !["size", "count", "node", "boot"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown key {k:?} in {item} (size, count, node, boot)"
            )));
        }
        let size = match m.get("size") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return Err(bad(format!("{item} has no size (2M or 1G)"))),
        };
        let size_kb = parse_size_kb(&size)
            .filter(|kb| kb.is_power_of_two() && *kb >= 64)
            .ok_or_else(|| bad(format!("{size:?} is not a huge page size (2M, 1G)")))?;
        let count = match m.get("count") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| bad(format!("{item}: count must be a whole number of pages")))?;
        let node = match m.get("node") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad(format!("{item}: node must be a NUMA node number")))?,
            ),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse()
                    .map_err(|_| bad(format!("{item}: node must be a NUMA node number")))?,
            ),
            Some(_) => return Err(bad(format!("{item}: node must be a NUMA node number"))),
        };
        let boot = match m.get("boot") {
            None | Some(Value::Null) => size_kb >= KB_1G,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad(format!("{item}: boot must be true or false"))),
        };
        let p = Pages {
            size_kb,
            count,
            node,
            boot,
        };
        let name = size_name(size_kb);
        for q in out.iter().filter(|q| q.size_kb == size_kb) {
            if q.node == node {
                return Err(bad(format!(
                    "{name} pages {} are given twice",
                    where_(node)
                )));
            }
            if q.node.is_none() || node.is_none() {
                return Err(bad(format!(
                    "{name} pages are given for the whole host and per node: give one or the other"
                )));
            }
            if q.boot != boot {
                return Err(bad(format!(
                    "{name} pages are reserved at boot on one node and at runtime on another: \
                     give every node of a size the same boot"
                )));
            }
        }
        out.push(p);
    }
    Ok(out)
}

// --- fstab ----------------------------------------------------------------------------------

/// /etc/fstab with a hugetlbfs line for each `(mount point, size)`: a line for the mount point is
/// replaced when it is not that hugetlbfs, other lines are kept.
fn fstab_with(text: &str, mounts: &[(String, u64)]) -> String {
    let (mut lines, _) = edit::lines(text);
    for (path, kb) in mounts {
        let want = format!("hugetlbfs {path} hugetlbfs pagesize={} 0 0", size_name(*kb));
        let at = lines.iter().position(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            !l.trim_start().starts_with('#') && f.get(1) == Some(&path.as_str())
        });
        match at {
            Some(i) => {
                let f: Vec<&str> = lines[i].split_whitespace().collect();
                let ok = f.get(2) == Some(&"hugetlbfs")
                    && f.get(3).is_some_and(|o| {
                        o.split(',')
                            .filter_map(|o| o.strip_prefix("pagesize="))
                            .any(|s| parse_size_kb(s) == Some(*kb))
                    });
                if !ok {
                    lines[i] = want;
                }
            }
            None => lines.push(want),
        }
    }
    edit::unlines(&lines)
}

// --- tmpfiles -------------------------------------------------------------------------------

fn persist_content(runtime: &[&Pages]) -> String {
    let mut s = String::from(
        "# Managed by kvmforge (hugepages): huge pages reserved again at every boot by\n\
         # systemd-tmpfiles (w: write the count to the kernel's sysfs file).\n",
    );
    for p in runtime {
        s.push_str(&format!("w {} - - - - {}\n", sysfs(p), p.count));
    }
    s
}

/// The counts a persist file asks for, by sysfs path.
fn persisted(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["w", path, _, _, _, _, n] => Some((path.to_string(), n.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

// --- The module -----------------------------------------------------------------------------

impl Request {
    fn grub_request(&self, args: Vec<String>) -> Result<grub_cmdline::Request, ModuleError> {
        Ok(grub_cmdline::Request::present(args, &self.dropin)?)
    }
}

/// The boot-time kernel arguments for these sizes: `hugepagesz=S hugepages=N` (per node
/// `hugepages=0:N,1:M`), in size order, `default_hugepagesz` first.
fn boot_args(req: &Request, sizes: &BTreeSet<u64>, keep: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(d) = req.default_kb {
        args.push(format!("default_hugepagesz={}", size_name(d)));
    }
    for kb in sizes {
        let of_size: Vec<&Pages> = req.pages.iter().filter(|p| p.size_kb == *kb).collect();
        args.push(format!("hugepagesz={}", size_name(*kb)));
        if of_size.iter().all(|p| p.node.is_some()) {
            let per_node: Vec<String> = of_size
                .iter()
                .map(|p| format!("{}:{}", p.node.unwrap_or(0), p.count))
                .collect();
            args.push(format!("hugepages={}", per_node.join(",")));
        } else {
            args.push(format!("hugepages={}", of_size[0].count));
        }
    }
    args.extend(keep.iter().cloned());
    args
}

/// The `hugepagesz=S hugepages=N` pairs of a command line, by size.
fn cmdline_sizes(words: &[&str]) -> Vec<(u64, Vec<String>)> {
    let mut out: Vec<(u64, Vec<String>)> = Vec::new();
    let mut current: Option<u64> = None;
    for w in words {
        if let Some(s) = w.strip_prefix("hugepagesz=") {
            current = parse_size_kb(s);
            if let Some(kb) = current {
                out.push((kb, vec![w.to_string()]));
            }
        } else if w.starts_with("hugepages=") {
            if let (Some(kb), Some(last)) = (current, out.last_mut()) {
                if last.0 == kb {
                    last.1.push(w.to_string());
                }
            }
        }
    }
    out
}

impl Module for HugePagesModule {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, a: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = a.parse()?;
        let pages = parse_pages(&p.pages)?;
        if !(1..=100).contains(&p.max_percent) {
            return Err(ArgError::invalid(
                "max_percent",
                format!(
                    "max_percent must be between 1 and 100, got {}",
                    p.max_percent
                ),
            )
            .into());
        }
        let qemu_conf = (!p.qemu_conf.is_empty()).then_some(p.qemu_conf);
        if let Some(q) = &qemu_conf {
            args::absolute_path("qemu_conf", q)?;
        }
        args::absolute_path("persist_file", &p.persist_file)?;
        if !p.persist_file.ends_with(".conf") {
            return Err(ArgError::invalid(
                "persist_file",
                format!(
                    "persist_file {:?} must end in .conf: systemd-tmpfiles reads only those",
                    p.persist_file
                ),
            )
            .into());
        }
        let req = Request {
            pages,
            default_kb: p.default_size.as_deref().and_then(parse_size_kb),
            max_percent: p.max_percent as u64,
            mount: p.mount,
            qemu_conf,
            persist_file: p.persist_file,
            dropin: p.dropin,
        };
        // The drop-in is checked as grub_cmdline checks it.
        req.grub_request(vec!["hugepages=0".into()])?;
        if !req.dropin.ends_with(".cfg") {
            return Err(ArgError::invalid(
                "dropin",
                format!(
                    "dropin {:?} must end in .cfg: grub-mkconfig only reads /etc/default/grub.d/*.cfg",
                    req.dropin
                ),
            )
            .into());
        }
        args::absolute_path("dropin", &req.dropin)?;
        Ok(req)
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        let mut probes = vec![
            HugePages::probe(&()),
            Probe::File(req.persist_file.clone()),
            Probe::File("/proc/cmdline".into()),
        ];
        if req.mount {
            probes.push(Probe::File(FSTAB.into()));
        }
        if let Some(q) = &req.qemu_conf {
            probes.extend(LibvirtConfig.probes(&libvirt_config::Request::settings(q, Vec::new())));
        }
        // Always observed: whether a size goes to boot time is only known when planning.
        if let Ok(g) = req.grub_request(vec!["hugepages=0".into()]) {
            probes.extend(GrubCmdline.probes(&g));
        }
        probes.sort();
        probes.dedup();
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let hp = observed.fact::<HugePages>(&())?;
        let mut plan = Plan::ok();

        // Sizes and nodes the kernel has.
        for p in &req.pages {
            if !hp.sizes.contains_key(&p.size_kb) {
                let have: Vec<String> = hp.sizes.keys().map(|k| size_name(*k)).collect();
                return Err(ModuleError::Host(format!(
                    "this kernel has no {} huge pages (it has {}){}",
                    size_name(p.size_kb),
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    },
                    if p.size_kb == KB_1G {
                        ": 1G pages need a CPU with the pdpe1gb flag"
                    } else {
                        ""
                    }
                )));
            }
            if let Some(n) = p.node {
                if !hp.nodes.contains_key(&n) {
                    return Err(ModuleError::Host(format!(
                        "there is no NUMA node {n} (nodes: {})",
                        hp.nodes
                            .keys()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        if let Some(d) = req.default_kb {
            if !hp.sizes.contains_key(&d) {
                return Err(ModuleError::Host(format!(
                    "default_size {}: this kernel has no such huge pages",
                    size_name(d)
                )));
            }
        }

        // The count a reservation has now.
        let current = |p: &Pages| -> u64 {
            match p.node {
                Some(n) => hp.nodes[&n].pools.get(&p.size_kb).map_or(0, |x| x.total),
                None => hp.sizes[&p.size_kb].total,
            }
        };

        // Safety: never more than max_percent of the memory.
        let mut total_kb = 0u64;
        for (kb, pool) in &hp.sizes {
            let of_size: Vec<&Pages> = req.pages.iter().filter(|p| p.size_kb == *kb).collect();
            let count = if of_size.is_empty() {
                pool.total
            } else if of_size[0].node.is_none() {
                of_size[0].count
            } else {
                hp.nodes
                    .iter()
                    .map(|(n, node)| {
                        of_size
                            .iter()
                            .find(|p| p.node == Some(*n))
                            .map_or(node.pools.get(kb).map_or(0, |x| x.total), |p| p.count)
                    })
                    .sum()
            };
            total_kb += kb * count;
        }
        let limit = hp.mem_kb * req.max_percent / 100;
        if total_kb > limit {
            let asked: Vec<String> = req
                .pages
                .iter()
                .map(|p| {
                    format!(
                        "{} x {} ({} MiB) {}",
                        p.count,
                        size_name(p.size_kb),
                        mib(p.count * p.size_kb),
                        where_(p.node)
                    )
                })
                .collect();
            return Err(ModuleError::Host(format!(
                "refusing to reserve {}: huge pages would take {} MiB, more than max_percent {}% \
                 ({} MiB) of this host's {} MiB of memory (MemTotal in /proc/meminfo). Reserve fewer \
                 pages, or raise max_percent if the host really needs so little for itself",
                asked.join(", "),
                mib(total_kb),
                req.max_percent,
                mib(limit),
                mib(hp.mem_kb)
            )));
        }
        for (n, node) in &hp.nodes {
            let on_node: u64 = req
                .pages
                .iter()
                .filter(|p| p.node == Some(*n))
                .map(|p| p.size_kb * p.count)
                .sum::<u64>()
                + node
                    .pools
                    .iter()
                    .filter(|(kb, _)| {
                        !req.pages
                            .iter()
                            .any(|p| p.node == Some(*n) && p.size_kb == **kb)
                    })
                    .filter(|(kb, _)| {
                        !req.pages
                            .iter()
                            .any(|p| p.node.is_none() && p.size_kb == **kb)
                    })
                    .map(|(kb, pool)| kb * pool.total)
                    .sum::<u64>();
            let node_limit = node.mem_kb * req.max_percent / 100;
            if req.pages.iter().any(|p| p.node == Some(*n)) && on_node > node_limit {
                return Err(ModuleError::Host(format!(
                    "refusing to reserve huge pages on node {n}: they would take {} MiB, more than \
                     max_percent {}% ({} MiB) of the node's {} MiB (MemTotal in \
                     /sys/devices/system/node/node{n}/meminfo)",
                    mib(on_node),
                    req.max_percent,
                    mib(node_limit),
                    mib(node.mem_kb)
                )));
            }
        }

        // What the persist file and the running kernel's command line say.
        let persist_state = observed.file(&req.persist_file)?;
        let persist_text = edit::existing_text(&req.persist_file, persist_state)?;
        let persisted = persisted(persist_text.as_deref().unwrap_or_default());
        let cmdline = observed.file("/proc/cmdline")?.text();
        let words: Vec<&str> = cmdline
            .split_whitespace()
            .take_while(|w| *w != "--")
            .collect();
        let on_cmdline = cmdline_sizes(&words);
        let dropin_text = observed
            .file(&req.dropin)
            .map(|f| f.text())
            .unwrap_or_default();
        let dropin_words: Vec<&str> = dropin_text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == '"'))
            .collect();
        let in_dropin = cmdline_sizes(&dropin_words);

        // Which sizes are reserved at boot: asked for, already there, or a runtime reservation
        // that came short before (the persist file asks for it and the kernel has fewer).
        let mut boot_sizes: BTreeSet<u64> = BTreeSet::new();
        let mut shortfalls: Vec<String> = Vec::new();
        for p in &req.pages {
            let there = in_dropin.iter().any(|(kb, _)| *kb == p.size_kb)
                || on_cmdline.iter().any(|(kb, _)| *kb == p.size_kb);
            let short =
                !p.boot && persisted.get(&sysfs(p)) == Some(&p.count) && current(p) < p.count;
            if short {
                shortfalls.push(format!(
                    "{} of {} {} pages {}",
                    current(p),
                    p.count,
                    size_name(p.size_kb),
                    where_(p.node)
                ));
            }
            if p.boot || there || short {
                boot_sizes.insert(p.size_kb);
            }
        }
        // Huge page arguments of sizes this task does not manage stay as the kernel has them.
        let keep: Vec<String> = on_cmdline
            .iter()
            .filter(|(kb, _)| !req.pages.iter().any(|p| p.size_kb == *kb))
            .flat_map(|(_, w)| w.clone())
            .collect();

        let runtime: Vec<&Pages> = req
            .pages
            .iter()
            .filter(|p| !boot_sizes.contains(&p.size_kb) || !p.boot)
            .collect();
        let runtime_changes: Vec<&&Pages> =
            runtime.iter().filter(|p| current(p) != p.count).collect();

        // A container cannot change the kernel.
        let boot_wanted = !boot_sizes.is_empty() || req.default_kb.is_some();
        let boot_short: Vec<&Pages> = req
            .pages
            .iter()
            .filter(|p| boot_sizes.contains(&p.size_kb) && current(p) != p.count)
            .collect();
        if let Some(c) = &hp.container {
            if !runtime_changes.is_empty() || !boot_short.is_empty() {
                return Err(ModuleError::Host(format!(
                    "this host is a container ({c}): the kernel belongs to the machine running it \
                     and /sys is read-only here, so huge pages cannot be reserved from inside. \
                     Reserve them on that machine (this module run against it)"
                )));
            }
        }
        if let Some(p) = runtime_changes
            .iter()
            .find(|p| !hp.writable.contains(&p.size_kb))
        {
            return Err(ModuleError::Host(format!(
                "{} is read-only on this host: the kernel's huge pages cannot be changed here",
                sysfs(p)
            )));
        }

        // Mounts.
        let mut sizes: Vec<u64> = req.pages.iter().map(|p| p.size_kb).collect();
        sizes.sort();
        sizes.dedup();
        let default_kb = req.default_kb.or(hp.default_kb).unwrap_or(2048);
        sizes.sort_by_key(|kb| (*kb != default_kb, *kb));
        let mounts: Vec<(String, u64)> = sizes.iter().map(|kb| (mount_point(*kb), *kb)).collect();
        if req.mount {
            let state = observed.file(FSTAB)?;
            let text = edit::existing_text(FSTAB, state)?.unwrap_or_default();
            let new = fstab_with(&text, &mounts);
            if new != text {
                edit::ensure_content(
                    &mut plan,
                    FSTAB,
                    state,
                    new.as_bytes(),
                    &Attrs::default(),
                    false,
                )?;
                plan.change(
                    Change::new("reload systemd's view of /etc/fstab"),
                    [Action::run(
                        "if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi",
                    )],
                );
            }
            for (path, kb) in &mounts {
                let live = hp.mounts.iter().find(|m| &m.path == path);
                let opts = format!("pagesize={}", size_name(*kb));
                let q = shell_quote(path);
                match live {
                    Some(m) if m.page_kb == Some(*kb) => {}
                    Some(_) => plan.change(
                        Change::new(format!("remount {path} with {opts}")),
                        [Action::run(format!(
                            "umount {q} && mount -t hugetlbfs -o {opts} hugetlbfs {q}"
                        ))],
                    ),
                    None => plan.change(
                        Change::new(format!("mount hugetlbfs ({opts}) at {path}")),
                        [Action::run(format!(
                            "mkdir -p {q} && mount -t hugetlbfs -o {opts} hugetlbfs {q}"
                        ))],
                    ),
                }
            }
        }

        // libvirt's qemu.conf.
        let mut libvirt_restart = false;
        let mut notes: Vec<String> = Vec::new();
        if let Some(q) = &req.qemu_conf {
            if req.mount && observed.file(q)?.exists() {
                let list = ConfValue::List(
                    mounts
                        .iter()
                        .map(|(p, _)| ConfValue::Str(p.clone()))
                        .collect(),
                );
                let lreq =
                    libvirt_config::Request::settings(q, vec![("hugetlbfs_mount".into(), list)]);
                let lplan = LibvirtConfig.plan(&lreq, observed)?;
                if lplan.changed() {
                    libvirt_restart = true;
                    let daemon = lplan
                        .data
                        .get("daemon")
                        .and_then(Value::as_str)
                        .unwrap_or("libvirtd")
                        .to_string();
                    notes.push(format!(
                        "{daemon} reads hugetlbfs_mount only when it starts: restart it (notify a handler)"
                    ));
                    plan.changes.extend(lplan.changes);
                    plan.actions.extend(lplan.actions);
                }
            } else if req.mount {
                notes.push(format!(
                    "{q} does not exist (libvirt not installed?): left alone"
                ));
            }
        }

        // Boot-time reservations through grub_cmdline.
        let mut cmdline_missing = Vec::new();
        if boot_wanted {
            let g = req.grub_request(boot_args(req, &boot_sizes, &keep))?;
            let gplan = GrubCmdline.plan(&g, observed)?;
            plan.reboot_required |= gplan.reboot_required;
            if let Some(Value::Array(m)) = gplan.data.get("cmdline_missing") {
                cmdline_missing = m.clone();
            }
            plan.changes.extend(gplan.changes);
            plan.actions.extend(gplan.actions);
            // Booted with the arguments, yet fewer pages: the kernel could not find them.
            if !gplan.reboot_required {
                if let Some(p) = req.pages.iter().find(|p| p.boot && current(p) < p.count) {
                    return Err(ModuleError::Host(format!(
                        "the kernel booted with the arguments for {} {} pages {} but reserved \
                         only {}: not enough free memory at boot",
                        p.count,
                        size_name(p.size_kb),
                        where_(p.node),
                        current(p)
                    )));
                }
            }
        }

        // Runtime reservations: persisted first (so a shortfall is remembered), then written
        // and read back.
        let persist = persist_content(&runtime);
        if runtime.is_empty() {
            edit::ensure_absent(&mut plan, &req.persist_file, persist_state);
        } else if persist_text.as_deref() != Some(persist.as_str()) {
            let dir_missing = edit::parent_dir(&req.persist_file)
                .is_some_and(|d| observed.file(&d).map(|f| !f.exists()).unwrap_or(false));
            if dir_missing {
                if let Some(d) = edit::parent_dir(&req.persist_file) {
                    plan.change(
                        Change::new(format!("create directory {d}")),
                        [Action::MakeDir {
                            path: d,
                            attrs: Attrs::default(),
                        }],
                    );
                }
            }
            edit::ensure_content(
                &mut plan,
                &req.persist_file,
                persist_state,
                persist.as_bytes(),
                &Attrs::default(),
                false,
            )?;
        }
        if !runtime_changes.is_empty() {
            let mut script = Vec::new();
            let mut summary = Vec::new();
            for p in &runtime_changes {
                let f = shell_quote(&sysfs(p));
                let name = format!("{} pages {}", size_name(p.size_kb), where_(p.node));
                summary.push(format!("{name}: {} -> {}", current(p), p.count));
                // At boot already planned: a shortfall now is expected and not an error.
                let tolerate = boot_sizes.contains(&p.size_kb);
                let n = p.count;
                script.push(format!(
                    "echo {n} > {f} || {{ echo 'cannot write {n} to '{f} >&2; exit 1; }}; got=$(cat {f}); \
                     if [ \"$got\" -lt {n} ]; then echo \"the kernel reserved only $got of {n} {name}: \
                     free memory is too fragmented.{}\" >&2; {} \
                     elif [ \"$got\" -gt {n} ]; then echo \"{name}: $got are still reserved, more than {n}: \
                     pages in use are freed when their guests stop\" >&2; fi",
                    if tolerate {
                        " They are reserved at boot (kernel arguments): reboot."
                    } else {
                        " The next run reserves them at boot instead (kernel arguments, then a reboot)."
                    },
                    if tolerate { "" } else { "exit 1;" }
                ));
            }
            plan.change(
                Change::new(format!("reserve huge pages ({})", summary.join(", "))),
                [Action::run(script.join("; "))],
            );
        }

        let mut msg = Vec::new();
        if !shortfalls.is_empty() {
            msg.push(format!(
                "the running kernel came short of {}: reserving them at boot",
                shortfalls.join(", ")
            ));
        }
        if plan.reboot_required {
            msg.push(format!(
                "reboot needed for the boot-time reservations ({})",
                cmdline_missing
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        msg.extend(notes);
        if !msg.is_empty() {
            plan.msg = Some(msg.join("; "));
        }
        let pools: serde_json::Map<String, Value> = hp
            .sizes
            .iter()
            .map(|(kb, p)| {
                (
                    size_name(*kb),
                    serde_json::json!({"total": p.total, "free": p.free}),
                )
            })
            .collect();
        Ok(plan
            .with_data("libvirt_restart", libvirt_restart)
            .with_data(
                "boot_sizes",
                boot_sizes.iter().map(|k| size_name(*k)).collect::<Vec<_>>(),
            )
            .with_data(
                "mounts",
                mounts.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            )
            .with_data("shortfalls", shortfalls)
            .with_data("before", Value::Object(pools))
            .with_data("mem_total_mb", mib(hp.mem_kb)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::facts::grub::GrubTools;
    use crate::modules::facts::systemd::UnitState;
    use crate::modules::testing::{arg_error, req};
    use serde_json::json;

    const QEMU: &str = "/etc/libvirt/qemu.conf";
    const DROPIN: &str = "/etc/default/grub.d/96-kvmforge-hugepages.cfg";
    const PERSIST: &str = "/etc/tmpfiles.d/kvmforge-hugepages.conf";
    const GRUB: &str = "GRUB_CMDLINE_LINUX=\"console=ttyS0,115200n8 intel_iommu=on\"\n";
    const BOOT: &str = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-amd64 root=UUID=6b1f ro console=ttyS0,115200n8 intel_iommu=on\n";

    fn unit(active: &str) -> Observation {
        Observation::Command(CommandOutput::ok(&format!(
            "LoadState=loaded\nActiveState={active}\nSubState=x\nUnitFileState=enabled\nNeedDaemonReload=no\n"
        )))
    }

    /// The lab VM as the fixtures saw it, before anything was reserved.
    fn vm(hugepages: &str) -> Observed {
        Observed::new()
            .with_fact::<HugePages>(&(), Observation::Command(CommandOutput::ok(hugepages)))
            .with_file(PERSIST, FileState::absent())
            .with_file("/etc/tmpfiles.d", FileState::dir())
            .with_file("/proc/cmdline", FileState::file(BOOT))
            .with_file(
                FSTAB,
                FileState::file("UUID=6b1f / ext4 errors=remount-ro 0 1\n"),
            )
            .with_file(QEMU, FileState::file(fixture("libvirt_conf/qemu.conf")))
            .with_file("/etc/libvirt", FileState::dir())
            .with_fact::<UnitState>("libvirtd.service", unit("active"))
            .with_fact::<UnitState>("virtqemud.service", unit("inactive"))
            .with_file("/etc/default/grub", FileState::file(GRUB))
            .with_file(DROPIN, FileState::absent())
            .with_fact::<GrubTools>(
                &(),
                Observation::Command(CommandOutput::ok(&fixture(
                    "grub_tools/debian12-lab-vm.txt",
                ))),
            )
    }

    fn fresh() -> Observed {
        vm(&fixture("hugepages/vm-fresh.txt"))
    }

    fn written(p: &Plan, path: &str) -> Option<String> {
        p.actions.iter().find_map(|a| match a {
            Action::WriteFile {
                path: w, content, ..
            } if w == path => Some(String::from_utf8_lossy(content).into_owned()),
            _ => None,
        })
    }

    fn runs(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { cmd, .. } => Some(cmd.clone()),
                _ => None,
            })
            .collect()
    }

    fn setup_kvm() -> Request {
        req(
            &HugePagesModule,
            json!({"pages": [{"size": "2M", "count": 256}, {"size": "1G", "count": 1}]}),
        )
    }

    #[test]
    fn probes_cover_every_reading() {
        let p = HugePagesModule.probes(&setup_kvm());
        for want in [
            HugePages::probe(&()),
            Probe::File(PERSIST.into()),
            Probe::File(FSTAB.into()),
            Probe::File(QEMU.into()),
            Probe::File(DROPIN.into()),
            GrubTools::probe(&()),
        ] {
            assert!(p.contains(&want), "{want:?}");
        }
    }

    /// setup-kvm.sh's pools on the fresh lab VM: 2M now (persisted), 1G at boot, both mounted,
    /// qemu.conf told, a reboot needed.
    #[test]
    fn fresh_vm_gets_everything() {
        let p = HugePagesModule.plan(&setup_kvm(), &fresh()).unwrap();
        assert!(p.reboot_required);
        assert_eq!(
            written(&p, FSTAB).unwrap(),
            "UUID=6b1f / ext4 errors=remount-ro 0 1\nhugetlbfs /dev/hugepages hugetlbfs pagesize=2M 0 0\n\
             hugetlbfs /dev/hugepages1G hugetlbfs pagesize=1G 0 0\n"
        );
        assert!(written(&p, QEMU)
            .unwrap()
            .contains("\nhugetlbfs_mount = [ \"/dev/hugepages\", \"/dev/hugepages1G\" ]\n"));
        assert_eq!(
            written(&p, DROPIN).unwrap().lines().last(),
            Some("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX hugepagesz=1G hugepages=1\"")
        );
        assert_eq!(
            written(&p, PERSIST).unwrap().lines().last(),
            Some("w /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages - - - - 256")
        );
        let cmds = runs(&p);
        assert!(cmds.contains(&"mkdir -p /dev/hugepages1G && mount -t hugetlbfs -o pagesize=1G hugetlbfs /dev/hugepages1G".to_string()), "{cmds:?}");
        assert!(cmds.contains(&"update-grub".to_string()), "{cmds:?}");
        let reserve = cmds.last().unwrap();
        assert!(
            reserve
                .starts_with("echo 256 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
            "{reserve}"
        );
        assert!(
            reserve.contains("the kernel reserved only $got of 256 2M pages on the host"),
            "{reserve}"
        );
        assert!(
            reserve.contains("(kernel arguments, then a reboot).\" >&2; exit 1;"),
            "a first shortfall fails: {reserve}"
        );
        assert_eq!(p.data["libvirt_restart"], json!(true));
        assert!(p
            .msg
            .as_deref()
            .unwrap()
            .contains("libvirtd reads hugetlbfs_mount only when it starts"));
        // The runtime write and the persist file come last: a shortfall leaves the rest done.
        assert!(matches!(p.actions.last(), Some(Action::Run { .. })));
    }

    /// After the run and a reboot: the VM has the pages, the mounts, the arguments.
    #[test]
    fn converged_vm_is_ok() {
        let hp = fixture("hugepages/vm-fresh.txt")
            .replace("size 2048 0 0", "size 2048 256 256")
            .replace("size 1048576 0 0", "size 1048576 1 1")
            + "mount /dev/hugepages1G rw,relatime,pagesize=1024M\n";
        let first = HugePagesModule.plan(&setup_kvm(), &fresh()).unwrap();
        let mut seen = vm(&hp).with_file(
            "/proc/cmdline",
            FileState::file(BOOT.replace('\n', " hugepagesz=1G hugepages=1\n")),
        );
        for a in &first.actions {
            if let Action::WriteFile { path, content, .. } = a {
                seen = seen.with_file(path, FileState::file(content.clone()));
            }
        }
        let p = HugePagesModule.plan(&setup_kvm(), &seen).unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        assert!(!p.reboot_required);
        assert_eq!(p.data["libvirt_restart"], json!(false));
    }

    #[test]
    fn a_runtime_shortfall_goes_to_boot_time() {
        let persisted = persist_content(&[&Pages {
            size_kb: 2048,
            count: 512,
            node: None,
            boot: false,
        }]);
        let hp = fixture("hugepages/vm-fresh.txt").replace("size 2048 0 0", "size 2048 300 300");
        let seen = vm(&hp).with_file(PERSIST, FileState::file(persisted));
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "2M", "count": 512}], "qemu_conf": ""}),
        );
        let p = HugePagesModule.plan(&r, &seen).unwrap();
        assert!(p.reboot_required);
        assert_eq!(
            p.data["shortfalls"],
            json!(["300 of 512 2M pages on the host"])
        );
        assert_eq!(
            written(&p, DROPIN).unwrap().lines().last(),
            Some("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX hugepagesz=2M hugepages=512\"")
        );
        // Tried again now, but falling short is expected this time.
        let reserve = runs(&p).pop().unwrap();
        assert!(reserve.contains("reserved at boot"), "{reserve}");
        assert!(reserve.contains("reboot.\" >&2;  elif"), "{reserve}");
        assert!(p
            .msg
            .unwrap()
            .contains("the running kernel came short of 300 of 512 2M pages on the host"));
    }

    #[test]
    fn too_many_pages_are_refused_with_the_numbers() {
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "2M", "count": 4000}]}),
        );
        let e = HugePagesModule.plan(&r, &fresh()).unwrap_err().to_string();
        assert_eq!(
            e,
            "refusing to reserve 4000 x 2M (8000 MiB) on the host: huge pages would take 8000 MiB, \
             more than max_percent 90% (1768 MiB) of this host's 1964 MiB of memory (MemTotal in \
             /proc/meminfo). Reserve fewer pages, or raise max_percent if the host really needs \
             so little for itself"
        );
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "1G", "count": 1, "node": 0}, {"size": "2M", "count": 400, "node": 0}], "max_percent": 50}),
        );
        let e = HugePagesModule.plan(&r, &fresh()).unwrap_err().to_string();
        assert!(
            e.contains("huge pages would take 1824 MiB, more than max_percent 50% (982 MiB)"),
            "{e}"
        );
    }

    #[test]
    fn per_node_reservations() {
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "2M", "count": 64, "node": 0}, {"size": "1G", "count": 1, "node": 0}], "default_size": "1G"}),
        );
        let p = HugePagesModule.plan(&r, &fresh()).unwrap();
        assert_eq!(
            written(&p, DROPIN).unwrap().lines().last(),
            Some("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX default_hugepagesz=1G hugepagesz=1G hugepages=0:1\"")
        );
        assert!(runs(&p).last().unwrap().starts_with(
            "echo 64 > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"
        ));
        // The default size's mount comes first for libvirt.
        assert!(written(&p, QEMU)
            .unwrap()
            .contains("hugetlbfs_mount = [ \"/dev/hugepages1G\", \"/dev/hugepages\" ]"));
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "2M", "count": 1, "node": 3}]}),
        );
        let e = HugePagesModule.plan(&r, &fresh()).unwrap_err().to_string();
        assert_eq!(e, "there is no NUMA node 3 (nodes: 0)");
    }

    #[test]
    fn a_container_cannot_change_the_kernel() {
        let seen = vm(&fixture("hugepages/nspawn-container.txt"));
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "2M", "count": 8}]}),
        );
        let e = HugePagesModule.plan(&r, &seen).unwrap_err().to_string();
        assert!(e.starts_with("this host is a container (systemd-nspawn): the kernel belongs to the machine running it"), "{e}");
        // Nothing asked that it lacks: nothing to refuse.
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "2M", "count": 0}], "mount": false}),
        );
        assert!(HugePagesModule.plan(&r, &seen).is_ok());
    }

    #[test]
    fn unsupported_size() {
        let hp = fixture("hugepages/vm-fresh.txt").replace("size 1048576 0 0 rw\n", "");
        let e = HugePagesModule
            .plan(&setup_kvm(), &vm(&hp))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "this kernel has no 1G huge pages (it has 2M): 1G pages need a CPU with the pdpe1gb flag");
    }

    #[test]
    fn fstab_lines_are_replaced_or_kept() {
        let mounts = [("/dev/hugepages".to_string(), 2048)];
        assert_eq!(
            fstab_with(
                "# x\nhugetlbfs /dev/hugepages hugetlbfs mode=1770,pagesize=2048K 0 0\n",
                &mounts
            ),
            "# x\nhugetlbfs /dev/hugepages hugetlbfs mode=1770,pagesize=2048K 0 0\n"
        );
        assert_eq!(
            fstab_with("none /dev/hugepages hugetlbfs pagesize=1G 0 0\n", &mounts),
            "hugetlbfs /dev/hugepages hugetlbfs pagesize=2M 0 0\n"
        );
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let invalid = ArgErrorKind::Invalid;
        for (bad, kind, param) in [
            (json!({"pages": "2M"}), invalid, "pages"),
            (json!({"pages": []}), ArgErrorKind::NothingToDo, ""),
            (
                json!({"pages": [{"size": "3M", "count": 1}]}),
                invalid,
                "pages",
            ),
            (json!({"pages": [{"size": "2M"}]}), invalid, "pages"),
            (
                json!({"pages": [{"size": "2M", "count": -1}]}),
                invalid,
                "pages",
            ),
            (
                json!({"pages": [{"size": "2M", "count": 1, "nodes": 0}]}),
                invalid,
                "pages",
            ),
            (
                json!({"pages": [{"size": "2M", "count": 1}, {"size": "2M", "count": 2}]}),
                invalid,
                "pages",
            ),
            (
                json!({"pages": [{"size": "2M", "count": 1}, {"size": "2M", "count": 2, "node": 1}]}),
                invalid,
                "pages",
            ),
            (
                json!({"pages": [{"size": "2M", "count": 1}], "max_percent": 0}),
                invalid,
                "max_percent",
            ),
            (
                json!({"pages": [{"size": "2M", "count": 1}], "persist_file": "/etc/tmpfiles.d/x"}),
                invalid,
                "persist_file",
            ),
            (
                json!({"pages": [{"size": "2M", "count": 1}], "dropin": "/etc/default/grub.d/x"}),
                invalid,
                "dropin",
            ),
        ] {
            let e = arg_error(&HugePagesModule, bad.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{bad}");
        }
        let r = req(
            &HugePagesModule,
            json!({"pages": [{"size": "1GB", "count": "2", "node": "1", "boot": false}]}),
        );
        assert_eq!(
            r.pages,
            [Pages {
                size_kb: KB_1G,
                count: 2,
                node: Some(1),
                boot: false
            }]
        );
    }
}
