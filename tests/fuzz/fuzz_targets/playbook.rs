#![no_main]
//! Playbooks: errors, never panics.
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kvmforge::playbook::Playbook::parse(text, Path::new("site.yaml"));
    }
});
