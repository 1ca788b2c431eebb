//! The system: commands, systemd services, packages, users, the proxy a host reaches the outside through.

pub mod command;
pub mod package;
pub mod proxy_env;
pub mod service;
pub mod user;
