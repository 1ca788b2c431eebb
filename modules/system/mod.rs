//! The system: commands, systemd services, packages, users, reboots.

pub mod command;
pub mod package;
pub mod reboot;
pub mod service;
pub mod user;
