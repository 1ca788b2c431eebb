//! Ansible's INI inventory format:
//!
//! ```ini
//! web1 ansible_host=10.0.0.7      # before any section: ungrouped
//! [kvm]
//! kvm[01:03].lab ansible_user=admin
//! [kvm:vars]
//! proxy = http://jump:3128
//! [hypervisors:children]
//! kvm
//! ```
//!
//! Values are typed as Ansible types them (see `pylit`). A `[group:children]` may name a group
//! defined further down; a `[group:vars]` of a group never defined is an error.

use super::{pylit, range, Data};
use std::collections::BTreeMap;

/// Errors are `LINE: message`.
pub(super) fn read(text: &str, data: &mut Data) -> Result<(), String> {
    let mut group = "ungrouped".to_string();
    let mut state = "hosts";
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let err = |msg: String| format!("{n}: {msg}");
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some((name, kind)) = section(line) {
            let kind = kind.unwrap_or("hosts");
            let st: &'static str = match kind {
                "hosts" => "hosts",
                "children" => "children",
                "vars" => "vars",
                other => {
                    return Err(err(format!(
                        "section [{name}:{other}] has unknown type `{other}` (expected [{name}], [{name}:vars] or [{name}:children])"
                    )))
                }
            };
            if !data.has_group(name) {
                if st == "vars" && !pending.contains_key(name) {
                    pending.insert(
                        name.to_string(),
                        Pending {
                            line: n,
                            state: "vars",
                            parents: Vec::new(),
                        },
                    );
                }
                data.add_group(name);
            }
            if st != "vars" {
                if let Some(p) = pending.get(name) {
                    if p.state == "children" {
                        add_pending_children(name, &mut pending, data).map_err(&err)?;
                    } else {
                        pending.remove(name);
                    }
                }
            }
            group = name.to_string();
            state = st;
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            return Err(err(format!(
                "invalid section `{line}`: a section is [group], [group:vars] or [group:children], without spaces"
            )));
        }
        match state {
            "hosts" => {
                let tokens = pylit::shlex_split(line, true)
                    .map_err(|e| err(format!("cannot split host line `{line}`: {e}")))?;
                let Some(pattern) = tokens.first() else {
                    continue;
                };
                let (names, port) = range::expand_hostpattern(pattern)
                    .map_err(|e| err(format!("host `{pattern}`: {e}")))?;
                if pattern.trim().ends_with(':') && port.is_none() {
                    return Err(err(format!(
                        "host `{pattern}` ends in `:`, which is reserved for a port (is this a YAML file with a .ini name?)"
                    )));
                }
                if names.iter().any(|h| h.trim() == "---") {
                    return Err(err("`---` starts a YAML document, not an INI host".into()));
                }
                let mut vars = Vec::new();
                for t in &tokens[1..] {
                    let Some((k, v)) = t.split_once('=') else {
                        return Err(err(format!(
                            "expected key=value after the host name, got `{t}`"
                        )));
                    };
                    // The value's column: where `KEY=` is written after the host's name.
                    let from = raw.find(pattern.as_str()).map_or(0, |i| i + pattern.len());
                    let col = raw[from..]
                        .find(&format!("{k}="))
                        .map_or(1, |i| from + i + k.len() + 2);
                    vars.push((k.to_string(), pylit::ini_value(v), col));
                }
                for h in &names {
                    data.add_host(h, Some(&group), port);
                    for (k, v, col) in &vars {
                        data.set_host_var(h, k.clone(), v.clone(), (n, *col));
                    }
                }
            }
            "vars" => {
                let Some((k, v)) = line.split_once('=') else {
                    return Err(err(format!(
                        "expected key=value in [{group}:vars], got `{line}`"
                    )));
                };
                let eq = raw.find('=').unwrap_or(0);
                let col = eq + 2 + (raw[eq + 1..].len() - raw[eq + 1..].trim_start().len());
                data.set_group_var(
                    &group,
                    k.trim().to_string(),
                    pylit::ini_value(v.trim()),
                    (n, col),
                )
                .map_err(&err)?;
            }
            _ => {
                let child = child_name(line).ok_or_else(|| {
                    err(format!(
                        "expected a group name in [{group}:children], got `{line}`"
                    ))
                })?;
                if data.has_group(child) {
                    data.add_child(&group, child).map_err(&err)?;
                } else {
                    pending
                        .entry(child.to_string())
                        .or_insert(Pending {
                            line: n,
                            state: "children",
                            parents: Vec::new(),
                        })
                        .parents
                        .push(group.clone());
                }
            }
        }
    }
    if let Some((name, p)) = pending.iter().min_by_key(|(_, p)| p.line) {
        return Err(if p.state == "vars" {
            format!(
                "{}: section [{name}:vars] is for a group that is never defined",
                p.line
            )
        } else {
            format!(
                "{}: section [{}:children] names group `{name}`, which is never defined",
                p.line,
                p.parents.last().map(String::as_str).unwrap_or("?")
            )
        });
    }
    Ok(())
}

/// A group named before it is defined: where, how, and (for children) under which parents.
struct Pending {
    line: usize,
    state: &'static str,
    parents: Vec<String>,
}

/// A group named in `[parent:children]` sections before its own section: now it exists.
fn add_pending_children(
    group: &str,
    pending: &mut BTreeMap<String, Pending>,
    data: &mut Data,
) -> Result<(), String> {
    let parents = pending
        .get(group)
        .map(|p| p.parents.clone())
        .unwrap_or_default();
    for parent in parents {
        data.add_child(&parent, group)?;
        if pending.get(&parent).is_some_and(|p| p.state == "children") {
            add_pending_children(&parent, pending, data)?;
        }
    }
    pending.remove(group);
    Ok(())
}

/// `[name]` or `[name:kind]`, optionally followed by a comment.
fn section(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix('[')?;
    let close = rest.find(']')?;
    let inner = &rest[..close];
    let after = rest[close + 1..].trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let (name, kind) = match inner.split_once(':') {
        Some((n, k)) => (n, Some(k)),
        None => (inner, None),
    };
    let name_ok =
        !name.is_empty() && !name.contains(|c: char| c == ':' || c == ']' || c.is_whitespace());
    let kind_ok =
        kind.is_none_or(|k| !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_'));
    (name_ok && kind_ok).then_some((name, kind))
}

/// A group name in a `:children` section, optionally followed by a comment.
fn child_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| c == ':' || c == ']' || c.is_whitespace())
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let rest = rest.trim_start();
    (!name.is_empty() && (rest.is_empty() || rest.starts_with('#'))).then_some(name)
}
