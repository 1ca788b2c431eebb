//! The system: commands, systemd services, packages, users, reboots, the proxy a host reaches
//! the outside through.

pub mod command;
pub mod package;
pub mod proxy_env;
pub mod reboot;
pub mod service;
pub mod user;
