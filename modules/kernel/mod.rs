//! The kernel: sysctls (bridge netfilter among them), modules, the boot command line, huge
//! pages, and whether it can run KVM guests.

pub mod grub_cmdline;
pub mod hugepages;
pub mod kernel_module;
pub mod kvm_check;
pub mod sysctl;
pub mod sysctl_bridge;
pub mod sysctl_keys;
pub mod vfio_bind;

use crate::module::ArgError;

/// A kernel module name as modprobe takes it, in its canonical form (underscores: how the
/// kernel, /proc/modules, /sys/module and udev name it). The kernel makes module names from
/// object file names, so letters, digits, `-` and `_` are all there is, and `-` is the same as
/// `_`; a leading `-` is refused because modprobe would read the name as an option. Aliases
/// (`pci:v...`, `char-major-10-200`) are not module names.
pub fn module_name(param: &'static str, name: &str) -> Result<String, ArgError> {
    let valid = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(ArgError::invalid(
            param,
            format!("invalid kernel module name {name:?} (letters, digits, - and _ only, not starting with -)"),
        ));
    }
    Ok(name.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ArgErrorKind;

    #[test]
    fn module_names() {
        assert_eq!(module_name("name", "vfio-pci").unwrap(), "vfio_pci");
        assert_eq!(module_name("name", "kvm_intel").unwrap(), "kvm_intel");
        assert_eq!(module_name("name", "8250").unwrap(), "8250");
        for bad in ["", "-r", "kvm intel", "../x", "br\"x", "pci:v00008086d*"] {
            let e = module_name("modules", bad).unwrap_err();
            assert_eq!(
                (e.kind, e.param),
                (ArgErrorKind::Invalid, "modules"),
                "{bad}"
            );
            assert_eq!(
                e.msg,
                format!("invalid kernel module name {bad:?} (letters, digits, - and _ only, not starting with -)")
            );
        }
    }
}
