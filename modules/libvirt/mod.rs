//! libvirt on the host: storage volumes in its pools.

pub mod volume;
