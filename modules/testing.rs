//! Test support shared by every module's tests: building requests from JSON arguments the way
//! the engine does, and simulating the engine's file actions so a test can re-plan and check
//! that a second run changes nothing.

use crate::module::{
    Action, ArgError, Attrs, FileKind, FileState, Module, ModuleError, Observation, Observed, Plan,
    PlanContext, Probe,
};
use crate::params::Args;

/// The request the engine would build from these arguments (checked against the module's
/// parameter table first), with an empty [`PlanContext`].
pub fn request<M: Module>(module: &M, args: serde_json::Value) -> Result<M::Request, ModuleError> {
    request_in(module, args, &PlanContext::default())
}

/// [`request`] with a context (playbook directory, variables).
pub fn request_in<M: Module>(
    module: &M,
    args: serde_json::Value,
    ctx: &PlanContext,
) -> Result<M::Request, ModuleError> {
    let args = Args::from_json(module.spec().params, args)
        .unwrap_or_else(|e| panic!("arguments rejected by the parameter table: {e}"));
    module.request(args, ctx)
}

/// The request for arguments that must be valid.
pub fn req<M: Module>(module: &M, args: serde_json::Value) -> M::Request {
    request(module, args).unwrap_or_else(|e| panic!("request: {e}"))
}

/// The argument error these arguments must cause.
pub fn arg_error<M: Module>(module: &M, args: serde_json::Value) -> ArgError {
    match request(module, args) {
        Ok(_) => panic!("arguments accepted, expected an argument error"),
        Err(ModuleError::Args(e)) => e,
        Err(other) => panic!("expected an argument error, got {other:?}"),
    }
}

/// Plan from arguments and observations in one step.
pub fn plan<M: Module>(
    module: &M,
    args: serde_json::Value,
    observed: &Observed,
) -> Result<Plan, ModuleError> {
    module.plan(&req(module, args), observed)
}

/// The commands a plan runs (a plan with any other action is a test failure).
pub fn runs(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Run { cmd, .. } => cmd.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The commands a plan runs, among its other actions.
pub fn commands(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Run { cmd, .. } => Some(cmd.clone()),
            _ => None,
        })
        .collect()
}

fn set_attrs(state: &mut FileState, attrs: &Attrs) {
    if let Some(m) = attrs.mode {
        state.mode = m;
    }
    if let Some(o) = &attrs.owner {
        state.owner = o.clone();
    }
    if let Some(g) = &attrs.group {
        state.group = g.clone();
    }
}

fn get(observed: &Observed, path: &str) -> FileState {
    match observed.get(&Probe::File(path.into())) {
        Some(Observation::File(f)) => f.clone(),
        _ => FileState::absent(),
    }
}

/// The observed state after `actions` (a write to a symlink's target is not mirrored onto
/// the link: tests of that case check the written path).
pub fn apply(observed: &Observed, actions: &[Action]) -> Observed {
    let mut out = observed.clone();
    for action in actions {
        match action {
            Action::WriteFile {
                path,
                content,
                attrs,
                ..
            } => {
                let mut st = get(&out, path);
                if st.kind != FileKind::File {
                    st = FileState::file(Vec::new());
                }
                st.content = Some(content.clone());
                st.size = content.len() as u64;
                set_attrs(&mut st, attrs);
                out = out.with_file(path, st);
            }
            Action::SetAttrs { path, attrs } => {
                let mut st = get(&out, path);
                assert!(st.exists(), "SetAttrs on missing {path}");
                set_attrs(&mut st, attrs);
                out = out.with_file(path, st);
            }
            Action::MakeDir { path, attrs } => {
                let mut st = FileState::dir();
                set_attrs(&mut st, attrs);
                out = out.with_file(path, st);
            }
            Action::Remove { path } => out = out.with_file(path, FileState::absent()),
            Action::Symlink { target, link } => {
                let resolved = crate::modules::files::edit::write_target(
                    link,
                    &FileState {
                        link_target: Some(target.clone()),
                        ..FileState::absent()
                    },
                );
                let mut st = get(&out, &resolved);
                if !st.exists() {
                    st.kind = FileKind::Other;
                }
                st.link_target = Some(target.clone());
                out = out.with_file(link, st);
            }
            Action::Run { cmd, .. } => panic!("cannot simulate `{cmd}`"),
        }
    }
    out
}

/// Plan, apply the plan, plan again: the second plan must change nothing. Returns the first
/// plan and the state after it.
pub fn converge<M: Module>(module: &M, req: &M::Request, observed: &Observed) -> (Plan, Observed) {
    let first = module.plan(req, observed).expect("first plan");
    let after = apply(observed, &first.actions);
    let second = module.plan(req, &after).expect("second plan");
    assert!(
        !second.changed(),
        "second run changes again: {:?}",
        second.changes
    );
    assert!(
        second.actions.is_empty(),
        "second run acts again: {:?}",
        second.actions
    );
    (first, after)
}

/// The content the state holds at `path` (after [`apply`]).
pub fn content(observed: &Observed, path: &str) -> String {
    observed.file(path).expect("observed").text()
}
