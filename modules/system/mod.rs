//! The system: commands, systemd services, packages, users.

pub mod command;
pub mod package;
pub mod service;
pub mod user;
