//! The kernel: sysctls (bridge netfilter among them), modules, the boot command line.

pub mod sysctl_keys;
