//! GRUB: the tool that regenerates grub.cfg on this host, and where grub.cfg lives.

use crate::module::fact::{command_output, Fact};
use crate::module::{Observation, Probe};

/// Finds the regeneration tool (Debian's `update-grub` first, then RHEL's `grub2-mkconfig`, then
/// upstream's `grub-mkconfig`), whether that grub-mkconfig reads /etc/default/grub.d drop-ins (a
/// Debian addition: the script mentions the directory), and which grub.cfg files exist: `efi=` a
/// full configuration in the ESP, `stub=` one that only loads /boot/grub2/grub.cfg (RHEL 9), and
/// `cfg=` the ones in /boot; `grubby=yes` when grubby is installed; `entry=FILE OPTIONS` for the
/// `options` line of each Boot Loader Specification entry in /boot/loader/entries (Fedora,
/// RHEL 8+); `dropin=FILE VAR=VALUE` for each GRUB_CMDLINE_LINUX* assignment in the
/// /etc/default/grub.d drop-ins, in the order the shell sources them. It always exits 0; missing
/// tools print nothing.
const PROBE: &str = "\
if command -v update-grub >/dev/null 2>&1; then echo tool=update-grub; \
elif command -v grub2-mkconfig >/dev/null 2>&1; then echo tool=grub2-mkconfig; \
elif command -v grub-mkconfig >/dev/null 2>&1; then echo tool=grub-mkconfig; fi; \
m=$(command -v grub-mkconfig || command -v grub2-mkconfig); \
if [ -n \"$m\" ] && grep -qs 'default/grub.d' \"$m\"; then echo dropins=yes; fi; \
for f in /boot/efi/EFI/*/grub.cfg; do [ -f \"$f\" ] || continue; \
case $f in */EFI/BOOT/*) continue;; esac; \
if grep -qs '### BEGIN' \"$f\"; then echo \"efi=$f\"; else echo \"stub=$f\"; fi; done; \
for f in /boot/grub2/grub.cfg /boot/grub/grub.cfg; do [ -f \"$f\" ] && echo \"cfg=$f\"; done; \
command -v grubby >/dev/null 2>&1 && echo grubby=yes; \
for f in /boot/loader/entries/*.conf; do [ -f \"$f\" ] && sed -n \"s|^options[[:space:]]*|entry=$f |p\" \"$f\"; done; \
for f in /etc/default/grub.d/*.cfg; do [ -f \"$f\" ] && sed -n \"s|^[[:space:]]*\\(export[[:space:]]*\\)\\{0,1\\}\\(GRUB_CMDLINE_LINUX[A-Z_]*=\\)|dropin=$f \\2|p\" \"$f\"; done; true";

/// The GRUB tooling of a host, as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubTools {
    /// `update-grub`, `grub2-mkconfig` or `grub-mkconfig`; `None` when none is installed.
    pub tool: Option<String>,
    /// grub-mkconfig sources /etc/default/grub.d/*.cfg.
    pub reads_dropins: bool,
    /// A full grub.cfg in the EFI vendor directory (RHEL 7/8 on EFI).
    pub efi: Option<String>,
    /// The grub.cfg files in /boot.
    pub cfgs: Vec<String>,
    /// grubby is installed (RHEL, Fedora).
    pub grubby: bool,
    /// `(file, options words)` of every Boot Loader Specification entry.
    pub entries: Vec<(String, Vec<String>)>,
    /// `(file, "VAR=VALUE")` of every command line assignment in /etc/default/grub.d, in order.
    pub dropins: Vec<(String, String)>,
}

impl Fact for GrubTools {
    const NAME: &'static str = "grub tools";
    type Key = ();

    fn probe(_: &()) -> Probe {
        Probe::Command(PROBE.into())
    }

    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = &command_output(seen)?.stdout;
        let field = |name: &str| -> Vec<String> {
            out.lines()
                .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
                .collect()
        };
        Ok(GrubTools {
            tool: field("tool").into_iter().next(),
            reads_dropins: field("dropins").iter().any(|v| v == "yes"),
            efi: field("efi").into_iter().next(),
            cfgs: field("cfg"),
            grubby: field("grubby").iter().any(|v| v == "yes"),
            entries: field("entry")
                .iter()
                .filter_map(|e| {
                    let (f, opts) = e.split_once(' ').unwrap_or((e, ""));
                    (!f.is_empty()).then(|| {
                        (
                            f.to_string(),
                            opts.split_whitespace().map(str::to_string).collect(),
                        )
                    })
                })
                .collect(),
            dropins: field("dropin")
                .iter()
                .filter_map(|e| e.split_once(' '))
                .map(|(f, a)| (f.to_string(), a.trim().to_string()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::fixture;

    fn parse(file: &str) -> GrubTools {
        let out = CommandOutput::ok(&fixture(&format!("grub_tools/{file}")));
        GrubTools::parse(&(), &Observation::Command(out)).unwrap()
    }

    #[test]
    fn host_without_grub() {
        assert_eq!(
            parse("debian12-no-grub.txt"),
            GrubTools {
                tool: None,
                reads_dropins: false,
                efi: None,
                cfgs: Vec::new(),
                grubby: false,
                entries: Vec::new(),
                dropins: Vec::new(),
            }
        );
    }

    /// Debian 12 with grub2-common installed and grub.cfg not generated yet.
    #[test]
    fn debian_update_grub_reads_dropins() {
        let t = parse("debian12-grub2-common.txt");
        assert_eq!(t.tool.as_deref(), Some("update-grub"));
        assert!(t.reads_dropins);
        assert_eq!((t.efi, t.cfgs), (None, Vec::new()));
    }

    /// Fedora 39's layout: grubby and Boot Loader Specification entries.
    #[test]
    fn bls_entries_and_grubby() {
        let t = parse("fedora39-bls.txt");
        assert!(t.grubby);
        assert_eq!(t.entries.len(), 2);
        assert!(t.entries[0].0.ends_with("-6.5.6-300.fc39.x86_64.conf"));
        assert_eq!(t.entries[0].1.last().map(String::as_str), Some("quiet"));
        assert!(parse("debian12-lab-vm.txt").entries.is_empty());
    }

    #[test]
    fn grub_cfg_locations() {
        let out = "tool=grub2-mkconfig\nstub=/boot/efi/EFI/redhat/grub.cfg\n\
                   efi=/boot/efi/EFI/centos/grub.cfg\ncfg=/boot/grub2/grub.cfg\n";
        let t = GrubTools::parse(&(), &Observation::Command(CommandOutput::ok(out))).unwrap();
        assert_eq!(t.tool.as_deref(), Some("grub2-mkconfig"));
        assert!(!t.reads_dropins);
        assert_eq!(t.efi.as_deref(), Some("/boot/efi/EFI/centos/grub.cfg"));
        assert_eq!(t.cfgs, ["/boot/grub2/grub.cfg"]);
    }
}
