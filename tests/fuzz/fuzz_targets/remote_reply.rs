#![no_main]
//! What a host prints back, for a script with actions, batched and single file probes, a
//! command probe and facts: errors, never panics.
use kvmforge::module::{Action, Attrs, Probe};
use kvmforge::remote::{parse, Script};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let script = Script {
        actions: vec![
            Action::write("/etc/a", "x\n", Attrs::default(), false),
            Action::run("true"),
        ],
        probes: vec![
            Probe::File("/etc/a".into()),
            Probe::File("/etc/b".into()),
            Probe::File("rel".into()),
            Probe::Command("uname -r".into()),
        ],
        facts: true,
        become_: false,
    };
    let _ = parse(&script, data);
});
