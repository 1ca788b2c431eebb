//! The system: commands, systemd services, packages, users.

pub mod package;
pub mod service;
pub mod user;
