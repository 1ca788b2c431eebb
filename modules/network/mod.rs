//! Host networking for guests: bridges, with the backend the host already uses (netplan or
//! NetworkManager), and VXLAN overlays joining the bridges of several hosts. Both bridge modules
//! share one bridge model ([`bridge`]).

pub mod bridge;
pub mod netplan_bridge;
pub mod nm_bridge;
pub mod vxlan;
