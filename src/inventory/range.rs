//! Host names in inventories: `host:port`, `[v6::addr]:port`, and ranges such as
//! `www[001:006].example.com`, `db[1:6:2]` or `node-[a:c]`, expanded exactly as Ansible does.

use regex::Regex;
use std::sync::LazyLock;

const NUMERIC_RANGE: &str = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]";
const HEX_RANGE: &str = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]";
const ALNUM_RANGE: &str = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]";

static BRACKETED_HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[(.+)\]:([0-9]+)$").expect("regex"));
static HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$").expect("regex"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    let c = format!(r"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{NUMERIC_RANGE})");
    Regex::new(&format!(r"(?i)^(?:{c}\.){{3}}{c}$")).expect("regex")
});
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    let c = format!(r"(?:[0-9a-f]{{1,4}}|{HEX_RANGE})");
    let alts = [
        format!(r"(?:{c}:){{7}}{c}"),
        format!(r"(?:{c}:){{1,6}}:"),
        format!(r"(?:{c}:)(?::{c}){{1,6}}"),
        format!(r"(?:{c}:){{2}}(?::{c}){{1,5}}"),
        format!(r"(?:{c}:){{3}}(?::{c}){{1,4}}"),
        format!(r"(?:{c}:){{4}}(?::{c}){{1,3}}"),
        format!(r"(?:{c}:){{5}}(?::{c}){{1,2}}"),
        format!(r"(?:{c}:){{6}}(?::{c})"),
        format!(r":(?::{c}){{1,6}}"),
        format!(r"{c}?::"),
        format!(r"(?:0:){{6}}(?:{c}\.){{3}}{c}"),
        format!(r"::(?:ffff:)?(?:{c}\.){{3}}{c}"),
        format!(r"(?:0:){{5}}ffff:(?:{c}\.){{3}}{c}"),
    ];
    Regex::new(&format!("(?i)^(?:{})$", alts.join("|"))).expect("regex")
});
/// One label of a host name: starts with a word character or a range, then word characters,
/// `-` or ranges. (That it must not end in `_` or `-` is checked separately: no look-behind.)
static LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)^(?:\w|{ALNUM_RANGE})(?:[\w-]|{ALNUM_RANGE})*$"
    ))
    .expect("regex")
});

fn is_hostname(s: &str) -> bool {
    // Ranges never contain dots, so labels can be split on them.
    !s.is_empty()
        && s.split('.')
            .all(|l| LABEL.is_match(l) && !l.ends_with(['_', '-']))
}

/// Split `host:port` (or `[host]:port`) when what remains is a valid host name or address.
fn parse_address(address: &str) -> Option<(String, Option<u64>)> {
    let mut addr = address.to_string();
    let mut port = None;
    for re in [&*BRACKETED_HOSTPORT, &*HOSTPORT] {
        if let Some(c) = re.captures(&addr.clone()) {
            addr = c[1].to_string();
            port = Some(c[2].parse::<u64>().ok()?);
        }
    }
    (IPV4.is_match(&addr) || IPV6.is_match(&addr) || is_hostname(&addr)).then_some((addr, port))
}

/// A host key of an inventory: the host names it stands for and the port it carries, if any.
/// Anything that is not a recognisable address is taken literally (as Ansible does).
pub fn expand_hostpattern(pattern: &str) -> Result<(Vec<String>, Option<u64>), String> {
    let (name, port) = parse_address(pattern).unwrap_or_else(|| (pattern.to_string(), None));
    let names = if name.contains('[') {
        expand_range(&name)?
    } else {
        vec![name]
    };
    Ok((names, port))
}

const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Python's `int()` of a range bound: optional sign, digits, single underscores between digits.
fn py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let v: i64 = digits.replace('_', "").parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Expand the first `[begin:end(:step)]` of `line`, then the rest recursively.
pub fn expand_range(line: &str) -> Result<Vec<String>, String> {
    let replaced = line.replacen('[', "|", 1).replacen(']', "|", 1);
    let parts: Vec<&str> = replaced.split('|').collect();
    let [head, nrange, tail] = parts[..] else {
        return Err(format!(
            "host range in `{line}` must be written [begin:end] or [begin:end:step]"
        ));
    };
    let bounds: Vec<&str> = nrange.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(format!(
            "host range `[{nrange}]` must be begin:end or begin:end:step"
        ));
    }
    let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    let step = bounds.get(2).copied().unwrap_or("1");
    if end.is_empty() {
        return Err(format!("host range `[{nrange}]` must specify an end value"));
    }
    let width = (beg.starts_with('0') && beg.len() > 1).then_some(beg.len());
    if let Some(w) = width {
        if w != end.len() {
            return Err(format!(
                "host range `[{nrange}]` must give begin and end with the same number of digits"
            ));
        }
    }
    let bad_step = || format!("host range `[{nrange}]`: step `{step}` is not a whole number");
    let seq: Vec<String> = match (LETTERS.find(beg), LETTERS.find(end), py_int(step)) {
        (Some(b), Some(e), Some(st)) => {
            if b > e {
                return Err(format!("host range `[{nrange}]` must have begin <= end"));
            }
            if st == 0 {
                return Err(format!(
                    "host range `[{nrange}]`: the step must not be zero"
                ));
            }
            if st < 0 {
                return Ok(Vec::new());
            }
            LETTERS[b..=e]
                .chars()
                .step_by(st as usize)
                .map(String::from)
                .collect()
        }
        _ => {
            let b = py_int(beg).ok_or_else(|| {
                format!("host range `[{nrange}]`: `{beg}` is neither a number nor a letter")
            })?;
            let e = py_int(end).ok_or_else(|| {
                format!("host range `[{nrange}]`: `{end}` is neither a number nor a letter")
            })?;
            let st = py_int(step).ok_or_else(bad_step)?;
            if st == 0 {
                return Err(format!(
                    "host range `[{nrange}]`: the step must not be zero"
                ));
            }
            let mut out = Vec::new();
            let mut i = b;
            while (st > 0 && i < e + 1) || (st < 0 && i > e + 1) {
                out.push(match width {
                    Some(w) => zfill(i, w),
                    None => i.to_string(),
                });
                i += st;
            }
            out
        }
    };
    let mut hosts = Vec::new();
    for item in seq {
        let name = format!("{head}{item}{tail}");
        if name.contains('[') {
            hosts.extend(expand_range(&name)?);
        } else {
            hosts.push(name);
        }
    }
    Ok(hosts)
}

/// Python's `str(i).zfill(w)`.
fn zfill(i: i64, w: usize) -> String {
    if i < 0 {
        format!("-{:0>width$}", -i, width = w.saturating_sub(1))
    } else {
        format!("{i:0>w$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &str) -> Vec<String> {
        expand_hostpattern(p).unwrap().0
    }

    #[test]
    fn ranges_as_ansible_expands_them() {
        assert_eq!(ex("www[001:006].example.com").len(), 6);
        assert_eq!(ex("www[001:006].example.com")[0], "www001.example.com");
        assert_eq!(ex("db[1:6:2]"), ["db1", "db3", "db5"]);
        assert_eq!(ex("node-[a:c]"), ["node-a", "node-b", "node-c"]);
        assert_eq!(ex("n[y:B]"), ["ny", "nz", "nA", "nB"]);
        assert_eq!(ex("r[1:2]-c[a:b]"), ["r1-ca", "r1-cb", "r2-ca", "r2-cb"]);
        assert_eq!(ex("h[:2]"), ["h0", "h1", "h2"]);
        assert_eq!(ex("h[08:10]"), ["h08", "h09", "h10"]);
        assert_eq!(ex("h[5:3]"), Vec::<String>::new());
        assert_eq!(ex("plain"), ["plain"]);
    }

    #[test]
    fn ports() {
        assert_eq!(
            expand_hostpattern("h1:2222").unwrap(),
            (vec!["h1".into()], Some(2222))
        );
        assert_eq!(
            expand_hostpattern("[2001:db8::1]:22").unwrap(),
            (vec!["2001:db8::1".into()], Some(22))
        );
        assert_eq!(
            expand_hostpattern("2001:db8::1").unwrap(),
            (vec!["2001:db8::1".into()], None)
        );
        assert_eq!(expand_hostpattern("10.0.0.[1:2]:22").unwrap().1, Some(22));
        assert_eq!(
            expand_hostpattern("db[1:2]:22").unwrap(),
            (vec!["db1".into(), "db2".into()], Some(22))
        );
    }

    #[test]
    fn malformed_ranges() {
        for (p, want) in [
            ("h[1:]", "end value"),
            ("h[1]", "begin:end"),
            ("h[01:100]", "same number of digits"),
            ("h[c:a]", "begin <= end"),
            ("h[1:x]", "neither a number"),
            ("h[1:3:0]", "not be zero"),
        ] {
            let e = expand_hostpattern(p).unwrap_err();
            assert!(e.contains(want), "{p}: {e}");
        }
    }
}
