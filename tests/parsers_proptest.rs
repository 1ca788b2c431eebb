//! The parsers never panic, whatever they are given: inventories (YAML and INI), playbooks,
//! templates and conditions, `-e` values, and the replies of hosts (the remote protocol). Each
//! property runs a bounded number of cases so `cargo test` stays fast; `tests/fuzz/` has
//! cargo-fuzz targets over the same entry points for longer runs.

use kvmforge::module::{Action, Attrs, Probe};
use kvmforge::remote::{self, Script};
use proptest::prelude::*;
use serde_json::json;
use std::path::Path;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text made of the characters that matter to YAML, INI and Handlebars, in lines.
fn structured_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("all:\n".to_string()),
        Just("  hosts:\n".to_string()),
        Just("  children:\n".to_string()),
        Just("    vars:\n".to_string()),
        Just("[group]\n".to_string()),
        Just("[group:vars]\n".to_string()),
        Just("[group:children]\n".to_string()),
        Just("h[01:0a:2]".to_string()),
        Just("- hosts: all\n".to_string()),
        Just("  tasks:\n".to_string()),
        Just("    - name: x\n".to_string()),
        Just("      copy: {dest: /x, content: y}\n".to_string()),
        Just("      when: ".to_string()),
        Just("      loop: ".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{{#if x}}".to_string()),
        Just("{{/if}}".to_string()),
        Just("{{> p}}".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: *a\n".to_string()),
        Just("!!binary ".to_string()),
        Just("ansible_port=".to_string()),
        Just("ansible_host=".to_string()),
        Just("\"[1, 'a']\"".to_string()),
        Just("0755".to_string()),
        Just("yes".to_string()),
        Just("~".to_string()),
        "[ -~]{0,12}",
        "[\\x00-\\x7f]{0,4}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![structured_text(), any::<String>()]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inventories_never_panic(text in any_text()) {
        let _ = kvmforge::inventory::Inventory::parse(&text, Path::new("inventory.yaml"));
        let _ = kvmforge::inventory::Inventory::parse(&text, Path::new("inventory.ini"));
        let _ = kvmforge::inventory::Inventory::parse(&text, Path::new("hosts"));
    }

    #[test]
    fn playbooks_never_panic(text in any_text()) {
        let _ = kvmforge::playbook::Playbook::parse(&text, Path::new("site.yaml"));
    }

    #[test]
    fn templates_never_panic(text in any_text()) {
        let vars = json!({"x": 1, "list": [1, "a"], "m": {"k": "v"}, "facts": {"os_family": "Debian"}});
        let _ = kvmforge::template::render(&text, &vars);
        let _ = kvmforge::template::condition(&json!(text), &vars);
        let _ = kvmforge::cli::parse_extra_vars(std::slice::from_ref(&text));
    }

    #[test]
    fn host_replies_never_panic(reply in host_reply()) {
        let script = sample_script();
        let _ = remote::parse(&script, reply.as_bytes());
    }

    #[test]
    fn file_batch_replies_never_panic(reply in file_batch_reply()) {
        let script = sample_script();
        let _ = remote::parse(&script, reply.as_bytes());
    }

    #[test]
    fn host_replies_of_arbitrary_bytes_never_panic(reply in prop::collection::vec(any::<u8>(), 0..600)) {
        let script = sample_script();
        let _ = remote::parse(&script, &reply);
    }
}

/// A `KF fs` record: metadata records of batched files (sizes huge or small, fields odd), the
/// sentinel, then contents.
fn file_batch_reply() -> impl Strategy<Value = String> {
    let size = prop_oneof![
        Just("0".to_string()),
        Just("3".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775808".to_string()),
        Just("-1".to_string()),
        "[0-9]{1,6}",
    ];
    let record = (
        prop_oneof![Just("/etc/a"), Just("/etc/b"), Just("rel"), Just("")],
        prop_oneof![Just("f"), Just("d"), Just("l"), Just("")],
        prop_oneof![Just("644"), Just("7777777777"), Just("x")],
        size,
    )
        .prop_map(|(p, k, m, s)| format!("{p}\0{k}\0{m}\0root\0root\0{s}\0").into_bytes());
    (
        prop_oneof!["m[01s]{0,4}", Just("m11".to_string())],
        prop::collection::vec(record, 0..4),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(marks, recs, sentinel, data)| {
            use base64::Engine as _;
            let mut stream = recs.concat();
            if sentinel {
                stream.extend_from_slice(b"KF-DATA\0\0\0\0\0\0");
            }
            stream.extend_from_slice(&data);
            format!(
                "KF fs {marks} ={}\nKF end",
                base64::engine::general_purpose::STANDARD.encode(stream)
            )
        })
}

/// A script with actions, file probes (batched and alone), a command probe and facts.
fn sample_script() -> Script {
    Script {
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
        facts: kvmforge::facts::Wanted::ALL,
        become_: false,
    }
}

/// Lines that look like the protocol: `KF` records with plausible and implausible fields.
fn host_reply() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("KF".to_string()),
        Just("a0".to_string()),
        Just("a1".to_string()),
        Just("a9".to_string()),
        Just("p0".to_string()),
        Just("p3".to_string()),
        Just("p99999999999999999999".to_string()),
        Just("fs".to_string()),
        Just("m1".to_string()),
        Just("m10s".to_string()),
        Just("m11".to_string()),
        Just("m1s".to_string()),
        Just("end".to_string()),
        Just("facts".to_string()),
        Just("wait".to_string()),
        Just("lock".to_string()),
        Just("file".to_string()),
        Just("absent".to_string()),
        Just("dir".to_string()),
        Just("big".to_string()),
        Just("other".to_string()),
        Just("error".to_string()),
        Just("cmd".to_string()),
        Just("ok".to_string()),
        Just("run".to_string()),
        Just("fail".to_string()),
        Just("-".to_string()),
        Just("644".to_string()),
        Just("root".to_string()),
        Just("18446744073709551615".to_string()),
        Just("=".to_string()),
        // "/etc/a\0f\0644\0root\0root\03\0KF-DATA\0\0\0\0\0\0abc" and pieces of it
        Just("=L2V0Yy9hAGYANjQ0AHJvb3QAcm9vdAAzAEtGLURBVEEAAAAAAABhYmM=".to_string()),
        Just("=L2V0Yy9hAGYANjQ0AHJvb3QAcm9vdAA5OTk5OTk5OTk5OTk5OQBLRi1EQVRBAAAAAAAA".to_string()),
        Just("=L2V0Yy9hAGYANjQ0AHJvb3QAcm9vdAAxODQ0Njc0NDA3MzcwOTU1MTYxNQAvZXRjL2IAZgA2NDQAcm9vdAByb290ADMAS0YtREFUQQAAAAAAAGFiYw==".to_string()),
        Just("=AAAA".to_string()),
        Just("=aGk=".to_string()),
        "=[A-Za-z0-9+/]{0,12}={0,2}",
        "[ -~]{0,8}",
    ];
    let line = prop::collection::vec(field, 0..9).prop_map(|f| f.join(" "));
    let line = prop_oneof![line.clone().prop_map(|l| format!("KF {l}")), line,];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

/// A file reported as 2^64-1 bytes long before another: the offsets must not overflow.
#[test]
fn a_huge_size_in_a_file_batch_is_an_error_not_a_panic() {
    let reply = "KF fs m11 =L2V0Yy9hAGYANjQ0AHJvb3QAcm9vdAAxODQ0Njc0NDA3MzcwOTU1MTYxNQAvZXRjL2IAZgA2NDQAcm9vdAByb290ADMAS0YtREFUQQAAAAAAAGFiYw==\nKF end\n";
    let _ = remote::parse(&sample_script(), reply.as_bytes());
}
