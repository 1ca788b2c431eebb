//! Ansible's YAML inventory format: groups with `hosts`, `vars` and `children`, host keys that
//! may carry ranges and `:port`.

use super::{range, Data};
use crate::params::did_you_mean;
use crate::yaml11::{Mark, Node, Yaml};
use serde_json::Value;

/// An error at a position: `LINE:COL: message`.
fn at(mark: Mark, msg: impl std::fmt::Display) -> String {
    format!("{}:{}: {msg}", mark.line, mark.col)
}

pub(super) fn read(root: &Node, data: &mut Data) -> Result<(), String> {
    let Yaml::Map(groups) = &root.value else {
        return Err(at(
            root.mark,
            "an inventory is a mapping of groups (usually `all:`)",
        ));
    };
    for (k, v) in groups {
        let name = group_name(k)?;
        read_group(&name, v, data)?;
    }
    Ok(())
}

fn group_name(k: &Node) -> Result<String, String> {
    match k.key_text() {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(at(k.mark, "a group name must be a string")),
    }
}

/// A `hosts:`/`children:`/`vars:` section: a mapping, nothing, or (as Ansible allows) a single
/// name standing for `{name: }`.
enum Section<'a> {
    Pairs(Vec<(&'a Node, Option<&'a Node>)>),
}

fn section<'a>(group: &str, key: &str, v: &'a Node) -> Result<Section<'a>, String> {
    Ok(Section::Pairs(match &v.value {
        Yaml::Null => Vec::new(),
        Yaml::Map(pairs) => pairs.iter().map(|(k, v)| (k, Some(v))).collect(),
        Yaml::Str(_) => vec![(v, None)],
        _ => {
            return Err(at(
                v.mark,
                format!("`{key}` of group `{group}` must be a mapping"),
            ))
        }
    }))
}

fn read_group(name: &str, node: &Node, data: &mut Data) -> Result<(), String> {
    data.add_group(name);
    let pairs = match &node.value {
        Yaml::Null => return Ok(()),
        Yaml::Map(p) => p,
        _ => {
            return Err(at(
                node.mark,
                format!("group `{name}` must be a mapping with hosts, vars or children"),
            ))
        }
    };
    for (k, v) in pairs {
        let key = k.as_str().unwrap_or_default();
        match key {
            "vars" => {
                let Section::Pairs(vars) = section(name, key, v)?;
                for (vk, vv) in vars {
                    let var = vk
                        .key_text()
                        .ok_or_else(|| at(vk.mark, "a variable name must be a string"))?;
                    let value = vv.map(Node::to_json).unwrap_or(Value::Null);
                    let m = vv.map_or(vk.mark, |n| n.mark);
                    data.set_group_var(name, var, value, (m.line, m.col))
                        .map_err(|e| at(vk.mark, e))?;
                }
            }
            "children" => {
                let Section::Pairs(children) = section(name, key, v)?;
                for (ck, cv) in children {
                    let child = group_name(ck)?;
                    let empty = Node {
                        value: Yaml::Null,
                        mark: ck.mark,
                    };
                    read_group(&child, cv.unwrap_or(&empty), data)?;
                    data.add_child(name, &child).map_err(|e| at(ck.mark, e))?;
                }
            }
            "hosts" => {
                let Section::Pairs(hosts) = section(name, key, v)?;
                for (hk, hv) in hosts {
                    let pattern =
                        match &hk.value {
                            Yaml::Str(s) => s.clone(),
                            _ => return Err(at(
                                hk.mark,
                                "a host name must be a string: quote names that look like numbers",
                            )),
                        };
                    let (names, port) = range::expand_hostpattern(&pattern)
                        .map_err(|e| at(hk.mark, format!("host `{pattern}`: {e}")))?;
                    let vars = match hv.map(|n| &n.value) {
                        None | Some(Yaml::Null) => Vec::new(),
                        Some(Yaml::Map(p)) => p.iter().collect(),
                        Some(_) => {
                            return Err(at(
                                hv.map(|n| n.mark).unwrap_or(hk.mark),
                                format!("the variables of host `{pattern}` must be a mapping"),
                            ))
                        }
                    };
                    for h in &names {
                        data.add_host(h, Some(name), port);
                        for (vk, vv) in &vars {
                            let var = vk
                                .key_text()
                                .ok_or_else(|| at(vk.mark, "a variable name must be a string"))?;
                            data.set_host_var(h, var, vv.to_json(), (vv.mark.line, vv.mark.col));
                        }
                    }
                }
            }
            other => {
                let hint = did_you_mean(other, ["hosts", "vars", "children"])
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| " (expected hosts, vars or children)".into());
                return Err(at(
                    k.mark,
                    format!("group `{name}`: unknown key `{other}`{hint}"),
                ));
            }
        }
    }
    Ok(())
}
