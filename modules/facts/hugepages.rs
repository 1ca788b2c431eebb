//! Huge pages: what the running kernel has reserved of each page size, per NUMA node, how much
//! memory there is to reserve them from, which hugetlbfs file systems are mounted, and whether
//! this host may change any of it (a container's /sys is read-only).

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};
use std::collections::BTreeMap;

/// One read-only script: `size KB NR FREE rw|ro` for each page size in
/// /sys/kernel/mm/hugepages (`rw` when root may write its nr_hugepages), `node N mem KB` and
/// `node N size KB NR FREE` for each NUMA node, `meminfo MemTotal|Hugepagesize KB` from
/// /proc/meminfo, `mount PATH OPTIONS` for each hugetlbfs mount, and `container NAME` from
/// `systemd-detect-virt --container` (`none` on a machine of its own or without systemd).
const PROBE: &str = r#"for d in /sys/kernel/mm/hugepages/hugepages-*kB; do [ -d "$d" ] || continue; s=${d##*/hugepages-}; w=ro; [ -w "$d/nr_hugepages" ] && w=rw; echo "size ${s%kB} $(cat "$d/nr_hugepages") $(cat "$d/free_hugepages") $w"; done; for n in /sys/devices/system/node/node[0-9]*; do [ -d "$n" ] || continue; id=${n##*/node}; while read -r _ _ k v _; do [ "$k" = MemTotal: ] && echo "node $id mem $v"; done < "$n/meminfo"; for d in "$n"/hugepages/hugepages-*kB; do [ -d "$d" ] || continue; s=${d##*/hugepages-}; echo "node $id size ${s%kB} $(cat "$d/nr_hugepages") $(cat "$d/free_hugepages")"; done; done; while read -r k v _; do case $k in MemTotal:|Hugepagesize:) echo "meminfo ${k%:} $v";; esac; done < /proc/meminfo; while read -r _ m t o _; do [ "$t" = hugetlbfs ] && echo "mount $m $o"; done < /proc/mounts; c=$(systemd-detect-virt --container 2>/dev/null); echo "container ${c:-none}""#;

/// The pages of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pool {
    /// Pages reserved (`nr_hugepages`).
    pub total: u64,
    /// Of those, not in use.
    pub free: u64,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The node's MemTotal in kB.
    pub mem_kb: u64,
    /// Page size in kB → its pages on this node.
    pub pools: BTreeMap<u64, Pool>,
}

/// A mounted hugetlbfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugetlbfsMount {
    pub path: String,
    /// The page size in kB from its `pagesize=` option.
    pub page_kb: Option<u64>,
}

/// The huge pages of a host's running kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HugePages {
    /// Page size in kB → pages of that size on the whole machine. Sizes the CPU and kernel do
    /// not support (1G without the pdpe1gb flag) are not there.
    pub sizes: BTreeMap<u64, Pool>,
    /// Page sizes whose nr_hugepages root may write (not on a read-only /sys).
    pub writable: Vec<u64>,
    /// NUMA node number → node. Empty on a kernel built without NUMA.
    pub nodes: BTreeMap<u32, Node>,
    /// MemTotal of /proc/meminfo in kB.
    pub mem_kb: u64,
    /// The default huge page size in kB (Hugepagesize).
    pub default_kb: Option<u64>,
    pub mounts: Vec<HugetlbfsMount>,
    /// The container technology this host runs in (`systemd-nspawn`, `docker`, `lxc`, ...), if
    /// it is one.
    pub container: Option<String>,
}

/// A size as the kernel prints it in mount options: `2M`, `1024M`, `1G`, `64K`, or bytes.
pub fn parse_size_kb(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let kb = match unit.to_ascii_uppercase().as_str() {
        "" => n / 1024,
        "K" | "KB" => n,
        "M" | "MB" => n * 1024,
        "G" | "GB" => n * 1024 * 1024,
        _ => return None,
    };
    (kb > 0).then_some(kb)
}

impl Fact for HugePages {
    const NAME: &'static str = "huge pages";
    type Key = ();

    fn probe(_: &()) -> Probe {
        Probe::Command(PROBE.into())
    }

    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let mut hp = HugePages::default();
        let num = |s: Option<&str>, line: &str| -> Result<u64, String> {
            s.and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("unexpected line from the huge pages probe: {line:?}"))
        };
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["size", kb, nr, free, w] => {
                    let kb = num(Some(kb), line)?;
                    hp.sizes.insert(
                        kb,
                        Pool {
                            total: num(Some(nr), line)?,
                            free: num(Some(free), line)?,
                        },
                    );
                    if *w == "rw" {
                        hp.writable.push(kb);
                    }
                }
                ["node", id, "mem", kb] => {
                    let id = num(Some(id), line)? as u32;
                    hp.nodes.entry(id).or_default().mem_kb = num(Some(kb), line)?;
                }
                ["node", id, "size", kb, nr, free] => {
                    let id = num(Some(id), line)? as u32;
                    hp.nodes.entry(id).or_default().pools.insert(
                        num(Some(kb), line)?,
                        Pool {
                            total: num(Some(nr), line)?,
                            free: num(Some(free), line)?,
                        },
                    );
                }
                ["meminfo", "MemTotal", kb] => hp.mem_kb = num(Some(kb), line)?,
                ["meminfo", "Hugepagesize", kb] => hp.default_kb = Some(num(Some(kb), line)?),
                ["mount", path, opts] => hp.mounts.push(HugetlbfsMount {
                    path: path.to_string(),
                    page_kb: opts
                        .split(',')
                        .find_map(|o| o.strip_prefix("pagesize="))
                        .and_then(parse_size_kb),
                }),
                ["container", c] => {
                    hp.container = (*c != "none").then(|| c.to_string());
                }
                _ => {}
            }
        }
        if hp.mem_kb == 0 {
            return Err("could not read MemTotal from /proc/meminfo".into());
        }
        Ok(hp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::{fixture, run_here};

    pub fn parse(file: &str) -> HugePages {
        let out = CommandOutput::ok(&fixture(&format!("hugepages/{file}")));
        HugePages::parse(&(), &Observation::Command(out)).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_kb("2M"), Some(2048));
        assert_eq!(parse_size_kb("1024M"), Some(1048576));
        assert_eq!(parse_size_kb("1G"), Some(1048576));
        assert_eq!(parse_size_kb("64K"), Some(64));
        assert_eq!(parse_size_kb("2097152"), Some(2048));
        assert_eq!(parse_size_kb("2X"), None);
        assert_eq!(parse_size_kb(""), None);
    }

    /// The lab VM (Debian 12, 2 GiB, one node, `-cpu max` so 1G pages exist) before anything
    /// was reserved: systemd's /dev/hugepages mounted with the default 2M size.
    #[test]
    fn fresh_vm() {
        let hp = parse("vm-fresh.txt");
        assert_eq!(
            hp.sizes.keys().copied().collect::<Vec<_>>(),
            [2048, 1048576]
        );
        assert_eq!(hp.sizes[&2048], Pool { total: 0, free: 0 });
        assert_eq!(hp.writable, [1048576, 2048]);
        assert_eq!(hp.nodes.len(), 1);
        assert!(hp.nodes[&0].mem_kb > 1_900_000, "{:?}", hp.nodes);
        assert_eq!(hp.nodes[&0].pools[&2048], Pool { total: 0, free: 0 });
        assert!(hp.mem_kb > 1_900_000);
        assert_eq!(hp.default_kb, Some(2048));
        assert_eq!(
            hp.mounts,
            [HugetlbfsMount {
                path: "/dev/hugepages".into(),
                page_kb: Some(2048)
            }]
        );
        assert_eq!(hp.container, None);
    }

    /// A lab container: the kernel's sizes are visible, /sys is read-only.
    #[test]
    fn container() {
        let hp = parse("nspawn-container.txt");
        assert!(hp.sizes.contains_key(&2048));
        assert!(hp.writable.is_empty());
        assert_eq!(hp.container.as_deref(), Some("systemd-nspawn"));
    }

    /// The probe runs with this machine's shell and reads only.
    #[test]
    fn probe_runs_here() {
        let hp = HugePages::parse(&(), &run_here(&HugePages::probe(&()))).unwrap();
        assert!(hp.mem_kb > 0);
    }

    #[test]
    fn errors() {
        let e = HugePages::parse(
            &(),
            &Observation::Command(CommandOutput::ok("container none\n")),
        )
        .unwrap_err();
        assert!(e.contains("MemTotal"), "{e}");
        let e = HugePages::parse(
            &(),
            &Observation::Command(CommandOutput::ok("size x 1 1 rw\nmeminfo MemTotal 5\n")),
        )
        .unwrap_err();
        assert!(e.contains("size x"), "{e}");
    }
}
