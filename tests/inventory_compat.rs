//! Every inventory in `tests/inventory/cases/` must resolve exactly as Ansible resolves it: the
//! same hosts in the same order, each with the same groups, the same merged variables, and
//! reached at the same address, as the same user, on the same port, with the same key and ssh
//! options. The expected results were produced by ansible-core (`tests/inventory/generate.py`).

use kvmforge::inventory::{ConnectionKind, ConnectionSpec, Inventory};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(case: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(case.join("args"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            if l.contains(',') && !case.join(l).exists() {
                PathBuf::from(l)
            } else {
                case.join(l)
            }
        })
        .collect()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(String::from)
}

/// What Ansible's ssh command line says, folded the way kvmforge folds it.
fn expected_spec(c: &Value, ours: &ConnectionSpec) -> ConnectionSpec {
    let mut want = ConnectionSpec {
        kind: ConnectionKind::Ssh,
        address: text(&c["address"]).unwrap(),
        user: text(&c["user"]),
        port: c["port"].as_u64().map(|p| p as u16),
        key: text(&c["key"]),
        jump: None,
        become_: ours.become_,
        host_key_checking: (c["host_key_checking"] == false).then(|| "off".to_string()),
        known_hosts: None,
        ssh_config: None,
        ssh_options: Vec::new(),
        become_password: ours.become_password.clone(),
    };
    let words: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    want.apply_ssh_args(&words).unwrap();
    // `ansible_host_key_checking: true` is ssh's default for Ansible (ask, which fails
    // unattended); kvmforge says so explicitly.
    if want.host_key_checking.is_none() && ours.host_key_checking.as_deref() == Some("strict") {
        want.host_key_checking = ours.host_key_checking.clone();
    }
    want
}

fn check_case(case: &Path) -> Result<(), String> {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
            .unwrap();
    let loaded = Inventory::load_all(&sources(case));
    if let Some(ansible_error) = expected.get("error") {
        let want = std::fs::read_to_string(case.join("kvmforge-error")).map_err(|_| {
            format!("Ansible refuses it ({ansible_error}) but there is no kvmforge-error file")
        })?;
        return match loaded {
            Ok(_) => Err(format!(
                "Ansible refuses it but kvmforge read it: {ansible_error}"
            )),
            Err(e) if e.to_string().contains(want.trim()) => Ok(()),
            Err(e) => Err(format!("error `{e}` does not contain `{}`", want.trim())),
        };
    }
    let inv = loaded.map_err(|e| format!("kvmforge refuses it: {e}"))?;
    let refused: serde_json::Map<String, Value> =
        std::fs::read_to_string(case.join("kvmforge-errors.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or_default();
    let hosts = expected["hosts"].as_object().unwrap();
    let ours: BTreeSet<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    let theirs: BTreeSet<&str> = hosts.keys().map(String::as_str).collect();
    if ours != theirs {
        return Err(format!(
            "hosts differ:\n  kvmforge: {ours:?}\n  ansible:  {theirs:?}"
        ));
    }
    if let Some(order) = expected["order"].as_array() {
        let order: Vec<&str> = order.iter().filter_map(Value::as_str).collect();
        let mine: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        if order != mine {
            return Err(format!(
                "host order differs:\n  kvmforge: {mine:?}\n  ansible:  {order:?}"
            ));
        }
    }
    for (name, want) in hosts {
        let h = inv.host(name).unwrap();
        let groups: Vec<&str> = want["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mine: Vec<&str> = h.groups.iter().map(String::as_str).collect();
        if groups != mine {
            return Err(format!(
                "{name}: groups differ:\n  kvmforge: {mine:?}\n  ansible:  {groups:?}"
            ));
        }
        if Value::Object(h.vars.clone()) != want["vars"] {
            return Err(format!(
                "{name}: variables differ:\n  kvmforge: {}\n  ansible:  {}",
                Value::Object(h.vars.clone()),
                want["vars"]
            ));
        }
        let conn = h.connection();
        if let Some(msg) = refused.get(name).and_then(Value::as_str) {
            match conn {
                Err(e)
                    if e.to_string().contains(msg)
                        && e.to_string().contains(&format!("host `{name}`")) =>
                {
                    continue
                }
                Err(e) => return Err(format!("{name}: error `{e}` does not contain `{msg}`")),
                Ok(_) => {
                    return Err(format!(
                        "{name}: kvmforge must refuse how Ansible reaches it ({msg})"
                    ))
                }
            }
        }
        let conn = conn.map_err(|e| format!("{name}: {e}"))?;
        let c = &want["connection"];
        if c["ssh"] == false {
            if conn.kind != ConnectionKind::Local {
                return Err(format!(
                    "{name}: Ansible does not use ssh for it, kvmforge does"
                ));
            }
            continue;
        }
        let spec = expected_spec(c, &conn);
        if conn != spec {
            return Err(format!(
                "{name}: reached differently:\n  kvmforge: {conn:?}\n  ansible:  {spec:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_inventory_resolves_as_ansible_resolves_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inventory/cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the corpus is missing");
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = check_case(case) {
            failures.push(format!(
                "{}: {e}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inventories resolve differently from Ansible:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
