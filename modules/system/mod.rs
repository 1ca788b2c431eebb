//! The system: commands, systemd services, packages, users and their SSH keys, and the unit
//! files other modules write.

pub mod authorized_key;
pub mod command;
pub mod package;
pub mod service;
pub mod unit_file;
pub mod user;
