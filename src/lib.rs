//! kvmforge: idempotent, agentless host configuration for KVM hypervisors.
//!
//! The engine (this crate's `src/`) parses inventories and playbooks, renders templates, talks
//! to hosts and runs tasks; the built-in modules (`modules/`) are pure planners that turn
//! arguments plus observed host state into changes and actions.

pub mod cli;
pub mod connection;
pub mod error;
pub mod executor;
pub mod facts;
pub mod inventory;
pub mod memo;
pub mod module;
pub mod output;
pub mod params;
pub mod playbook;
pub mod remote;
pub mod ssh;
pub mod template;
pub mod vars;
pub mod yaml11;

#[path = "../modules/mod.rs"]
pub mod modules;
