#![no_main]
//! Inventories, read as YAML and as INI: errors, never panics.
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kvmforge::inventory::Inventory::parse(text, Path::new("inventory.yaml"));
        let _ = kvmforge::inventory::Inventory::parse(text, Path::new("inventory.ini"));
    }
});
