//! libvirt on the host: its configuration files and the storage volumes in its pools.

pub mod config;
pub mod network;
pub mod pool;
pub mod volume;
