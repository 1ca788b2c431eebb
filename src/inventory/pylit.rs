//! How Ansible's INI inventories type their values: each `key=value` goes through Python's
//! `ast.literal_eval`, and whatever it does not accept stays a string. So `port=22` is a number,
//! `on=True` a boolean (but `on=true` the string "true"), `x="1"` on a host line the number 1
//! (the shell-style quotes are gone before the value is evaluated), `l=[1, 'a']` a list.
//! Also the shell-style splitting of host lines (`shlex.split(line, comments=True)`).

use serde_json::{Map, Number, Value};

/// `shlex.split(line, comments=True)`: POSIX quoting, `#` starts a comment outside quotes
/// (even in the middle of a word).
pub fn shlex_split(line: &str, comments: bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut tok = String::new();
    let mut in_tok = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_tok {
                    out.push(std::mem::take(&mut tok));
                    in_tok = false;
                }
            }
            '#' if comments => break,
            '\\' => {
                in_tok = true;
                match chars.next() {
                    Some(n) => tok.push(n),
                    None => return Err("no escaped character".into()),
                }
            }
            '\'' => {
                in_tok = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => tok.push(n),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_tok = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some('"') | Some('\\') => tok.push(chars.next().unwrap_or('\\')),
                            Some(_) => tok.push('\\'),
                            None => return Err("no closing quotation".into()),
                        },
                        Some(n) => tok.push(n),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            other => {
                in_tok = true;
                tok.push(other);
            }
        }
    }
    if in_tok {
        out.push(tok);
    }
    Ok(out)
}

/// The value Ansible's INI plugin makes of `text`.
pub fn ini_value(text: &str) -> Value {
    literal_eval(text).unwrap_or_else(|| Value::String(text.to_string()))
}

/// Python's `ast.literal_eval` for what inventories contain: numbers, strings, `True`, `False`,
/// `None`, lists, tuples, sets (as lists) and dicts. `None` when Python would refuse it.
pub fn literal_eval(text: &str) -> Option<Value> {
    let mut p = P {
        s: text.trim_start_matches([' ', '\t']).as_bytes(),
        i: 0,
    };
    let v = p.expr()?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Option<Value> {
        self.ws();
        match self.peek()? {
            b'[' => {
                self.i += 1;
                self.seq(b']').map(Value::Array)
            }
            b'(' => {
                self.i += 1;
                let save = self.i;
                // A parenthesised expression or a tuple.
                if let Some(v) = self.expr() {
                    if self.eat(b')') {
                        return Some(v);
                    }
                }
                self.i = save;
                self.seq(b')').map(Value::Array)
            }
            b'{' => {
                self.i += 1;
                self.dict_or_set()
            }
            b'-' | b'+' => {
                let neg = self.peek() == Some(b'-');
                self.i += 1;
                match self.expr()? {
                    Value::Number(n) if neg => negate(&n),
                    v @ Value::Number(_) => Some(v),
                    _ => None,
                }
            }
            b'"' | b'\'' => self.strings(),
            c if c.is_ascii_digit() || c == b'.' => self.number(),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                match word {
                    "True" => Some(Value::Bool(true)),
                    "False" => Some(Value::Bool(false)),
                    "None" => Some(Value::Null),
                    w if matches!(self.peek(), Some(b'"' | b'\''))
                        && ["r", "u", "R", "U"].contains(&w) =>
                    {
                        self.i = start;
                        self.strings()
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Items up to `close`, separated by commas (a trailing comma allowed).
    fn seq(&mut self, close: u8) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.expr()?);
            if !self.eat(b',') {
                return self.eat(close).then_some(items);
            }
        }
    }

    fn dict_or_set(&mut self) -> Option<Value> {
        if self.eat(b'}') {
            return Some(Value::Object(Map::new()));
        }
        let first = self.expr()?;
        if self.eat(b':') {
            let mut m = Map::new();
            let v = self.expr()?;
            m.insert(key_text(&first)?, v);
            while self.eat(b',') {
                if self.eat(b'}') {
                    return Some(Value::Object(m));
                }
                let k = self.expr()?;
                if !self.eat(b':') {
                    return None;
                }
                let v = self.expr()?;
                m.insert(key_text(&k)?, v);
            }
            return self.eat(b'}').then_some(Value::Object(m));
        }
        // A set: Ansible turns it into a list.
        let mut items = vec![first];
        while self.eat(b',') {
            if self.eat(b'}') {
                return Some(Value::Array(dedup(items)));
            }
            items.push(self.expr()?);
        }
        self.eat(b'}').then(|| Value::Array(dedup(items)))
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Option<Value> {
        let mut out = String::new();
        loop {
            self.ws();
            let start = self.i;
            let mut raw = false;
            while let Some(c @ (b'r' | b'R' | b'u' | b'U')) = self.peek() {
                raw |= c == b'r' || c == b'R';
                self.i += 1;
            }
            match self.peek() {
                Some(q @ (b'"' | b'\'')) => {
                    out.push_str(&self.string(q, raw)?);
                }
                _ => {
                    self.i = start;
                    break;
                }
            }
        }
        Some(Value::String(out))
    }

    fn string(&mut self, q: u8, raw: bool) -> Option<String> {
        let triple = self.s[self.i..].starts_with(&[q, q, q]);
        self.i += if triple { 3 } else { 1 };
        let mut bytes = Vec::new();
        loop {
            let c = self.peek()?;
            if triple && self.s[self.i..].starts_with(&[q, q, q]) {
                self.i += 3;
                break;
            }
            if !triple && c == q {
                self.i += 1;
                break;
            }
            if !triple && c == b'\n' {
                return None;
            }
            self.i += 1;
            if c != b'\\' {
                bytes.push(c);
                continue;
            }
            let e = self.peek()?;
            self.i += 1;
            if raw {
                bytes.extend([b'\\', e]);
                continue;
            }
            let mut push = |ch: char| {
                let mut buf = [0; 4];
                bytes.extend(ch.encode_utf8(&mut buf).as_bytes());
            };
            match e {
                b'\n' => {}
                b'\\' => push('\\'),
                b'\'' => push('\''),
                b'"' => push('"'),
                b'a' => push('\x07'),
                b'b' => push('\x08'),
                b'f' => push('\x0c'),
                b'n' => push('\n'),
                b'r' => push('\r'),
                b't' => push('\t'),
                b'v' => push('\x0b'),
                b'0'..=b'7' => {
                    let mut v = (e - b'0') as u32;
                    for _ in 0..2 {
                        match self.peek() {
                            Some(d @ b'0'..=b'7') => {
                                v = v * 8 + (d - b'0') as u32;
                                self.i += 1;
                            }
                            _ => break,
                        }
                    }
                    push(char::from_u32(v)?);
                }
                b'x' | b'u' | b'U' => {
                    let n = match e {
                        b'x' => 2,
                        b'u' => 4,
                        _ => 8,
                    };
                    let hex = std::str::from_utf8(self.s.get(self.i..self.i + n)?).ok()?;
                    let v = u32::from_str_radix(hex, 16).ok()?;
                    self.i += n;
                    push(char::from_u32(v)?);
                }
                other => {
                    bytes.push(b'\\');
                    bytes.push(other);
                }
            }
        }
        String::from_utf8(bytes).ok()
    }

    /// Python number literals: `12`, `1_000`, `0x1f`, `0o17`, `0b11`, `1.5`, `.5`, `1e3`.
    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
            || (matches!(self.peek(), Some(b'+' | b'-'))
                && matches!(self.s.get(self.i.wrapping_sub(1)), Some(b'e' | b'E'))
                && !self.s[start..self.i].starts_with(b"0x")
                && !self.s[start..self.i].starts_with(b"0X"))
        {
            self.i += 1;
        }
        let t = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if t.contains("__") || t.ends_with('_') {
            return None;
        }
        let lower = t.to_ascii_lowercase();
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
            if let Some(d) = lower.strip_prefix(prefix) {
                let d = d.strip_prefix('_').unwrap_or(d);
                return u64::from_str_radix(&d.replace('_', ""), radix)
                    .ok()
                    .map(|v| Value::Number(v.into()));
            }
        }
        let clean = lower.replace('_', "");
        if clean.contains(['.', 'e']) {
            if clean.ends_with('j') {
                return None;
            }
            return clean
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number);
        }
        // `0123` is a syntax error in Python 3.
        if clean.len() > 1 && clean.starts_with('0') && clean.bytes().any(|b| b != b'0') {
            return None;
        }
        clean.parse::<u64>().ok().map(|v| Value::Number(v.into()))
    }
}

fn negate(n: &Number) -> Option<Value> {
    if let Some(u) = n.as_u64() {
        return i64::try_from(u).ok().map(|i| Value::from(-i));
    }
    if let Some(i) = n.as_i64() {
        return Some(Value::from(-i));
    }
    Number::from_f64(-n.as_f64()?).map(Value::Number)
}

/// How `json.dumps` writes a Python dict key.
fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".into()),
        _ => None,
    }
}

fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_literals() {
        for (text, want) in [
            ("22", json!(22)),
            ("-3", json!(-3)),
            ("1_000", json!(1000)),
            ("0x1F", json!(31)),
            ("1.5", json!(1.5)),
            ("1e3", json!(1000.0)),
            ("True", json!(true)),
            ("None", json!(null)),
            ("'a b'", json!("a b")),
            ("\"x\" 'y'", json!("xy")),
            ("[1, 'a', [2]]", json!([1, "a", [2]])),
            ("(1, 2)", json!([1, 2])),
            ("(1)", json!(1)),
            ("{'k': 1, 2: 'v'}", json!({"k": 1, "2": "v"})),
            ("'\\n\\x41'", json!("\nA")),
            ("r'\\n'", json!("\\n")),
            (" 1", json!(1)),
        ] {
            assert_eq!(literal_eval(text), Some(want), "{text}");
        }
        for text in [
            "true", "yes", "0123", "abc", "1 2", "{k:1}", "", "1j", "'open", "1__0",
        ] {
            assert_eq!(literal_eval(text), None, "{text}");
        }
        assert_eq!(ini_value("true"), json!("true"));
    }

    #[test]
    fn shell_splitting() {
        assert_eq!(
            shlex_split(r#"h a="1 2" b='x y' c=d\ e f=g#comment"#, true).unwrap(),
            ["h", "a=1 2", "b=x y", "c=d e", "f=g"]
        );
        assert_eq!(
            shlex_split(r#"a="q\"q" b="\n""#, true).unwrap(),
            ["a=q\"q", "b=\\n"]
        );
        assert!(shlex_split("a='x", true).is_err());
        assert_eq!(shlex_split("a # b", false).unwrap(), ["a", "#", "b"]);
    }
}
