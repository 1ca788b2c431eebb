//! The variables a task sees, merged by precedence.
//!
//! Lowest to highest: inventory (the `all` group, parent groups, child groups, the host), facts
//! (as `facts`), play `vars`, `vars_files`, task `vars`, registered results, extra vars (`-e`).
//! Magic variables `inventory_hostname`, `group_names` and `groups` are always defined.
//! Variable values may themselves be templates (`proxy: "http://{{ jump_ip }}:3128"`); they are
//! resolved against the merged context.

use crate::template::{self, TemplateError};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// The layers of variables for one host in one play, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub inventory: Map<String, Value>,
    pub facts: Option<Value>,
    pub play: Map<String, Value>,
    pub vars_files: Map<String, Value>,
    pub registered: Map<String, Value>,
    pub extra: Map<String, Value>,
    /// `inventory_hostname`, `group_names`, `groups`.
    pub magic: Map<String, Value>,
}

/// Why a template could not be rendered yet, or at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// It refers to something that will exist later in the run (facts not yet gathered, a
    /// result not yet registered): try again then.
    Pending(String),
    /// A real error.
    Error(TemplateError),
}

impl Unresolved {
    pub fn from(e: TemplateError, pending: &BTreeSet<String>) -> Self {
        match e.undefined_root() {
            Some(root) if pending.contains(root) => Unresolved::Pending(root.to_string()),
            // Another host's facts or registered results (`hostvars.h1.facts.os`) exist once
            // an earlier play has run.
            Some("hostvars") => match &e {
                TemplateError::Undefined(path)
                    if path
                        .split(['.', '[', ']', '/'])
                        .skip(2)
                        .any(|seg| pending.contains(seg)) =>
                {
                    Unresolved::Pending("hostvars".into())
                }
                _ => Unresolved::Error(e),
            },
            _ => Unresolved::Error(e),
        }
    }
}

impl Layers {
    /// The merged context for a task, with its own `vars` and loop item.
    pub fn context(
        &self,
        task_vars: &Map<String, Value>,
        item: Option<(&str, &Value)>,
        pending: &BTreeSet<String>,
    ) -> Result<Value, Unresolved> {
        let mut m = self.inventory.clone();
        if let Some(f) = &self.facts {
            m.insert("facts".into(), f.clone());
        }
        m.extend(self.play.clone());
        m.extend(self.vars_files.clone());
        m.extend(task_vars.clone());
        m.extend(self.registered.clone());
        m.extend(self.extra.clone());
        m.extend(self.magic.clone());
        if let Some((name, v)) = item {
            m.insert(name.to_string(), v.clone());
        }
        let mut ctx = Value::Object(m);
        resolve(&mut ctx, pending)?;
        Ok(ctx)
    }
}

/// Render templated variable values against the context itself, a few passes deep (a variable
/// may refer to another templated one). A value referring to something pending stays as is.
fn resolve(ctx: &mut Value, pending: &BTreeSet<String>) -> Result<(), Unresolved> {
    for _ in 0..4 {
        let snapshot = ctx.clone();
        let Value::Object(m) = ctx else { return Ok(()) };
        let mut changed = false;
        let mut last_err = None;
        for (name, v) in m.iter_mut() {
            if name == "facts" || !contains_template(v) {
                continue;
            }
            match template::render_value(v, &snapshot) {
                Ok(r) => {
                    if &r != v {
                        *v = r;
                        changed = true;
                    }
                }
                Err(e) => match Unresolved::from(e, pending) {
                    Unresolved::Pending(_) => {}
                    Unresolved::Error(e) => last_err = Some((name.clone(), e)),
                },
            }
        }
        if !changed {
            if let Some((name, e)) = last_err {
                return Err(Unresolved::Error(match e {
                    TemplateError::Undefined(v) => {
                        TemplateError::Undefined(format!("{v}` (used by variable `{name}"))
                    }
                    other => other,
                }));
            }
            return Ok(());
        }
    }
    Ok(())
}

/// Whether a context rendered with `pending` variables missing is the one the task will see
/// once they exist: no pending name is defined already (a registered result replaces a variable
/// of the same name) and no variable still holds a template waiting for a pending one.
pub fn settled(ctx: &Value, pending: &BTreeSet<String>) -> bool {
    let Value::Object(m) = ctx else { return false };
    !pending.iter().any(|p| m.contains_key(p))
        && !m.iter().any(|(k, v)| k != "facts" && contains_template(v))
}

fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => template::is_template(s),
        Value::Array(a) => a.iter().any(contains_template),
        Value::Object(m) => m.values().any(contains_template),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn precedence() {
        let l = Layers {
            inventory: obj(
                json!({"a": "inv", "b": "inv", "c": "inv", "d": "inv", "facts": "shadowed"}),
            ),
            facts: Some(json!({"kernel": "6.1"})),
            play: obj(json!({"b": "play", "c": "play", "d": "play"})),
            vars_files: obj(json!({"c": "files", "d": "files"})),
            registered: obj(json!({"d": "reg"})),
            extra: obj(json!({"e": "extra"})),
            magic: obj(json!({"inventory_hostname": "h1"})),
        };
        let c = l.context(&Map::new(), None, &BTreeSet::new()).unwrap();
        assert_eq!(c["a"], "inv");
        assert_eq!(c["b"], "play");
        assert_eq!(c["c"], "files");
        assert_eq!(c["d"], "reg");
        assert_eq!(c["e"], "extra");
        assert_eq!(c["facts"]["kernel"], "6.1");
        let mut l2 = l.clone();
        l2.extra.insert("d".into(), json!("extra wins"));
        assert_eq!(
            l2.context(&Map::new(), None, &BTreeSet::new()).unwrap()["d"],
            "extra wins"
        );
        let tv = obj(json!({"c": "task"}));
        assert_eq!(l.context(&tv, None, &BTreeSet::new()).unwrap()["c"], "task");
    }

    #[test]
    fn settled_contexts() {
        let pending: BTreeSet<String> = ["facts".to_string(), "out".to_string()].into();
        assert!(settled(&json!({"a": "x", "n": 1}), &pending));
        assert!(
            !settled(&json!({"out": "inventory value"}), &pending),
            "shadowed by a result"
        );
        assert!(!settled(&json!({"x": ["{{ out.stdout }}"]}), &pending));
    }

    #[test]
    fn templated_vars_resolve_and_pending_waits() {
        let l = Layers {
            inventory: obj(
                json!({"jump": "10.0.0.1", "proxy": "http://{{ jump }}:3128", "no_proxy": "{{ proxy }},localhost"}),
            ),
            play: obj(json!({"kernel_arg": "{{ facts.kernel }}"})),
            ..Default::default()
        };
        let pending: BTreeSet<String> = ["facts".to_string()].into();
        let c = l.context(&Map::new(), None, &pending).unwrap();
        assert_eq!(c["no_proxy"], "http://10.0.0.1:3128,localhost");
        assert_eq!(c["kernel_arg"], "{{ facts.kernel }}");
        assert!(!settled(&c, &pending), "kernel_arg waits for facts");
        let e = l.context(&Map::new(), None, &BTreeSet::new()).unwrap_err();
        assert!(
            matches!(e, Unresolved::Error(TemplateError::Undefined(ref v)) if v.contains("facts.kernel") && v.contains("kernel_arg")),
            "{e:?}"
        );
    }
}
