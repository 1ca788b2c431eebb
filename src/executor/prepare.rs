//! Rendering a task for one host: its condition, loop items, arguments, and what it needs to
//! observe.

use crate::error::Error;
use crate::inventory;
use crate::module::{PlanContext, Probe, Request};
use crate::params::Args;
use crate::playbook::{Play, Playbook, Task};
use crate::template::{self, TemplateError};
use crate::vars::{Layers, Unresolved};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// One host's view of one task, ready to plan.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) label: Option<String>,
    pub(super) item: Option<Value>,
    pub(super) skip: bool,
    /// The module's typed request (`None` when skipped).
    pub(super) request: Option<Request>,
    pub(super) probes: Vec<Probe>,
}

#[derive(Debug, Clone)]
pub(super) enum Prepared {
    Items(Vec<Item>),
    /// An error that fails the task when it is reached.
    Failed(String),
    /// The task refers to a value missing from the result of a task that reports a change. In
    /// check mode that is a value the change would produce (a key generated on a host, read
    /// back once it exists): the task cannot be checked, and is skipped saying so. In a real
    /// run it fails like [`Prepared::Failed`].
    Unknown(String),
}

/// A task rendered for one host, and whether the rendering is final: it did not depend on
/// anything that could still change in the run (facts, registered results, variables whose
/// templates wait for those), so running the task later renders exactly the same.
pub(super) struct Rendered {
    pub(super) prepared: Prepared,
    pub(super) settled: bool,
}

/// Render a task for one host. `Err(name)` when it depends on something pending.
/// With `speculative`, a condition that waits for something pending counts as true: the task's
/// probes are wanted early, and the condition is evaluated for real when the task runs.
pub(super) fn prepare(
    task: &Task,
    layers: &Layers,
    pending: &BTreeSet<String>,
    speculative: bool,
    playbook_dir: &std::path::Path,
) -> Result<Prepared, String> {
    render(task, layers, pending, speculative, playbook_dir).map(|r| r.prepared)
}

/// [`prepare`], telling whether the result is final.
pub(super) fn render(
    task: &Task,
    layers: &Layers,
    pending: &BTreeSet<String>,
    speculative: bool,
    playbook_dir: &std::path::Path,
) -> Result<Rendered, String> {
    let fail = |e: Unresolved| match e {
        Unresolved::Pending(p) => Err(p),
        Unresolved::Error(e) => Ok(Rendered {
            prepared: Prepared::Failed(e.to_string()),
            settled: false,
        }),
    };
    let base = match layers.context(&task.vars, None, pending) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut settled = crate::vars::settled(&base, pending);
    let failed = |msg: String| {
        Ok(Rendered {
            prepared: Prepared::Failed(msg),
            settled: false,
        })
    };
    let items: Vec<Option<Value>> = match &task.loop_ {
        None => vec![None],
        Some(l) => match template::render_value(l, &base) {
            Ok(Value::Array(a)) => a.into_iter().map(Some).collect(),
            // `loop: "{{default pools ''}}"`: nothing to loop over.
            Ok(Value::Null) => Vec::new(),
            Ok(Value::String(s)) if s.is_empty() => Vec::new(),
            Ok(other) => {
                return failed(format!(
                    "loop must be a list, got {}",
                    serde_json::to_string(&other).unwrap_or_default()
                ))
            }
            Err(e) => return fail(Unresolved::from(e, pending)),
        },
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let vars = Arc::new(match &item {
            None => base.clone(),
            Some(v) => {
                let mut c = base.clone();
                c[task.loop_var.as_str()] = v.clone();
                c
            }
        });
        let label = item.as_ref().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let render_err = |e: TemplateError| match &e {
            TemplateError::Undefined(path) if missing_from_a_change(&vars, path) => Ok(Rendered {
                prepared: Prepared::Unknown(e.to_string()),
                settled: false,
            }),
            _ => fail(Unresolved::from(e, pending)),
        };
        let skip = match &task.when {
            None => false,
            Some(w) => match template::condition(w, &vars) {
                Ok(b) => !b,
                Err(e) => match Unresolved::from(e, pending) {
                    Unresolved::Pending(_) if speculative => {
                        settled = false;
                        false
                    }
                    other => return fail(other),
                },
            },
        };
        if skip {
            out.push(Item {
                label,
                item,
                skip,
                request: None,
                probes: Vec::new(),
            });
            continue;
        }
        let ctx = PlanContext {
            playbook_dir: playbook_dir.to_path_buf(),
            vars: vars.clone(),
            pending: pending.clone(),
        };
        let raw = match template::render_value(&task.args, &vars) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return failed("arguments must be a mapping".into()),
            Err(e) => return render_err(e),
        };
        let spec = task.module.spec();
        let args = match Args::validate(spec.params, &raw) {
            Ok(a) => a,
            Err(e) => return failed(format!("module `{}`: {e}", spec.name)),
        };
        let request = match task.module.request(args, &ctx) {
            Ok(r) => r,
            Err(e) => return failed(format!("module `{}`: {e}", spec.name)),
        };
        if let Some(var) = task.module.waits_for(&request) {
            // Good for its probes only: observed early when speculating, rendered again to run.
            if !speculative {
                return Err(var.to_string());
            }
            settled = false;
        }
        let probes = task.module.probes(&request);
        out.push(Item {
            label,
            item,
            skip,
            request: Some(request),
            probes,
        });
    }
    Ok(Rendered {
        prepared: Prepared::Items(out),
        settled,
    })
}

/// Whether the undefined `path` (`hostvars.jump.tunnel.public_key`) leads into a task result
/// that reports a change (`changed: true`) and lacks the rest of the path.
fn missing_from_a_change(vars: &Value, path: &str) -> bool {
    let mut at = vars;
    for seg in path.split(['.', '[', ']', '/']).filter(|s| !s.is_empty()) {
        // A loop's `results.1` is an index into a list.
        let next = match at {
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => at.get(seg),
        };
        match next {
            Some(next) => at = next,
            None => return at.get("changed") == Some(&Value::Bool(true)),
        }
    }
    false
}

/// Load a play's `vars_files` (relative to the playbook).
pub(super) fn load_vars_files(play: &Play, pb: &Playbook) -> Result<Map<String, Value>, Error> {
    let mut m = Map::new();
    for f in &play.vars_files {
        let p = pb.dir.join(f);
        m.extend(inventory::load_vars_file(&p)?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_value_missing_from_a_changed_result_is_unknown_not_an_error() {
        let vars = json!({
            "hostvars": {"jump": {"tunnel": {"changed": true, "key": "/k"},
                                  "same": {"changed": false}}},
            "out": {"changed": true}
        });
        assert!(missing_from_a_change(
            &vars,
            "hostvars.jump.tunnel.public_key"
        ));
        assert!(missing_from_a_change(&vars, "out.stdout"));
        // Unchanged results, other hosts, and plain variables: a real error.
        assert!(!missing_from_a_change(
            &vars,
            "hostvars.jump.same.public_key"
        ));
        assert!(!missing_from_a_change(
            &vars,
            "hostvars.nope.tunnel.public_key"
        ));
        assert!(!missing_from_a_change(&vars, "nothing"));
        // Into a loop's results.
        let vars = json!({"hostvars": {"jump": {"tunnels": {"changed": true, "results": [
            {"changed": false, "public_key": "k"}, {"changed": true}
        ]}}}});
        assert!(missing_from_a_change(
            &vars,
            "hostvars.jump.tunnels.results.1.public_key"
        ));
        assert!(!missing_from_a_change(
            &vars,
            "hostvars.jump.tunnels.results.0.nope"
        ));
    }
}
