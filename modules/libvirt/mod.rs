//! libvirt: its configuration files.

pub mod config;
