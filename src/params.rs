//! Typed module parameters.
//!
//! Every module declares its parameters as a static table of [`ParamSpec`]. The same table is
//! used to validate a task's arguments before any host is contacted, to normalise them (defaults,
//! aliases, `"yes"` → `true`, `"0644"` → a mode), and to generate `kvmforge doc MODULE`. Modules
//! then read the normalised [`Args`] through typed getters that cannot fail on type.

use serde_json::{Map, Value};
use std::fmt;

/// The type of a parameter value after normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Any string.
    Str,
    /// A boolean; accepts YAML booleans and `yes`/`no`/`true`/`false`/`on`/`off`/`1`/`0` strings.
    Bool,
    /// An integer; accepts numbers and numeric strings.
    Int,
    /// A file mode, given as an octal string (`"0644"`, `"644"`) or a YAML integer read as octal
    /// digits (`644`, `0644`). Normalised to a number.
    Mode,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A list of strings; a single string is split on whitespace (never on commas, which
    /// belong to values like `vfio-pci.ids=10de:1b80,10de:10f0`).
    List,
    /// A string-to-scalar mapping (values normalised to strings).
    Map,
    /// A scalar (string, number or bool), normalised to a string.
    Scalar,
    /// Structured YAML (lists and mappings of any depth), passed through as written: the module's
    /// typed request gives it its shape (netplan-style `routes:`, `interfaces:` with VLAN
    /// entries), and a value of the wrong shape is an argument error naming the parameter.
    Data,
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamKind::Str => f.write_str("string"),
            ParamKind::Bool => f.write_str("bool"),
            ParamKind::Int => f.write_str("int"),
            ParamKind::Mode => f.write_str("mode"),
            ParamKind::Choice(c) => write!(f, "one of {}", c.join("|")),
            ParamKind::List => f.write_str("list of strings"),
            ParamKind::Map => f.write_str("mapping"),
            ParamKind::Scalar => f.write_str("scalar"),
            ParamKind::Data => f.write_str("structured"),
        }
    }
}

/// One declared parameter of a module.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub required: bool,
    /// Default as YAML text (`"present"`, `"true"`, `"[]"`), applied when the parameter is absent.
    pub default: Option<&'static str>,
    /// Other accepted names (Ansible's spellings).
    pub aliases: &'static [&'static str],
    pub doc: &'static str,
}

impl ParamSpec {
    /// A parameter with no default that may be omitted.
    pub const fn optional(name: &'static str, kind: ParamKind, doc: &'static str) -> Self {
        ParamSpec {
            name,
            kind,
            required: false,
            default: None,
            aliases: &[],
            doc,
        }
    }
    /// A parameter that must be given.
    pub const fn required(name: &'static str, kind: ParamKind, doc: &'static str) -> Self {
        ParamSpec {
            name,
            kind,
            required: true,
            default: None,
            aliases: &[],
            doc,
        }
    }
    /// A parameter with a default (YAML text).
    pub const fn with_default(
        name: &'static str,
        kind: ParamKind,
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        ParamSpec {
            name,
            kind,
            required: false,
            default: Some(default),
            aliases: &[],
            doc,
        }
    }
    /// The same parameter, also accepted under these names.
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }
}

/// Why a set of arguments does not fit a module's parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter `{name}`{}", did_you_mean_suffix(.suggestion))]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error("missing required parameter `{0}`")]
    Missing(String),
    #[error("parameter `{name}` must be {expected}, got {got}")]
    Type {
        name: String,
        expected: String,
        got: String,
    },
    #[error("parameter `{0}` is given twice (once under an alias)")]
    Duplicate(String),
    #[error("arguments must be a mapping of parameter names to values{0}")]
    NotAMapping(String),
}

pub fn did_you_mean_suffix(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// The closest candidate to `name`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Only checks parameter names (used while parsing, where values may still be templates).
pub fn check_names(specs: &[ParamSpec], name: &str) -> Result<(), ParamError> {
    if specs
        .iter()
        .any(|s| s.name == name || s.aliases.contains(&name))
    {
        return Ok(());
    }
    let all = specs
        .iter()
        .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()));
    Err(ParamError::Unknown {
        name: name.to_string(),
        suggestion: did_you_mean(name, all),
    })
}

/// Validated, normalised arguments of one task invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(Map<String, Value>);

/// A parameter's default, written as YAML in its spec, parsed once per run.
fn default_value(yaml: &'static str) -> Value {
    static PARSED: crate::memo::Memo<String, Value> = crate::memo::Memo::new();
    PARSED
        .get_or_try(yaml, || serde_yaml::from_str(yaml))
        .expect("valid default YAML")
}

impl Args {
    /// Validate `raw` (already templated) against `specs` and normalise it.
    pub fn validate(specs: &[ParamSpec], raw: &Map<String, Value>) -> Result<Args, ParamError> {
        let mut out = Map::new();
        for (key, value) in raw {
            check_names(specs, key)?;
            let spec = specs
                .iter()
                .find(|s| s.name == key || s.aliases.contains(&key.as_str()))
                .expect("checked above");
            if out.contains_key(spec.name) {
                return Err(ParamError::Duplicate(spec.name.to_string()));
            }
            if value.is_null() {
                continue; // an explicit null means "not given"
            }
            out.insert(spec.name.to_string(), normalise(spec, value)?);
        }
        for spec in specs {
            if out.contains_key(spec.name) {
                continue;
            }
            if let Some(default) = spec.default {
                let v = default_value(default);
                if !v.is_null() {
                    out.insert(spec.name.to_string(), normalise(spec, &v)?);
                }
            } else if spec.required {
                return Err(ParamError::Missing(spec.name.to_string()));
            }
        }
        Ok(Args(out))
    }

    /// Build directly from a JSON object (tests).
    pub fn from_json(specs: &[ParamSpec], v: Value) -> Result<Args, ParamError> {
        match v {
            Value::Object(m) => Args::validate(specs, &m),
            other => Err(ParamError::NotAMapping(format!(
                ", got {}",
                type_name(&other)
            ))),
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }
    /// A string parameter that the spec marks required or defaulted.
    pub fn req_str(&self, name: &str) -> &str {
        self.str(name).unwrap_or_default()
    }
    pub fn bool(&self, name: &str) -> bool {
        self.0.get(name).and_then(Value::as_bool).unwrap_or(false)
    }
    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        self.0.get(name).and_then(Value::as_bool)
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }
    pub fn mode(&self, name: &str) -> Option<u32> {
        self.0.get(name).and_then(Value::as_u64).map(|m| m as u32)
    }
    pub fn list(&self, name: &str) -> Vec<String> {
        match self.0.get(name) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
    pub fn map(&self, name: &str) -> Vec<(String, String)> {
        match self.0.get(name) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The arguments as a module's typed request (a `#[derive(Deserialize)]` struct whose fields
    /// are the parameters' names; choices deserialize into enums). Every argument must land in a
    /// field: one that does not means the struct and the parameter table disagree, a bug that
    /// the modules' tests catch (`modules/mod.rs`). Don't `#[serde(flatten)]`: keys a flattened
    /// struct leaves unread go unnoticed.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::module::ModuleError> {
        use crate::module::ModuleError;
        let mut ignored = Vec::new();
        let value = Value::Object(self.0.clone());
        let parsed = serde_ignored::deserialize(value, |path| ignored.push(path.to_string()))
            .map_err(|e| ModuleError::Internal(format!("arguments do not fit the request: {e}")))?;
        if let Some(name) = ignored.first() {
            return Err(ModuleError::Internal(format!(
                "parameter `{name}` has no field in the module's request"
            )));
        }
        Ok(parsed)
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Parse a boolean the way YAML 1.1 users and Ansible expect.
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" | "y" => Some(true),
            "no" | "false" | "off" | "0" | "n" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The words [`parse_bool`] takes, for did-you-mean hints.
pub const BOOL_WORDS: [&str; 6] = ["yes", "no", "true", "false", "on", "off"];

/// How a value that is not a boolean is described: the value, and the closest boolean word when
/// it looks like a typo of one (`yse` → `yes`).
pub fn not_a_bool(v: &Value) -> String {
    let shown = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    // Short words with swapped letters (`yse`) are too short for the similarity measure.
    let anagram = |a: &str, b: &str| {
        let mut a: Vec<char> = a.chars().collect();
        let mut b: Vec<char> = b.chars().collect();
        a.sort_unstable();
        b.sort_unstable();
        a == b
    };
    let hint = match v {
        Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            BOOL_WORDS
                .iter()
                .find(|w| anagram(w, &s))
                .map(|w| w.to_string())
                .or_else(|| did_you_mean(&s, BOOL_WORDS))
        }
        _ => None,
    };
    format!(
        "{shown} is not a boolean (yes/no, true/false){}",
        hint.map(|h| format!(": did you mean `{h}`?"))
            .unwrap_or_default()
    )
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn normalise(spec: &ParamSpec, v: &Value) -> Result<Value, ParamError> {
    let bad = || ParamError::Type {
        name: spec.name.to_string(),
        expected: spec.kind.to_string(),
        got: type_name(v),
    };
    Ok(match spec.kind {
        ParamKind::Str => Value::String(scalar_string(v).ok_or_else(bad)?),
        ParamKind::Scalar => Value::String(scalar_string(v).ok_or_else(bad)?),
        ParamKind::Bool => Value::Bool(parse_bool(v).ok_or_else(|| ParamError::Type {
            name: spec.name.to_string(),
            expected: "a boolean".into(),
            got: not_a_bool(v),
        })?),
        ParamKind::Int => match v {
            Value::Number(n) if n.is_i64() => v.clone(),
            Value::String(s) => Value::from(s.trim().parse::<i64>().map_err(|_| bad())?),
            _ => return Err(bad()),
        },
        ParamKind::Mode => {
            // YAML `0644` arrives as the integer 644 or (YAML 1.1 octal) 420; we read the
            // decimal digits as octal, which is what every user means.
            let digits = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                _ => return Err(bad()),
            };
            let digits = digits.strip_prefix("0o").unwrap_or(&digits);
            if digits.is_empty() || digits.len() > 5 {
                return Err(bad());
            }
            Value::from(u32::from_str_radix(digits, 8).map_err(|_| bad())?)
        }
        ParamKind::Choice(choices) => {
            let s = scalar_string(v).ok_or_else(bad)?;
            if !choices.contains(&s.as_str()) {
                return Err(ParamError::Type {
                    name: spec.name.to_string(),
                    expected: format!("one of {}", choices.join("|")),
                    got: match did_you_mean(&s, choices.iter().copied()) {
                        Some(c) => format!("{s:?} (did you mean `{c}`?)"),
                        None => format!("{s:?}"),
                    },
                });
            }
            Value::String(s)
        }
        ParamKind::List => match v {
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| scalar_string(x).map(Value::String).ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
            ),
            // Whitespace only: commas belong to values (`vfio-pci.ids=10de:1b80,10de:10f0`).
            Value::String(s) => Value::Array(
                s.split_whitespace()
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(|x| Value::String(x.to_string()))
                    .collect(),
            ),
            Value::Number(_) | Value::Bool(_) => {
                Value::Array(vec![Value::String(scalar_string(v).unwrap())])
            }
            _ => return Err(bad()),
        },
        ParamKind::Data => v.clone(),
        ParamKind::Map => match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), Value::String(scalar_string(x).ok_or_else(bad)?))))
                    .collect::<Result<_, ParamError>>()?,
            ),
            _ => return Err(bad()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPECS: &[ParamSpec] = &[
        ParamSpec::required("path", ParamKind::Str, "file").aliases(&["dest", "name"]),
        ParamSpec::optional("mode", ParamKind::Mode, "mode"),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "",
        ),
        ParamSpec::with_default("backup", ParamKind::Bool, "false", ""),
        ParamSpec::optional("items", ParamKind::List, ""),
    ];

    #[test]
    fn normalises_and_applies_defaults() {
        let a = Args::from_json(
            SPECS,
            json!({"dest": "/x", "mode": "0644", "backup": "yes"}),
        )
        .unwrap();
        assert_eq!(a.str("path"), Some("/x"));
        assert_eq!(a.mode("mode"), Some(0o644));
        assert_eq!(a.str("state"), Some("present"));
        assert!(a.bool("backup"));
    }

    #[test]
    fn odd_booleans_are_refused_with_a_hint() {
        let e = Args::from_json(SPECS, json!({"path": "/x", "backup": "yse"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`backup`") && e.contains("did you mean `yes`?"),
            "{e}"
        );
        assert_eq!(
            not_a_bool(&json!("maybe")),
            "\"maybe\" is not a boolean (yes/no, true/false)"
        );
        assert!(not_a_bool(&json!("flase")).contains("did you mean `false`?"));
        assert!(not_a_bool(&json!(2)).starts_with("2 is not"));
    }

    #[test]
    fn yaml_integer_mode_is_read_as_octal_digits() {
        let a = Args::from_json(SPECS, json!({"path": "/x", "mode": 644})).unwrap();
        assert_eq!(a.mode("mode"), Some(0o644));
        assert!(Args::from_json(SPECS, json!({"path": "/x", "mode": "0699"})).is_err());
    }

    #[test]
    fn unknown_parameter_suggests_close_name() {
        let e = Args::from_json(SPECS, json!({"path": "/x", "stat": "present"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown parameter `stat` (did you mean `state`?)"
        );
    }

    #[test]
    fn missing_required_and_bad_choice() {
        assert_eq!(
            Args::from_json(SPECS, json!({})).unwrap_err(),
            ParamError::Missing("path".into())
        );
        let e = Args::from_json(SPECS, json!({"path": "/x", "state": "presnt"})).unwrap_err();
        assert!(e.to_string().contains("did you mean `present`"), "{e}");
    }

    #[test]
    fn alias_twice_is_an_error() {
        let e = Args::from_json(SPECS, json!({"path": "/x", "dest": "/y"})).unwrap_err();
        assert_eq!(e, ParamError::Duplicate("path".into()));
    }

    #[test]
    fn parse_fills_a_typed_request_and_rejects_unread_parameters() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum State {
            Present,
            Absent,
        }
        #[derive(serde::Deserialize, Debug)]
        struct Full {
            path: String,
            state: State,
            backup: bool,
            mode: Option<u32>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)] // only deserialised: the point is the parameter it leaves unread
        struct Partial {
            path: String,
            mode: Option<u32>,
        }
        let a = Args::from_json(
            SPECS,
            json!({"dest": "/x", "mode": "0640", "state": "absent"}),
        )
        .unwrap();
        let r: Full = a.parse().unwrap();
        assert_eq!(
            (r.path.as_str(), r.state, r.backup),
            ("/x", State::Absent, false)
        );
        assert_eq!(r.mode, Some(0o640));
        let e = a.parse::<Partial>().unwrap_err();
        assert!(
            matches!(e, crate::module::ModuleError::Internal(ref m) if m.contains("`state`")),
            "{e:?}"
        );
    }

    #[test]
    fn structured_values_pass_through_as_written() {
        const S: &[ParamSpec] = &[ParamSpec::optional("routes", ParamKind::Data, "")];
        let v = json!([{"to": "default", "via": "10.0.0.1", "metric": 100}]);
        let a = Args::from_json(S, json!({ "routes": v.clone() })).unwrap();
        assert_eq!(a.as_json()["routes"], v);
        assert_eq!(ParamKind::Data.to_string(), "structured");
    }

    #[test]
    fn list_splits_strings_on_whitespace_only() {
        let a = Args::from_json(SPECS, json!({"path": "/x", "items": "a b\n c=1,2"})).unwrap();
        assert_eq!(a.list("items"), vec!["a", "b", "c=1,2"]);
    }
}
