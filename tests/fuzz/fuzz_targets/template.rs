#![no_main]
//! Templates, conditions and `-e` values: errors, never panics.
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let vars = json!({"x": 1, "list": [1, "a"], "m": {"k": "v"}});
        let _ = kvmforge::template::render(text, &vars);
        let _ = kvmforge::template::condition(&json!(text), &vars);
        let _ = kvmforge::cli::parse_extra_vars(&[text.to_string()]);
    }
});
