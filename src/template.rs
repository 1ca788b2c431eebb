//! Handlebars templating in strict mode.
//!
//! One registry with kvmforge's helpers renders everything: task arguments, `when:` conditions,
//! variable values and `template` files. Strict mode makes an undefined variable an error that
//! names the variable; callers add the task and host.

use crate::memo::Memo;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson, Template,
};
use serde_json::Value;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("variable `{0}` is not defined")]
    Undefined(String),
    #[error("template syntax error: {0}")]
    Syntax(String),
    #[error("template error: {0}")]
    Render(String),
}

impl TemplateError {
    /// The first path segment of an undefined variable (`facts` for `facts.kernel`).
    pub fn undefined_root(&self) -> Option<&str> {
        match self {
            TemplateError::Undefined(v) => Some(var_root(v)),
            _ => None,
        }
    }
}

/// `facts` for `facts.kernel`, `out` for `out.stdout_lines.[0]`.
pub fn var_root(path: &str) -> &str {
    let path = path.trim_start_matches("./").trim_start_matches("this.");
    let end = path.find(['.', '[', '/']).unwrap_or(path.len());
    &path[..end]
}

fn registry() -> &'static Handlebars<'static> {
    static REG: OnceLock<Handlebars<'static>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut h = Handlebars::new();
        h.set_strict_mode(true);
        h.register_escape_fn(handlebars::no_escape);
        h.register_helper("contains", Box::new(contains_helper));
        h.register_helper("default", Box::new(default_helper));
        h.register_helper("join", Box::new(join_helper));
        h.register_helper("hostvars_of", Box::new(hostvars_of_helper));
        h.register_helper("get", Box::new(GetHelper));
        h.register_helper("index_of", Box::new(IndexOfHelper));
        h.register_helper("ipaddr", Box::new(ipaddr_helper));
        h.register_helper(
            "upper",
            Box::new(
                |h: &Helper,
                 _: &Handlebars,
                 _: &Context,
                 _: &mut RenderContext,
                 out: &mut dyn Output|
                 -> HelperResult {
                    defined(h, 0)?;
                    out.write(&param_str(h, 0).to_uppercase())?;
                    Ok(())
                },
            ),
        );
        h.register_helper(
            "lower",
            Box::new(
                |h: &Helper,
                 _: &Handlebars,
                 _: &Context,
                 _: &mut RenderContext,
                 out: &mut dyn Output|
                 -> HelperResult {
                    defined(h, 0)?;
                    out.write(&param_str(h, 0).to_lowercase())?;
                    Ok(())
                },
            ),
        );
        h
    })
}

/// A helper parameter that must be defined: strict mode's error, naming the variable.
fn defined<'a>(h: &'a Helper, i: usize) -> Result<&'a Value, RenderError> {
    match h.param(i) {
        Some(p) if p.is_value_missing() => {
            Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into())
        }
        Some(p) => Ok(p.value()),
        None => Err(RenderErrorReason::ParamNotFoundForIndex("helper", i).into()),
    }
}

fn param_str(h: &Helper, i: usize) -> String {
    match h.param(i).map(|p| p.value()) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// `{{contains list "x"}}`, `{{contains "haystack" "needle"}}`, `{{contains map "key"}}`.
fn contains_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let hay = defined(h, 0)?.clone();
    let needle = defined(h, 1)?.clone();
    let found = match (&hay, &needle) {
        (Value::Array(a), n) => a
            .iter()
            .any(|x| x == n || x.as_str().is_some_and(|s| Some(s) == n.as_str())),
        (Value::String(s), Value::String(n)) => s.contains(n.as_str()),
        (Value::Object(m), Value::String(n)) => m.contains_key(n),
        _ => false,
    };
    out.write(if found { "true" } else { "false" })?;
    Ok(())
}

/// `{{default value "fallback"}}`: the fallback when value is undefined, null or empty — the one
/// place an undefined variable is not an error, like Ansible's `| default()`.
fn default_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    // Lists render space-separated, which list parameters read back as a list.
    let text = |i: usize| match h.param(i).map(|p| p.value()) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => param_str(h, i),
    };
    let v = text(0);
    if v.is_empty() {
        // The fallback itself must exist: `{{default x facts.user}}` waits for facts.
        defined(h, 1)?;
        out.write(&text(1))?;
    } else {
        out.write(&v)?;
    }
    Ok(())
}

/// `{{join list ","}}`.
fn join_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let sep = h
        .param(1)
        .map(|_| param_str(h, 1))
        .unwrap_or_else(|| " ".into());
    let joined = match defined(h, 0)? {
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(&sep),
        _ => param_str(h, 0),
    };
    out.write(&joined)?;
    Ok(())
}

/// `{{hostvars_of "GROUP" "VAR"}}`: VAR of every host of GROUP, in inventory order, separated by
/// spaces (or the third parameter). A host without VAR is an error naming it, as for any
/// undefined variable. Made for lists of peers: `peers: "{{hostvars_of "kvm_hosts" "vxlan_ip"}}"`.
fn hostvars_of_helper(
    h: &Helper,
    _: &Handlebars,
    ctx: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let group = param_str(h, 0);
    let var = param_str(h, 1);
    let sep = h
        .param(2)
        .map(|_| param_str(h, 2))
        .unwrap_or_else(|| " ".into());
    let root = ctx.data();
    let members = root
        .get("groups")
        .and_then(|g| g.get(&group))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            RenderErrorReason::Other(format!("hostvars_of: no group `{group}` in the inventory"))
        })?;
    let mut values = Vec::new();
    for m in members {
        let name = m.as_str().unwrap_or_default();
        let v = root
            .get("hostvars")
            .and_then(|hv| hv.get(name))
            .and_then(|vars| vars.get(&var))
            .filter(|v| !v.is_null())
            .ok_or_else(|| {
                RenderErrorReason::Other(format!(
                    "hostvars_of: host `{name}` of group `{group}` has no variable `{var}`"
                ))
            })?;
        values.push(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    out.write(&values.join(&sep))?;
    Ok(())
}

/// `{{get "hostvars" host "tunnels.results" 2 "public_key"}}`: the value at a path from the top
/// of the variables, whose segments are the parameters (a string may hold several, separated by
/// dots; a number indexes a list). A path with parts only known when rendering — another host's
/// name, a position in a list — as `hostvars[host].tunnels.results[2].public_key` in Ansible. A
/// path that leads nowhere is an undefined variable naming the whole path, as a written-out
/// `{{hostvars.jump.tunnels...}}` would be.
struct GetHelper;

impl HelperDef for GetHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        if h.params().is_empty() {
            return Err(RenderErrorReason::ParamNotFoundForIndex("get", 0).into());
        }
        let mut segments = Vec::new();
        for i in 0..h.params().len() {
            match defined(h, i)? {
                Value::String(s) => {
                    segments.extend(s.split('.').filter(|x| !x.is_empty()).map(str::to_string))
                }
                Value::Number(n) => segments.push(n.to_string()),
                other => {
                    return Err(RenderErrorReason::Other(format!(
                        "get: a path segment must be a string or a number, not {other}"
                    ))
                    .into())
                }
            }
        }
        let path = segments.join(".");
        match lookup(ctx.data(), &path) {
            Some(v) => Ok(ScopedJson::Derived(v.clone())),
            None => Err(RenderErrorReason::MissingVariable(Some(path)).into()),
        }
    }
}

/// `{{index_of list value}}`: the position of `value` in `list` (from 0), for the matching entry
/// of a loop's `results`: `(index_of groups.kvm_hosts inventory_hostname)`. Absent is an error.
struct IndexOfHelper;

impl HelperDef for IndexOfHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let list = defined(h, 0)?;
        let wanted = defined(h, 1)?;
        let Value::Array(items) = list else {
            return Err(RenderErrorReason::Other(format!("index_of: {list} is not a list")).into());
        };
        let same = |x: &Value| {
            x == wanted
                || matches!((x, wanted), (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) if *a == b.to_string())
        };
        match items.iter().position(same) {
            Some(i) => Ok(ScopedJson::Derived(Value::from(i))),
            None => {
                Err(RenderErrorReason::Other(format!("index_of: {wanted} is not in {list}")).into())
            }
        }
    }
}

/// `{{ipaddr "172.22.0.11/24" "address"}}` (172.22.0.11), `"prefix"` (24), `"network"`
/// (172.22.0.0/24), `"netmask"` (255.255.255.0), or a number N: the Nth address of the network
/// (`{{ipaddr "192.168.200.0/24" 1}}` is 192.168.200.1), like Ansible's `ipaddr` and `nthhost`
/// filters. An address without a prefix is a single host (/32, /128).
fn ipaddr_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    defined(h, 0)?;
    let query = defined(h, 1)?.clone();
    let text = param_str(h, 0);
    let value = text.trim();
    let err = |why: String| RenderErrorReason::Other(format!("ipaddr {value:?}: {why}"));
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let addr: std::net::IpAddr = addr.parse().map_err(|_| err("not an IP address".into()))?;
    let width: u32 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p <= width)
            .ok_or_else(|| err(format!("prefix {p:?} is not 0 to {width}")))?,
        None => width,
    };
    let bits: u128 = match addr {
        std::net::IpAddr::V4(a) => u32::from(a).into(),
        std::net::IpAddr::V6(a) => a.into(),
    };
    let host_mask: u128 = if prefix == width {
        0
    } else {
        (1u128 << (width - prefix)) - 1
    };
    let net = bits & !host_mask;
    let show = |b: u128| -> String {
        if width == 32 {
            std::net::Ipv4Addr::from(b as u32).to_string()
        } else {
            std::net::Ipv6Addr::from(b).to_string()
        }
    };
    let nth = match &query {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    let result = match (nth, query.as_str()) {
        (Some(n), _) => {
            if u128::from(n) > host_mask {
                return Err(err(format!("the network has no address number {n}")).into());
            }
            show(net + u128::from(n))
        }
        (None, Some("address")) => addr.to_string(),
        (None, Some("prefix")) => prefix.to_string(),
        (None, Some("network")) => format!("{}/{prefix}", show(net)),
        (None, Some("netmask")) if width == 32 => show(u128::from(u32::MAX) & !host_mask),
        _ => {
            return Err(err(format!(
                "unknown query {query}: address, prefix, network, netmask or a number"
            ))
            .into())
        }
    };
    out.write(&result)?;
    Ok(())
}

fn convert(e: RenderError, template: &str, vars: &Value) -> TemplateError {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => TemplateError::Undefined(path.clone()),
        RenderErrorReason::TemplateError(t) => TemplateError::Syntax(t.to_string()),
        // A helper given an undefined variable fails without naming it: find it ourselves.
        _ => match first_undefined(template, vars) {
            Some(path) => TemplateError::Undefined(path),
            None => TemplateError::Render(e.to_string()),
        },
    }
}

/// The first variable path used as a helper argument in `template` that `vars` lacks.
fn first_undefined(template: &str, vars: &Value) -> Option<String> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let expr = after[..end].trim_matches(|c: char| c == '~' || c.is_whitespace());
        rest = &after[end + 2..];
        if expr.starts_with(['!', '/', '>']) || expr == "else" {
            continue;
        }
        let expr = expr.trim_start_matches(['#', '^']);
        let mut after_open = true; // the first word, and the first after `(`, name a helper
                                   // `default`'s first argument may be undefined: that is what the helper is for.
        let mut may_be_undefined = false;
        for tok in tokens(expr) {
            match tok.as_str() {
                "(" => {
                    after_open = true;
                    may_be_undefined = false;
                }
                ")" => {}
                t => {
                    let helper = std::mem::replace(&mut after_open, false);
                    if helper {
                        may_be_undefined = t == "default";
                        continue;
                    }
                    if std::mem::replace(&mut may_be_undefined, false) {
                        continue;
                    }
                    let value = t.split_once('=').map_or(t, |(_, v)| v);
                    let literal = value.starts_with(['"', '\'', '@'])
                        || value.parse::<f64>().is_ok()
                        || matches!(value, "true" | "false" | "null" | "this" | "as" | "")
                        || value.starts_with("this.")
                        || value.starts_with("../");
                    if !helper && !literal && lookup(vars, value).is_none() {
                        return Some(value.to_string());
                    }
                }
            }
        }
    }
    None
}

fn tokens(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                cur.push(c);
                quote = None;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                cur.push(c);
                quote = Some(c);
            }
            (None, '(' | ')') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Follow a dotted path (`a.b.0`, `a.[0]`) through a value.
pub fn lookup<'a>(vars: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = vars;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let seg = seg.trim_start_matches('[').trim_end_matches(']');
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Whether a string contains template syntax at all (most values do not, and skip the engine).
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

/// A template compiled once per run: the same arguments are rendered for every host, and
/// parsing dominates rendering.
fn compiled(template: &str) -> Result<Arc<Template>, TemplateError> {
    static COMPILED: Memo<String, Arc<Template>> = Memo::new();
    COMPILED.get_or_try(template, || {
        Template::compile(template)
            .map(Arc::new)
            .map_err(|e| TemplateError::Syntax(e.to_string()))
    })
}

/// The variables in the form the engine reads them, made at most once per [`render_value`] or
/// [`condition`] call however many strings it renders.
struct Scope<'v> {
    vars: &'v Value,
    ctx: OnceLock<Context>,
}

impl<'v> Scope<'v> {
    fn new(vars: &'v Value) -> Self {
        Scope {
            vars,
            ctx: OnceLock::new(),
        }
    }

    fn render(&self, template: &str) -> Result<String, TemplateError> {
        if !is_template(template) {
            return Ok(template.to_string());
        }
        let tpl = compiled(template)?;
        let ctx = self.ctx.get_or_init(|| Context::from(self.vars.clone()));
        let mut rc = RenderContext::new(None);
        tpl.renders(registry(), ctx, &mut rc)
            .map_err(|e| convert(e, template, self.vars))
    }
}

/// Render one template string against `vars`.
pub fn render(template: &str, vars: &Value) -> Result<String, TemplateError> {
    Scope::new(vars).render(template)
}

/// Render every string inside a value. A string that is exactly one `{{ path }}` expression
/// keeps the type of what it refers to, so `loop: "{{ packages }}"` yields a list.
pub fn render_value(v: &Value, vars: &Value) -> Result<Value, TemplateError> {
    render_value_in(v, &Scope::new(vars))
}

fn render_value_in(v: &Value, scope: &Scope) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => {
            if let Some(found) = whole_expression(s, scope.vars)? {
                found
            } else {
                Value::String(scope.render(s)?)
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value_in(x, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((scope.render(k)?, render_value_in(x, scope)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// If `s` is a single `{{ a.b.c }}` variable reference, the referenced value (any type); also
/// `{{default a.b.c ''}}` when the variable is defined and not empty, so an optional list stays
/// a list.
fn whole_expression(s: &str, vars: &Value) -> Result<Option<Value>, TemplateError> {
    let t = s.trim();
    let Some(inner) = t.strip_prefix("{{").and_then(|x| x.strip_suffix("}}")) else {
        return Ok(None);
    };
    let words: Vec<&str> = inner.split_whitespace().collect();
    if let ["default", path, _fallback] = words[..] {
        let plain = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        return Ok(match lookup(vars, path) {
            Some(Value::Array(a)) if plain && !a.is_empty() => Some(Value::Array(a.clone())),
            Some(Value::Object(m)) if plain && !m.is_empty() => Some(Value::Object(m.clone())),
            _ => None,
        });
    }
    let path = inner.trim();
    if path.is_empty()
        || inner.contains("{{")
        || !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        return Ok(None);
    }
    let cur = lookup(vars, path).ok_or_else(|| TemplateError::Undefined(path.to_string()))?;
    Ok(match cur {
        Value::Array(_) | Value::Object(_) | Value::Bool(_) | Value::Number(_) => Some(cur.clone()),
        _ => None,
    })
}

/// The truth of a rendered condition: anything but empty, `false` and `0`.
pub fn truthy(rendered: &str) -> bool {
    let t = rendered.trim();
    !(t.is_empty() || t.eq_ignore_ascii_case("false") || t == "0")
}

/// Evaluate a `when:`-style condition. A bare expression without braces (`eq a "b"`) is wrapped
/// in `{{ }}` for convenience.
pub fn condition(expr: &Value, vars: &Value) -> Result<bool, TemplateError> {
    match expr {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        Value::Number(n) => Ok(n.as_f64() != Some(0.0)),
        Value::String(s) => {
            let s = s.trim();
            let wrapped;
            let t = if is_template(s) {
                s
            } else {
                wrapped = format!("{{{{{s}}}}}");
                &wrapped
            };
            Ok(truthy(&render(t, vars)?))
        }
        Value::Array(items) => {
            // A list of conditions: all must hold, as in Ansible.
            for i in items {
                if !condition(i, vars)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Value::Object(_) => Err(TemplateError::Render(
            "a condition cannot be a mapping".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn no_helper_reads_controller_files() {
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "controller-secret\n").unwrap();
        let p = secret.path().display().to_string();
        let vars = json!({"p": p});
        for t in [
            format!("{{{{> {p}}}}}"),
            format!("{{{{> \"{p}\"}}}}"),
            "{{> (lookup this \"p\")}}".to_string(),
            format!("{{{{#> {p}}}}}x{{{{/{p}}}}}"),
            "{{log p}}".to_string(),
            format!("{{{{lookup \"{p}\" 0}}}}"),
        ] {
            if let Ok(out) = render(&t, &vars) {
                assert!(!out.contains("controller-secret"), "{t}: {out}");
            }
        }
    }

    #[test]
    fn strict_mode_names_missing_variable() {
        let e = render("x={{ nope.deep }}", &json!({})).unwrap_err();
        assert_eq!(e, TemplateError::Undefined("nope.deep".into()));
        assert_eq!(e.undefined_root(), Some("nope"));
    }

    #[test]
    fn default_keeps_a_defined_list_and_skips_its_value_when_naming_the_undefined() {
        let vars = json!({"pools": [{"name": "a"}], "empty": []});
        assert_eq!(
            render_value(&json!("{{default pools ''}}"), &vars).unwrap(),
            json!([{"name": "a"}])
        );
        assert_eq!(
            render_value(&json!("{{default nope ''}}"), &vars).unwrap(),
            json!("")
        );
        assert_eq!(
            render_value(&json!("{{default empty ''}}"), &vars).unwrap(),
            json!("")
        );
        assert_eq!(
            first_undefined("{{and (default iommu true) facts.grub}}", &json!({})).as_deref(),
            Some("facts.grub")
        );
    }

    #[test]
    fn no_html_escaping() {
        assert_eq!(
            render("{{ a }}", &json!({"a": "<&\"'>"})).unwrap(),
            "<&\"'>"
        );
    }

    #[test]
    fn whole_expression_keeps_type() {
        let v = render_value(&json!("{{ pkgs }}"), &json!({"pkgs": ["a", "b"]})).unwrap();
        assert_eq!(v, json!(["a", "b"]));
        let v = render_value(&json!("x {{ n }}"), &json!({"n": 3})).unwrap();
        assert_eq!(v, json!("x 3"));
    }

    #[test]
    fn conditions() {
        let vars = json!({"os": "Debian", "list": ["a"], "flag": false});
        assert!(condition(&json!("{{eq os \"Debian\"}}"), &vars).unwrap());
        assert!(condition(&json!("eq os \"Debian\""), &vars).unwrap());
        assert!(!condition(&json!("{{flag}}"), &vars).unwrap());
        assert!(condition(&json!("contains list \"a\""), &vars).unwrap());
        assert!(!condition(&json!("contains list \"b\""), &vars).unwrap());
        assert!(condition(&json!(["{{not flag}}", "eq os \"Debian\""]), &vars).unwrap());
        assert!(condition(&json!("and (eq os \"Debian\") (not flag)"), &vars).unwrap());
        assert_eq!(
            condition(&json!("eq missing 1"), &vars)
                .unwrap_err()
                .undefined_root(),
            Some("missing")
        );
        assert_eq!(
            condition(
                &json!("and (eq os \"Debian\") (eq facts.kernel \"x\")"),
                &vars
            )
            .unwrap_err(),
            TemplateError::Undefined("facts.kernel".into())
        );
    }

    #[test]
    fn hostvars_of_lists_a_variable_of_every_host_of_a_group() {
        let vars = json!({
            "groups": {"kvm": ["k1", "k2", "k3"]},
            "hostvars": {"k1": {"ip": "10.0.0.1"}, "k2": {"ip": "10.0.0.2"}, "k3": {"ip": "10.0.0.3", "n": 3}},
        });
        assert_eq!(
            render("{{hostvars_of \"kvm\" \"ip\"}}", &vars).unwrap(),
            "10.0.0.1 10.0.0.2 10.0.0.3"
        );
        assert_eq!(
            render("{{hostvars_of 'kvm' 'ip' ','}}", &vars).unwrap(),
            "10.0.0.1,10.0.0.2,10.0.0.3"
        );
        let e = render("{{hostvars_of 'kvm' 'n'}}", &vars)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("host `k1` of group `kvm` has no variable `n`"),
            "{e}"
        );
        let e = render("{{hostvars_of 'nope' 'ip'}}", &vars)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no group `nope`"), "{e}");
        assert_eq!(render("{{hostvars.k2.ip}}", &vars).unwrap(), "10.0.0.2");
    }

    #[test]
    fn get_follows_a_path_made_when_rendering() {
        let vars = json!({
            "groups": {"jumphost": ["gw"], "kvm": ["k1", "k2"]},
            "hostvars": {"gw": {"tunnels": {"changed": true, "results": [
                {"name": "k1", "public_key": "ssh-ed25519 AAA1"},
                {"name": "k2", "changed": true}
            ]}}},
            "me": "k1",
        });
        let key = |host: &str| {
            let mut v = vars.clone();
            v["me"] = json!(host);
            render(
                "{{get 'hostvars' (get 'groups.jumphost.0') 'tunnels.results' (index_of groups.kvm me) 'public_key'}}",
                &v,
            )
        };
        assert_eq!(key("k1").unwrap(), "ssh-ed25519 AAA1");
        // Missing: an undefined variable naming the whole path, as if written out.
        assert_eq!(
            key("k2").unwrap_err(),
            TemplateError::Undefined("hostvars.gw.tunnels.results.1.public_key".into())
        );
        let e = key("k3").unwrap_err().to_string();
        assert!(e.contains("index_of: \"k3\" is not in"), "{e}");
        assert_eq!(render("{{index_of groups.kvm 'k2'}}", &vars).unwrap(), "1");
        assert_eq!(
            render("{{get 'hostvars' nope}}", &vars).unwrap_err(),
            TemplateError::Undefined("nope".into())
        );
    }

    #[test]
    fn the_undefined_variable_named_is_not_the_one_default_guards() {
        // A helper failing on an undefined variable is reported by name; `default`'s first
        // argument is allowed to be undefined, also in a subexpression.
        let vars = json!({"r": {}});
        assert_eq!(
            condition(
                &json!("and (eq (default mode 'auto') 'auto') (eq r.status.x 'a')"),
                &vars
            )
            .unwrap_err(),
            TemplateError::Undefined("r.status.x".into())
        );
        assert_eq!(
            first_undefined("{{eq (default mode other) 'a'}}", &vars),
            Some("other".into())
        );
    }

    #[test]
    fn ipaddr_splits_and_counts_addresses() {
        let vars = json!({"a": "172.22.0.11/24", "net": "192.168.200.0/24", "v6": "fd00::5/64"});
        let r = |t: &str| render(t, &vars);
        assert_eq!(r("{{ipaddr a 'address'}}").unwrap(), "172.22.0.11");
        assert_eq!(r("{{ipaddr a 'prefix'}}").unwrap(), "24");
        assert_eq!(r("{{ipaddr a 'network'}}").unwrap(), "172.22.0.0/24");
        assert_eq!(r("{{ipaddr a 'netmask'}}").unwrap(), "255.255.255.0");
        assert_eq!(r("{{ipaddr net 1}}").unwrap(), "192.168.200.1");
        assert_eq!(r("{{ipaddr net '254'}}").unwrap(), "192.168.200.254");
        assert_eq!(r("{{ipaddr v6 1}}").unwrap(), "fd00::1");
        assert_eq!(r("{{ipaddr '10.0.0.1' 'prefix'}}").unwrap(), "32");
        assert!(r("{{ipaddr net 256}}")
            .unwrap_err()
            .to_string()
            .contains("no address number 256"));
        assert!(r("{{ipaddr 'nope/24' 1}}")
            .unwrap_err()
            .to_string()
            .contains("not an IP address"));
        assert!(r("{{ipaddr '10.0.0.0/33' 1}}")
            .unwrap_err()
            .to_string()
            .contains("prefix"));
        assert!(r("{{ipaddr a 'broadcast'}}")
            .unwrap_err()
            .to_string()
            .contains("unknown query"));
        assert_eq!(
            r("{{ipaddr nope 'address'}}").unwrap_err(),
            TemplateError::Undefined("nope".into())
        );
    }

    #[test]
    fn helpers() {
        let vars = json!({"l": ["a", "b"], "e": ""});
        assert_eq!(render("{{join l \",\"}}", &vars).unwrap(), "a,b");
        assert_eq!(render("{{default e \"x\"}}", &vars).unwrap(), "x");
        assert_eq!(render("{{default nope \"x\"}}", &vars).unwrap(), "x");
        assert_eq!(render("{{default l \"x\"}}", &vars).unwrap(), "a b");
        assert_eq!(
            render("{{default nope facts.user}}", &vars).unwrap_err(),
            TemplateError::Undefined("facts.user".into())
        );
        assert_eq!(
            render("{{contains nope \"x\"}}", &vars).unwrap_err(),
            TemplateError::Undefined("nope".into())
        );
        assert_eq!(
            render("{{join nope.x}}", &vars).unwrap_err(),
            TemplateError::Undefined("nope.x".into())
        );
    }
}
