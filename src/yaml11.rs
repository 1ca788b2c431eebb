//! YAML read the way Ansible reads inventories and variable files: YAML 1.1 typing of plain
//! scalars (`yes`/`no`/`on`/`off` are booleans, `0755` is octal, `1_000` and `1:30` are numbers,
//! `1e5` is a string), merge keys (`<<`), anchors, and Ansible's `!unsafe` tag.
//!
//! serde_yaml implements YAML 1.2, where `become: yes` is the string "yes"; read with it, an
//! inventory written for Ansible would mean something else. Every node keeps its position so
//! that errors can point at the line.

use serde_json::{Map, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the text, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Yaml,
    pub mark: Mark,
}

/// A YAML error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub mark: Mark,
    pub msg: String,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.mark.line, self.mark.col, self.msg)
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Yaml::Null)
    }

    /// The key as Python would print it: how a non-string mapping key becomes a JSON key.
    pub fn key_text(&self) -> Option<String> {
        Some(match &self.value {
            Yaml::Str(s) => s.clone(),
            Yaml::Int(i) => i.to_string(),
            Yaml::Float(f) => python_float(*f),
            Yaml::Bool(b) => if *b { "True" } else { "False" }.into(),
            Yaml::Null => "None".into(),
            _ => return None,
        })
    }

    /// The value as JSON, as `json.dumps` of what PyYAML built (keys as JSON writes them).
    pub fn to_json(&self) -> Value {
        match &self.value {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Int(i) => Value::from(*i),
            Yaml::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(python_float(*f))),
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Yaml::Map(pairs) => {
                let mut m = Map::new();
                for (k, v) in pairs {
                    m.insert(json_key(k), v.to_json());
                }
                Value::Object(m)
            }
        }
    }
}

/// How `json.dumps` writes a dictionary key.
fn json_key(k: &Node) -> String {
    match &k.value {
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => "null".into(),
        _ => k
            .key_text()
            .unwrap_or_else(|| serde_json::to_string(&k.to_json()).unwrap_or_default()),
    }
}

fn python_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

/// Parse the first document of `text`. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, false).map_err(|e| YamlError {
        mark: mark(e.marker()),
        msg: e.info().to_string(),
    })?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.root.unwrap_or(Node {
        value: Yaml::Null,
        mark: Mark { line: 1, col: 1 },
    }))
}

fn mark(m: &Marker) -> Mark {
    Mark {
        line: m.line(),
        col: m.col() + 1,
    }
}

enum Open {
    Seq(Vec<Node>, usize, Mark, bool),
    /// Pairs (with whether the key is a merge key `<<`), a key waiting for its value, anchor,
    /// mark, unsafe.
    Map(
        Vec<(Node, Node, bool)>,
        Option<(Node, bool)>,
        usize,
        Mark,
        bool,
    ),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    done: bool,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, at: Mark, msg: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { mark: at, msg });
        }
    }

    fn push(&mut self, node: Node, anchor: usize) {
        self.push_key(node, anchor, false)
    }

    fn push_key(&mut self, node: Node, anchor: usize, merge: bool) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open::Seq(items, ..)) => items.push(node),
            Some(Open::Map(pairs, key, ..)) => match key.take() {
                None => *key = Some((node, merge)),
                Some((k, m)) => pairs.push((k, node, m)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, m: Marker) {
        if self.done || self.error.is_some() {
            return;
        }
        let at = mark(&m);
        match ev {
            Event::DocumentEnd if self.stack.is_empty() && self.root.is_some() => {
                self.done = true;
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(n) => self.push(Node { mark: at, ..n }, 0),
                None => self.fail(at, "alias to an unknown anchor".into()),
            },
            Event::Scalar(text, style, anchor, tag) => {
                let unsafe_ = self.in_unsafe();
                let merge = text == "<<" && style == TScalarStyle::Plain && tag.is_none();
                match scalar(&text, style, tag.as_ref(), unsafe_) {
                    Ok(value) => self.push_key(Node { value, mark: at }, anchor, merge),
                    Err(msg) => self.fail(at, msg),
                }
            }
            Event::SequenceStart(anchor, tag) => {
                let unsafe_ = self.in_unsafe() || is_unsafe(tag.as_ref());
                if let Err(msg) = collection_tag(tag.as_ref(), "seq") {
                    return self.fail(at, msg);
                }
                self.stack.push(Open::Seq(Vec::new(), anchor, at, unsafe_));
            }
            Event::MappingStart(anchor, tag) => {
                let unsafe_ = self.in_unsafe() || is_unsafe(tag.as_ref());
                if let Err(msg) = collection_tag(tag.as_ref(), "map") {
                    return self.fail(at, msg);
                }
                self.stack
                    .push(Open::Map(Vec::new(), None, anchor, at, unsafe_));
            }
            Event::SequenceEnd => {
                if let Some(Open::Seq(items, anchor, start, _)) = self.stack.pop() {
                    self.push(
                        Node {
                            value: Yaml::Seq(items),
                            mark: start,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Open::Map(pairs, _, anchor, start, _)) = self.stack.pop() {
                    match merge_keys(pairs) {
                        Ok(pairs) => self.push(
                            Node {
                                value: Yaml::Map(pairs),
                                mark: start,
                            },
                            anchor,
                        ),
                        Err((at, msg)) => self.fail(at, msg),
                    }
                }
            }
            _ => {}
        }
    }
}

impl Builder {
    fn in_unsafe(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Open::Seq(.., true)) | Some(Open::Map(.., true))
        )
    }
}

fn is_unsafe(tag: Option<&Tag>) -> bool {
    tag.is_some_and(|t| t.handle == "!" && t.suffix == "unsafe")
}

fn tag_name(t: &Tag) -> String {
    if t.handle == "tag:yaml.org,2002:" || t.handle == "!!" {
        format!("!!{}", t.suffix)
    } else {
        format!("{}{}", t.handle, t.suffix)
    }
}

fn collection_tag(tag: Option<&Tag>, kind: &str) -> Result<(), String> {
    match tag.map(tag_name).as_deref() {
        None | Some("!unsafe") => Ok(()),
        Some("!!seq") if kind == "seq" => Ok(()),
        Some("!!map") | Some("!!omap") if kind == "map" => Ok(()),
        Some(other) => Err(format!("unsupported tag `{other}` on a collection")),
    }
}

/// Apply `<<` merge keys as PyYAML does: merged pairs come first and the mapping's own keys win;
/// of several merged mappings the earlier one wins. Then later duplicate keys replace earlier
/// ones in place.
fn merge_keys(pairs: Vec<(Node, Node, bool)>) -> Result<Vec<(Node, Node)>, (Mark, String)> {
    let mut merged: Vec<(Node, Node)> = Vec::new();
    let mut own = Vec::new();
    for (k, v, merge) in pairs {
        if !merge {
            own.push((k, v));
            continue;
        }
        let sources: Vec<Node> = match v.value {
            Yaml::Map(_) => vec![v],
            Yaml::Seq(items) => items,
            _ => {
                return Err((
                    v.mark,
                    "a merge key `<<` needs a mapping or a list of mappings".into(),
                ))
            }
        };
        for s in sources.into_iter().rev() {
            match s.value {
                Yaml::Map(p) => merged.extend(p),
                _ => return Err((s.mark, "a merge key `<<` needs mappings".into())),
            }
        }
    }
    merged.extend(own);
    Ok(dedup(merged))
}

fn dedup(pairs: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let mut out: Vec<(Node, Node)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match out.iter_mut().find(|(ok, _)| ok.value == k.value) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

fn scalar(
    text: &str,
    style: TScalarStyle,
    tag: Option<&Tag>,
    unsafe_: bool,
) -> Result<Yaml, String> {
    if unsafe_ || is_unsafe(tag) {
        if text.contains("{{") || text.contains("{%") {
            return Err(
                "`!unsafe` marks text that must never be rendered as a template, but kvmforge \
                        renders `{{ }}` in variables; this value would not stay as written"
                    .into(),
            );
        }
        return Ok(Yaml::Str(text.to_string()));
    }
    if let Some(t) = tag {
        let name = tag_name(t);
        return match name.as_str() {
            "!!str" => Ok(Yaml::Str(text.into())),
            "!!int" => int(text).map(Yaml::Int).ok_or_else(|| format!("`{text}` is not an integer")),
            "!!float" => float(text)
                .or_else(|| int(text).map(|i| i as f64))
                .map(Yaml::Float)
                .ok_or_else(|| format!("`{text}` is not a number")),
            "!!bool" => boolean(text).map(Yaml::Bool).ok_or_else(|| format!("`{text}` is not a boolean")),
            "!!null" => Ok(Yaml::Null),
            "!vault" => Err("this value is encrypted with Ansible Vault, which kvmforge cannot decrypt; \
                             put the secret in a file read with --become-password-file or an environment variable"
                .into()),
            other => Err(format!("unknown tag `{other}`")),
        };
    }
    if style != TScalarStyle::Plain {
        return Ok(Yaml::Str(text.into()));
    }
    Ok(resolve_plain(text))
}

/// PyYAML's implicit resolvers (YAML 1.1) for a plain scalar.
pub fn resolve_plain(text: &str) -> Yaml {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Yaml::Null;
    }
    if let Some(b) = boolean(text) {
        return Yaml::Bool(b);
    }
    if let Some(i) = int(text) {
        return Yaml::Int(i);
    }
    if let Some(f) = float(text) {
        return Yaml::Float(f);
    }
    Yaml::Str(text.into())
}

fn boolean(t: &str) -> Option<bool> {
    match t {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn sign(t: &str) -> (i64, &str) {
    match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    }
}

/// `[-+]?0b[0-1_]+ | [-+]?0[0-7_]+ | [-+]?(0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+ |
/// [-+]?[1-9][0-9_]*(:[0-5]?[0-9])+`
fn int(t: &str) -> Option<i64> {
    let (s, body) = sign(t);
    let digits =
        |d: &str, ok: fn(char) -> bool| !d.is_empty() && d.chars().all(|c| c == '_' || ok(c));
    let clean = |d: &str| d.replace('_', "");
    let parse = |d: &str, radix| {
        let c = clean(d);
        if c.is_empty() {
            Some(0)
        } else {
            i64::from_str_radix(&c, radix).ok()
        }
    };
    let v = if let Some(b) = body.strip_prefix("0b") {
        digits(b, |c| c == '0' || c == '1').then(|| parse(b, 2))??
    } else if let Some(x) = body.strip_prefix("0x") {
        digits(x, |c| c.is_ascii_hexdigit()).then(|| parse(x, 16))??
    } else if body == "0" {
        0
    } else if let Some(o) = body.strip_prefix('0') {
        digits(o, |c| ('0'..='7').contains(&c)).then(|| parse(o, 8))??
    } else if body.starts_with(|c: char| ('1'..='9').contains(&c)) && body.contains(':') {
        sexagesimal(body)?.round() as i64
    } else if body.starts_with(|c: char| ('1'..='9').contains(&c)) {
        digits(body, |c| c.is_ascii_digit()).then(|| parse(body, 10))??
    } else {
        return None;
    };
    Some(s * v)
}

/// `1:30:00` (base 60), each part after the first `[0-5]?[0-9]`.
fn sexagesimal(body: &str) -> Option<f64> {
    let mut parts = body.split(':');
    let first = parts.next()?;
    if first.is_empty() || !first.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    let mut v: f64 = first.replace('_', "").parse().ok()?;
    for p in parts {
        let ok = (1..=2).contains(&p.len())
            && p.chars().all(|c| c.is_ascii_digit())
            && (p.len() == 1 || p.as_bytes()[0] <= b'5');
        if !ok {
            return None;
        }
        v = v * 60.0 + p.parse::<f64>().ok()?;
    }
    Some(v)
}

/// `[-+]?([0-9][0-9_]*)\.[0-9_]*([eE][-+][0-9]+)? | \.[0-9_]+([eE][-+][0-9]+)? |
/// [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]* | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)`
fn float(t: &str) -> Option<f64> {
    if matches!(t, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    let (s, body) = sign(t);
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(s as f64 * f64::INFINITY);
    }
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if let Some(e) = exp {
        let ok = e.len() > 1
            && (e.starts_with('+') || e.starts_with('-'))
            && e[1..].chars().all(|c| c.is_ascii_digit());
        if !ok {
            return None;
        }
    }
    let dot = mantissa.find('.')?;
    let (int_part, frac) = (&mantissa[..dot], &mantissa[dot + 1..]);
    if !frac.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    if int_part.contains(':') {
        if exp.is_some() {
            return None;
        }
        let whole = sexagesimal(int_part)?;
        let f: f64 = format!("0.{}", frac.replace('_', ""))
            .parse()
            .unwrap_or(0.0);
        return Some(s as f64 * (whole + f));
    }
    if int_part.is_empty() {
        // `.5` is a float, but not `-.5` (the sign is only allowed with a leading digit).
        if t.starts_with(['-', '+'])
            || frac.replace('_', "").is_empty()
            || !frac.starts_with(|c: char| c.is_ascii_digit() || c == '_')
        {
            return None;
        }
    } else if !int_part.starts_with(|c: char| c.is_ascii_digit())
        || !int_part.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    let text = format!(
        "{}.{}{}",
        if int_part.is_empty() {
            "0".to_string()
        } else {
            int_part.replace('_', "")
        },
        {
            let f = frac.replace('_', "");
            if f.is_empty() {
                "0".to_string()
            } else {
                f
            }
        },
        exp.map(|e| format!("e{e}")).unwrap_or_default()
    );
    text.parse::<f64>().ok().map(|f| s as f64 * f)
}

/// A YAML mapping node as JSON variables, keyed the way Ansible keys them.
pub fn to_vars(node: &Node) -> Option<Map<String, Value>> {
    match node.to_json() {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(text: &str) -> Value {
        parse(text).unwrap().to_json()
    }

    #[test]
    fn yaml_1_1_plain_scalars() {
        assert_eq!(
            j("a: yes\nb: No\nc: on\nd: 'yes'\ne: true\nf: y\n"),
            json!({"a": true, "b": false, "c": true, "d": "yes", "e": true, "f": "y"})
        );
        assert_eq!(
            j("a: 0755\nb: 0x1F\nc: 1_000\nd: 1:30\ne: 09\nf: 0b101\ng: -12\nh: '0755'\n"),
            json!({"a": 493, "b": 31, "c": 1000, "d": 90, "e": "09", "f": 5, "g": -12, "h": "0755"})
        );
        assert_eq!(
            j("a: 1.5\nb: 1e5\nc: 1.0e+5\nd: .5\ne: .inf\nf: 1.\ng: 1:30.5\n"),
            json!({"a": 1.5, "b": "1e5", "c": 100000.0, "d": 0.5, "e": "Infinity", "f": 1.0, "g": 90.5})
        );
        assert_eq!(
            j("a:\nb: ~\nc: null\nd: ''\n"),
            json!({"a": null, "b": null, "c": null, "d": ""})
        );
    }

    #[test]
    fn merge_keys_anchors_and_unsafe() {
        let v = j("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n");
        assert_eq!(v["other"], json!({"x": 1, "y": 3}));
        let v = j("a: &a {x: 1}\nb: &b {x: 2, z: 2}\nc:\n  <<: [*a, *b]\n");
        assert_eq!(v["c"], json!({"x": 1, "z": 2}));
        assert_eq!(
            j("a: !unsafe '100%'\nb: !unsafe yes\n"),
            json!({"a": "100%", "b": "yes"})
        );
        let e = parse("a: !unsafe '{{ x }}'\n").unwrap_err();
        assert!(e.msg.contains("must never be rendered"), "{e}");
        assert_eq!(
            j("a: !!str 10\nb: !!int '10'\n"),
            json!({"a": "10", "b": 10})
        );
        assert_eq!(j("x: 1\nx: 2\ny: 3\n"), json!({"x": 2, "y": 3}));
        assert_eq!(j("1: a\ntrue: b\n"), json!({"1": "a", "true": "b"}));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("a: 1\nb: [\n").unwrap_err();
        assert!(e.mark.line >= 2, "{e}");
        let e = parse("a: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n").unwrap_err();
        assert!(e.msg.contains("Vault"), "{e}");
        let e = parse("a: *nothing\n").unwrap_err();
        assert!(e.to_string().starts_with("1:"), "{e}");
    }

    #[test]
    fn positions_are_one_based() {
        let n = parse("all:\n  hosts:\n    web1:\n").unwrap();
        let Yaml::Map(p) = &n.value else { panic!() };
        assert_eq!(p[0].0.mark, Mark { line: 1, col: 1 });
        let Yaml::Map(p) = &p[0].1.value else {
            panic!()
        };
        assert_eq!(p[0].0.mark, Mark { line: 2, col: 3 });
    }
}
