//! The system: commands, systemd services, packages, users.

pub mod service;
