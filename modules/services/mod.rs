//! Services a private VM network needs on its jump host, configured from structured parameters,
//! each file checked with the service's own checker before it replaces the running one.

pub mod dhcpd;
pub mod squid_proxy;
pub mod ssh_tunnel;
