//! The system: commands, systemd services, packages, users and their SSH keys, reboots, the
//! proxy a host reaches the outside through, and the unit files other modules write.

pub mod authorized_key;
pub mod command;
pub mod package;
pub mod proxy_env;
pub mod reboot;
pub mod service;
pub mod unit_file;
pub mod user;
