//! Host networking for guests: bridges, with the backend the host already uses (netplan or
//! NetworkManager). Both bridge modules share one bridge model ([`bridge`]).

pub mod bridge;
pub mod netplan_bridge;
pub mod nm_bridge;
