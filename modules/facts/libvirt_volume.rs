//! libvirt storage volumes: every volume of one pool with its definition, and the disks every
//! defined domain uses.
//!
//! [`LibvirtVolumes`] is keyed by the pool's name and read from the pool's probe
//! ([`super::libvirt::pool_probe`], shared with [`super::libvirt::LibvirtPool`]): `pool-info`
//! (does the pool exist, is it running) and, for a pool that lists volumes, one `vol-dumpxml`
//! per volume, each after a `KF-SEP volume NAME` line, all of them in one more `virsh`. An
//! inactive pool lists no volumes (libvirt cannot), which the fact says rather than reporting an
//! empty pool.
//!
//! [`LibvirtDomainDisks`] is host-wide: `virsh list --all --name`, then for each domain, after a
//! `== domain NAME` line, its live and its inactive `dumpxml` (a running domain may have disks
//! attached live only, or in its definition only). The disks' sources are kept: a file or block
//! device path, or a pool and volume name.
//!
//! Like [`super::libvirt`], `virsh` runs with `-c qemu:///system` and `LC_ALL=C`. Sizes are in
//! bytes; libvirt prints `unit='bytes'`, but any unit libvirt accepts in XML is converted.

use super::libvirt::{info_lines, pool_probe, section, sections, virsh_failure};
use crate::module::fact::{command_output, stdout_of, Fact};
use crate::module::{Observation, Probe};
use roxmltree::{Document, Node};

const VIRSH: &str = "LC_ALL=C virsh -c qemu:///system";

/// The volumes of a pool by the pool's name: `None` when libvirt has no pool of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtVolumes(pub Option<PoolVolumes>);

/// A pool's state and, when it runs, its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolVolumes {
    pub pool: String,
    /// `State:` of `virsh pool-info` (`running`, `inactive`, `building`, `degraded`,
    /// `inaccessible`).
    pub state: String,
    /// In `vol-list` order; empty unless the pool is running.
    pub volumes: Vec<Volume>,
}

/// One storage volume, from `virsh vol-dumpxml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// `file`, `block`, `dir`, `network`, ...
    pub vol_type: Option<String>,
    pub key: Option<String>,
    /// The size the guest sees, in bytes.
    pub capacity: u64,
    /// The space it takes on the host, in bytes.
    pub allocation: Option<u64>,
    pub path: Option<String>,
    /// `qcow2`, `raw`, ... (`<target><format type=...>`).
    pub format: Option<String>,
    pub backing: Option<BackingStore>,
    /// The document as virsh printed it.
    pub xml: String,
}

/// `<backingStore>` of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingStore {
    pub path: String,
    pub format: Option<String>,
}

/// The disks of every defined or running domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LibvirtDomainDisks(pub Vec<DomainDisks>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDisks {
    pub domain: String,
    /// Live and inactive definitions together, each source once.
    pub disks: Vec<DiskSource>,
}

/// Where a domain's `<disk>` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// `<source file=...>` or `<source dev=...>`.
    Path(String),
    /// `<source pool=... volume=...>`.
    Volume { pool: String, volume: String },
}

impl LibvirtVolumes {
    pub fn get(&self) -> Option<&PoolVolumes> {
        self.0.as_ref()
    }
}

impl PoolVolumes {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }
    /// A volume by name, or by path (a backing image given either way).
    pub fn find(&self, name_or_path: &str) -> Option<&Volume> {
        self.volume(name_or_path).or_else(|| {
            self.volumes
                .iter()
                .find(|v| v.path.as_deref() == Some(name_or_path))
        })
    }
}

impl LibvirtDomainDisks {
    /// The domains that use `volume` of `pool`, found by path or by pool and volume name.
    pub fn users(&self, pool: &str, volume: &Volume) -> Vec<&str> {
        self.0
            .iter()
            .filter(|d| {
                d.disks.iter().any(|s| match s {
                    DiskSource::Path(p) => volume.path.as_deref() == Some(p.as_str()),
                    DiskSource::Volume { pool: p, volume: v } => p == pool && *v == volume.name,
                })
            })
            .map(|d| d.domain.as_str())
            .collect()
    }
}

impl Fact for LibvirtVolumes {
    const NAME: &'static str = "libvirt volumes";
    type Key = str;
    fn probe(pool: &str) -> Probe {
        pool_probe(pool)
    }
    fn parse(pool: &str, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        let all = sections(&out.stdout);
        let Some(info) = section(&all, "info", "State:") else {
            if out.rc != 127 && out.stderr.contains("Storage pool not found") {
                return Ok(LibvirtVolumes(None));
            }
            return Err(virsh_failure(out, "`pool-info`"));
        };
        let state = info_lines(info)
            .get("State")
            .map(|s| s.to_string())
            .ok_or("no State: in `virsh pool-info`")?;
        // Only a running pool's list is complete (libvirt lists none for an inactive one).
        let volumes = if state == "running" {
            all.iter()
                .filter_map(|(l, xml)| Some((l.strip_prefix("volume ")?, *xml)))
                .map(|(name, xml)| {
                    if !xml.contains("</volume>") {
                        return Err(format!("volume {name}: {}", virsh_failure(out, "XML")));
                    }
                    parse_volume(name, xml.trim())
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(LibvirtVolumes(Some(PoolVolumes {
            pool: pool.to_string(),
            state,
            volumes,
        })))
    }
}

impl Fact for LibvirtDomainDisks {
    const NAME: &'static str = "libvirt domain disks";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(format!(
            "doms=$({VIRSH} list --all --name) || exit; \
             printf '%s\\n' \"$doms\" | while IFS= read -r d; do [ -n \"$d\" ] || continue; \
             printf '== domain %s\\n' \"$d\"; {VIRSH} dumpxml --domain \"$d\" || exit; \
             {VIRSH} dumpxml --inactive --domain \"$d\" || exit; done"
        ))
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        if out.rc == 127 {
            return Err("virsh not found: libvirt-clients is not installed".into());
        }
        let stdout = stdout_of(seen)?;
        let mut out = Vec::new();
        for section in format!("\n{stdout}").split("\n== domain ").skip(1) {
            let (name, rest) = section.split_once('\n').unwrap_or((section, ""));
            let mut disks = Vec::new();
            // The live document, then the inactive one.
            for xml in rest.split_inclusive("</domain>") {
                let xml = xml.trim();
                if xml.is_empty() {
                    continue;
                }
                for s in domain_disks(xml).map_err(|e| format!("domain {name}: {e}"))? {
                    if !disks.contains(&s) {
                        disks.push(s);
                    }
                }
            }
            out.push(DomainDisks {
                domain: name.to_string(),
                disks,
            });
        }
        Ok(LibvirtDomainDisks(out))
    }
}

fn domain_disks(xml: &str) -> Result<Vec<DiskSource>, String> {
    let doc = Document::parse(xml).map_err(|e| format!("invalid domain XML: {e}"))?;
    let Some(devices) = child(doc.root_element(), "devices") else {
        return Ok(Vec::new());
    };
    Ok(devices
        .children()
        .filter(|c| c.has_tag_name("disk"))
        .filter_map(|d| child(d, "source"))
        .filter_map(|s| {
            if let (Some(pool), Some(volume)) = (s.attribute("pool"), s.attribute("volume")) {
                return Some(DiskSource::Volume {
                    pool: pool.into(),
                    volume: volume.into(),
                });
            }
            s.attribute("file")
                .or_else(|| s.attribute("dev"))
                .map(|p| DiskSource::Path(p.into()))
        })
        .collect())
}

fn parse_volume(name: &str, xml: &str) -> Result<Volume, String> {
    let doc = Document::parse(xml).map_err(|e| format!("volume {name}: invalid XML: {e}"))?;
    let vol = doc.root_element();
    let target = child(vol, "target");
    let text = |n: Option<Node>, tag: &str| {
        n.and_then(|n| child(n, tag))
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
    };
    let format = |n: Option<Node>| {
        n.and_then(|n| child(n, "format"))
            .and_then(|f| f.attribute("type"))
            .map(str::to_string)
    };
    let backing = child(vol, "backingStore").and_then(|b| {
        Some(BackingStore {
            path: text(Some(b), "path")?,
            format: format(Some(b)),
        })
    });
    Ok(Volume {
        name: text(Some(vol), "name").unwrap_or_else(|| name.to_string()),
        vol_type: vol.attribute("type").map(str::to_string),
        key: text(Some(vol), "key"),
        capacity: size(vol, "capacity")?.ok_or_else(|| format!("volume {name}: no <capacity>"))?,
        allocation: size(vol, "allocation")?,
        path: text(target, "path"),
        format: format(target),
        backing,
        xml: xml.to_string(),
    })
}

fn child<'a, 'i>(node: Node<'a, 'i>, tag: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(tag))
}

/// A size element in bytes, whatever its `unit`.
fn size(node: Node, tag: &str) -> Result<Option<u64>, String> {
    let Some(n) = child(node, tag) else {
        return Ok(None);
    };
    let value = n.text().unwrap_or("").trim();
    let unit = n.attribute("unit").unwrap_or("bytes");
    let bad = || format!("unexpected <{tag} unit='{unit}'>{value}</{tag}>");
    let number: u64 = value.parse().map_err(|_| bad())?;
    let scale = unit_scale(unit).ok_or_else(bad)?;
    number.checked_mul(scale).map(Some).ok_or_else(bad)
}

/// The bytes in one `unit`, as libvirt reads units (and `virsh vol-create-as` its sizes): `b` or
/// `bytes`; `K`/`KiB`, `M`/`MiB`, ... are powers of 1024, `KB`, `MB`, ... powers of 1000.
/// Case does not matter except that `k`/`kb` are the same as `K`/`KB`.
pub fn unit_scale(unit: &str) -> Option<u64> {
    let u = unit.to_ascii_lowercase();
    if u.is_empty() || u == "b" || u == "byte" || u == "bytes" {
        return Some(1);
    }
    let mut chars = u.chars();
    let power = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    let base: u64 = match chars.as_str() {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    base.checked_pow(power)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::fixture;
    use crate::modules::facts::libvirt::testing;

    /// The pool probe's output with `pool-info` of a pool fixture and the volumes of a volumes
    /// fixture.
    fn volumes_of(pool: &str, file: &str) -> PoolVolumes {
        let text = testing::pool(
            &fixture(&format!("libvirt_pool/{pool}")),
            &fixture(&format!("libvirt_volumes/{file}")),
        );
        let v = LibvirtVolumes::parse("images", &Observation::Command(CommandOutput::ok(&text)));
        v.unwrap().0.expect("pool exists")
    }
    fn volumes(file: &str) -> PoolVolumes {
        volumes_of("dir-active.txt", file)
    }

    const IMAGES: &str = "/var/lib/libvirt/images";

    #[test]
    fn running_pool_with_qcow2_raw_and_backed_volumes() {
        let p = volumes("images.txt");
        assert!(p.running());
        let names: Vec<_> = p.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            ["base.qcow2", "data.raw", "scratch disk.qcow2", "vm1.qcow2"]
        );
        let vm1 = p.volume("vm1.qcow2").unwrap();
        assert_eq!(vm1.capacity, 128 << 30);
        assert_eq!(vm1.allocation, Some(200704));
        assert_eq!(vm1.format.as_deref(), Some("qcow2"));
        assert_eq!(vm1.path.as_deref(), Some(&*format!("{IMAGES}/vm1.qcow2")));
        assert_eq!(
            vm1.backing,
            Some(BackingStore {
                path: format!("{IMAGES}/base.qcow2"),
                format: Some("qcow2".into())
            })
        );
        let raw = p.volume("data.raw").unwrap();
        assert_eq!(
            (raw.capacity, raw.format.as_deref(), raw.backing.as_ref()),
            (512 << 20, Some("raw"), None)
        );
        assert_eq!(raw.vol_type.as_deref(), Some("file"));
        assert_eq!(p.volume("scratch disk.qcow2").unwrap().capacity, 10 << 20);
        assert_eq!(
            p.find(&format!("{IMAGES}/base.qcow2")).unwrap().name,
            "base.qcow2"
        );
        assert!(vm1.xml.starts_with("<volume type='file'>") && vm1.xml.ends_with("</volume>"));
    }

    /// The probe's output with virsh's test driver: a pool with two volumes, one with a space
    /// and a quote in its name, read by a second virsh.
    #[test]
    fn pool_with_two_volumes() {
        let out = CommandOutput::ok(&fixture("libvirt_volumes/test-driver-two-volumes.txt"));
        let p = LibvirtVolumes::parse("vm 'images\"", &Observation::Command(out));
        let p = p.unwrap().0.unwrap();
        assert!(p.running());
        let v = p.volume("it's a disk.raw").unwrap();
        assert_eq!((v.capacity, v.format.as_deref()), (512 << 20, Some("raw")));
        assert_eq!(
            v.path.as_deref(),
            Some("/var/lib/libvirt/images/it's a disk.raw")
        );
        assert_eq!(p.volume("base.qcow2").unwrap().capacity, 1 << 30);
        assert_eq!(p.volumes.len(), 2);
    }

    #[test]
    fn inactive_and_missing_pools() {
        let p = volumes_of("fs.txt", "inactive.txt");
        assert_eq!((p.state.as_str(), p.volumes.len()), ("inactive", 0));
        assert!(!p.running());
        // Only a running pool's volumes are read.
        let p = volumes_of("fs.txt", "images.txt");
        assert_eq!((p.state.as_str(), p.volumes.len()), ("inactive", 0));
        let o = Observed::new()
            .with_fact::<LibvirtVolumes>(
                "nosuch",
                Observation::Command(CommandOutput::failed(
                    1,
                    &fixture("libvirt_volumes/not-found.stderr"),
                )),
            )
            .with_fact::<LibvirtVolumes>(
                "down",
                Observation::Command(CommandOutput::failed(
                    1,
                    &fixture("libvirt_network/no-daemon.stderr"),
                )),
            );
        assert_eq!(o.fact::<LibvirtVolumes>("nosuch").unwrap().get(), None);
        assert!(matches!(
            o.fact::<LibvirtVolumes>("down"),
            Err(ModuleError::Host(m)) if m.contains("Failed to connect socket")
        ));
    }

    #[test]
    fn domain_disks_by_path_and_by_volume() {
        let out = CommandOutput::ok(&fixture("libvirt_domain_disks/two-domains.txt"));
        let d = LibvirtDomainDisks::parse(&(), &Observation::Command(out)).unwrap();
        assert_eq!(
            d.0,
            [
                DomainDisks {
                    domain: "vm1".into(),
                    disks: vec![DiskSource::Path(format!("{IMAGES}/vm1.qcow2"))],
                },
                DomainDisks {
                    domain: "vm2".into(),
                    disks: vec![DiskSource::Volume {
                        pool: "images".into(),
                        volume: "data.raw".into()
                    }],
                },
            ]
        );
        let p = volumes("images.txt");
        assert_eq!(d.users("images", p.volume("vm1.qcow2").unwrap()), ["vm1"]);
        assert_eq!(d.users("images", p.volume("data.raw").unwrap()), ["vm2"]);
        assert_eq!(
            d.users("other", p.volume("data.raw").unwrap()),
            [] as [&str; 0]
        );
        assert!(d
            .users("images", p.volume("base.qcow2").unwrap())
            .is_empty());
        // No domains at all.
        let none = LibvirtDomainDisks::parse(&(), &Observation::Command(CommandOutput::ok("")));
        assert_eq!(none.unwrap().0, []);
    }

    #[test]
    fn units() {
        assert_eq!(unit_scale("bytes"), Some(1));
        assert_eq!(unit_scale("KiB"), Some(1024));
        assert_eq!(unit_scale("k"), Some(1024));
        assert_eq!(unit_scale("MB"), Some(1_000_000));
        assert_eq!(unit_scale("G"), Some(1 << 30));
        assert_eq!(unit_scale("TiB"), Some(1 << 40));
        assert_eq!(unit_scale("x"), None);
        assert_eq!(unit_scale("Gx"), None);
        let xml = "<volume><name>a</name><capacity unit='G'>2</capacity>\
                   <allocation unit='KiB'>4</allocation></volume>";
        let v = parse_volume("a", xml).unwrap();
        assert_eq!((v.capacity, v.allocation), (2 << 30, Some(4096)));
        assert!(
            parse_volume("a", "<volume><capacity unit='parsec'>1</capacity></volume>").is_err()
        );
    }

    /// The commands that printed the fixtures (with `qemu:///session` in their place).
    #[test]
    fn probes() {
        let v = "LC_ALL=C virsh -c qemu:///system";
        assert_eq!(
            LibvirtVolumes::probe("my pool"),
            crate::modules::facts::libvirt::LibvirtPool::probe("my pool")
        );
        assert_eq!(
            LibvirtDomainDisks::probe(&()),
            Probe::Command(format!(
                "doms=$({v} list --all --name) || exit; printf '%s\\n' \"$doms\" | \
                 while IFS= read -r d; do [ -n \"$d\" ] || continue; \
                 printf '== domain %s\\n' \"$d\"; {v} dumpxml --domain \"$d\" || exit; \
                 {v} dumpxml --inactive --domain \"$d\" || exit; done"
            ))
        );
    }

    /// The probes are valid POSIX shell (checked with `sh -n`, nothing is run).
    #[test]
    fn probes_are_valid_shell() {
        for probe in [
            LibvirtVolumes::probe("no such pool 'x'"),
            LibvirtDomainDisks::probe(&()),
        ] {
            let Probe::Command(cmd) = probe else {
                unreachable!()
            };
            let st = std::process::Command::new("sh")
                .args(["-n", "-c", &cmd])
                .status()
                .unwrap();
            assert!(st.success(), "{cmd}");
        }
    }
}
