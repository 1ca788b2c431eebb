//! Inventories in Ansible's YAML format, plus `group_vars/` and `host_vars/` beside the file.
//!
//! Variables resolve lowest to highest: the `all` group, then other groups from parent to child
//! (groups of equal depth by name), then the host's own. For each group and host, variables
//! written inline in the inventory come first and files in `group_vars/`/`host_vars/` override
//! them.

use crate::error::{yaml_error, Error};
use crate::params::did_you_mean;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub parents: BTreeSet<String>,
    pub children: BTreeSet<String>,
    pub hosts: Vec<String>,
    pub vars: Map<String, Value>,
}

impl Group {
    fn new(name: &str) -> Self {
        Group {
            name: name.into(),
            parents: BTreeSet::new(),
            children: BTreeSet::new(),
            hosts: Vec::new(),
            vars: Map::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// The host's merged variables (groups and its own, by precedence).
    pub vars: Map<String, Value>,
    /// Every group the host belongs to, directly or through a child group, `all` included.
    pub groups: BTreeSet<String>,
    /// The variables written for this host itself (inventory, then host_vars/).
    own_vars: Map<String, Value>,
}

/// How to reach a host, from its variables (short names or Ansible's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSpec {
    pub kind: ConnectionKind,
    pub address: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<String>,
    /// ProxyJump chain, `user@host:port[,user@host:port...]`.
    pub jump: Option<String>,
    pub become_: Option<bool>,
    /// `accept-new` (default), `strict` or `off`.
    pub host_key_checking: Option<String>,
    /// A known_hosts file to use instead of the user's.
    pub known_hosts: Option<String>,
    /// An ssh client config file to use instead of `~/.ssh/config` (`ssh -F`).
    pub ssh_config: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Ssh,
    Local,
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    /// Hosts in the order they first appear.
    pub hosts: Vec<Host>,
    pub groups: BTreeMap<String, Group>,
}

fn var<'a>(vars: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .rev()
        .find_map(|n| vars.get(*n))
        .filter(|v| !v.is_null())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Host {
    /// Connection settings. Ansible's `ansible_*` names win over the short ones when both are set.
    pub fn connection(&self) -> Result<ConnectionSpec, Error> {
        let v = &self.vars;
        let s = |names: &[&str]| var(v, names).and_then(scalar);
        let kind = match s(&["connection", "ansible_connection"]).as_deref() {
            None if self.name == "localhost" => ConnectionKind::Local,
            None | Some("ssh") | Some("smart") => ConnectionKind::Ssh,
            Some("local") => ConnectionKind::Local,
            Some(other) => {
                return Err(Error::Inventory(format!(
                    "host {}: unknown connection `{other}` (expected ssh or local)",
                    self.name
                )))
            }
        };
        let port = match s(&["port", "ansible_port"]) {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| {
                Error::Inventory(format!(
                    "host {}: port `{p}` is not a port number",
                    self.name
                ))
            })?),
        };
        let become_ = match var(v, &["become", "ansible_become"]) {
            None => None,
            Some(b) => Some(crate::params::parse_bool(b).ok_or_else(|| {
                Error::Inventory(format!("host {}: become must be a boolean", self.name))
            })?),
        };
        let jump = match var(v, &["jump", "ansible_ssh_jump"]) {
            None => None,
            Some(Value::Array(a)) => {
                Some(a.iter().filter_map(scalar).collect::<Vec<_>>().join(","))
            }
            Some(other) => scalar(other),
        };
        Ok(ConnectionSpec {
            kind,
            address: s(&["host", "ansible_host"]).unwrap_or_else(|| self.name.clone()),
            user: s(&["user", "ansible_user"]),
            port,
            key: s(&["key", "ansible_ssh_private_key_file"]),
            jump,
            become_,
            host_key_checking: s(&["host_key_checking"]),
            known_hosts: s(&["known_hosts", "ansible_ssh_known_hosts_file"]),
            ssh_config: s(&["ssh_config"]),
        })
    }
}

/// Raw YAML shape of a group: hosts, vars, children.
fn parse_group(
    name: &str,
    node: &serde_yaml::Value,
    groups: &mut BTreeMap<String, Group>,
    host_vars: &mut BTreeMap<String, Map<String, Value>>,
    host_order: &mut Vec<String>,
    stack: &mut Vec<String>,
) -> Result<(), Error> {
    if stack.iter().any(|g| g == name) {
        return Err(Error::Inventory(format!(
            "group `{name}` is its own descendant ({} -> {name})",
            stack.join(" -> ")
        )));
    }
    groups
        .entry(name.to_string())
        .or_insert_with(|| Group::new(name));
    let map = match node {
        serde_yaml::Value::Null => return Ok(()),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(Error::Inventory(format!(
                "group `{name}` must be a mapping with hosts, vars or children"
            )))
        }
    };
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        match key {
            "hosts" => {
                let hosts = match v {
                    serde_yaml::Value::Null => continue,
                    serde_yaml::Value::Mapping(m) => m,
                    _ => {
                        return Err(Error::Inventory(format!(
                            "group `{name}`: hosts must be a mapping of host names"
                        )))
                    }
                };
                for (h, hv) in hosts {
                    let hname = scalar_yaml(h).ok_or_else(|| {
                        Error::Inventory(format!("group `{name}`: bad host name"))
                    })?;
                    if !host_order.contains(&hname) {
                        host_order.push(hname.clone());
                    }
                    let entry = host_vars.entry(hname.clone()).or_default();
                    if let Some(m) = yaml_to_map(hv, &format!("host `{hname}`"))? {
                        entry.extend(m);
                    }
                    let g = groups.get_mut(name).expect("inserted");
                    if !g.hosts.contains(&hname) {
                        g.hosts.push(hname);
                    }
                }
            }
            "vars" => {
                if let Some(m) = yaml_to_map(v, &format!("group `{name}` vars"))? {
                    groups.get_mut(name).expect("inserted").vars.extend(m);
                }
            }
            "children" => {
                let children = match v {
                    serde_yaml::Value::Null => continue,
                    serde_yaml::Value::Mapping(m) => m,
                    _ => {
                        return Err(Error::Inventory(format!(
                            "group `{name}`: children must be a mapping of groups"
                        )))
                    }
                };
                for (c, cv) in children {
                    let cname = scalar_yaml(c).ok_or_else(|| {
                        Error::Inventory(format!("group `{name}`: bad child name"))
                    })?;
                    stack.push(name.to_string());
                    parse_group(&cname, cv, groups, host_vars, host_order, stack)?;
                    stack.pop();
                    groups
                        .get_mut(name)
                        .expect("inserted")
                        .children
                        .insert(cname.clone());
                    groups
                        .get_mut(&cname)
                        .expect("inserted")
                        .parents
                        .insert(name.to_string());
                }
            }
            other => {
                let hint = did_you_mean(other, ["hosts", "vars", "children"])
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| " (expected hosts, vars or children)".into());
                return Err(Error::Inventory(format!(
                    "group `{name}`: unknown key `{other}`{hint}"
                )));
            }
        }
    }
    Ok(())
}

fn scalar_yaml(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// YAML mapping → JSON map; `None` for null.
pub fn yaml_to_map(v: &serde_yaml::Value, what: &str) -> Result<Option<Map<String, Value>>, Error> {
    match v {
        serde_yaml::Value::Null => Ok(None),
        serde_yaml::Value::Mapping(_) => match yaml_to_json(v)? {
            Value::Object(m) => Ok(Some(m)),
            _ => unreachable!(),
        },
        _ => Err(Error::Inventory(format!("{what} must be a mapping"))),
    }
}

/// Convert YAML to JSON (keys become strings).
pub fn yaml_to_json(v: &serde_yaml::Value) -> Result<Value, Error> {
    Ok(match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_yaml::Value::String(s) => Value::String(s.clone()),
        serde_yaml::Value::Sequence(s) => {
            Value::Array(s.iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        serde_yaml::Value::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s.clone(),
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    _ => return Err(Error::Inventory("mapping keys must be scalars".into())),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => yaml_to_json(&t.value)?,
    })
}

/// Read a YAML file of variables (a mapping).
pub fn load_vars_file(path: &Path) -> Result<Map<String, Value>, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e.to_string()))?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| yaml_error(path, &e))?;
    Ok(yaml_to_map(&v, &path.display().to_string())?.unwrap_or_default())
}

/// Variables for `name` from `DIR/NAME.yml`, `DIR/NAME.yaml`, `DIR/NAME` or every YAML file in
/// the directory `DIR/NAME/` (sorted).
fn vars_from_dir(dir: &Path, name: &str) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for candidate in [
        format!("{name}.yml"),
        format!("{name}.yaml"),
        name.to_string(),
    ] {
        let p = dir.join(&candidate);
        if p.is_file() {
            out.extend(load_vars_file(&p)?);
        } else if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| Error::Io(p.clone(), e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                .collect();
            files.sort();
            for f in files {
                out.extend(load_vars_file(&f)?);
            }
        }
    }
    Ok(out)
}

impl Inventory {
    /// Load an inventory file and the `group_vars/`, `host_vars/` folders beside it.
    pub fn load(path: &Path) -> Result<Inventory, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(path.to_path_buf(), e.to_string()))?;
        let mut inv = Inventory::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let (gdir, hdir) = (base.join("group_vars"), base.join("host_vars"));
        if gdir.is_dir() {
            for g in inv.groups.values_mut() {
                g.vars.extend(vars_from_dir(&gdir, &g.name)?);
            }
        }
        let mut file_host_vars = BTreeMap::new();
        if hdir.is_dir() {
            for h in &inv.hosts {
                file_host_vars.insert(h.name.clone(), vars_from_dir(&hdir, &h.name)?);
            }
        }
        inv.resolve(&file_host_vars);
        Ok(inv)
    }

    /// Parse inventory text (without side folders).
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, Error> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
        let mut groups = BTreeMap::new();
        let mut host_vars: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut order = Vec::new();
        match &doc {
            serde_yaml::Value::Null => {}
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    let name = scalar_yaml(k).ok_or_else(|| {
                        Error::Inventory("top-level keys must be group names".into())
                    })?;
                    parse_group(
                        &name,
                        v,
                        &mut groups,
                        &mut host_vars,
                        &mut order,
                        &mut Vec::new(),
                    )?;
                }
            }
            _ => {
                return Err(Error::Inventory(format!(
                    "{}: an inventory is a mapping of groups (usually `all:`)",
                    path.display()
                )))
            }
        }
        groups
            .entry("all".into())
            .or_insert_with(|| Group::new("all"));
        groups
            .entry("ungrouped".into())
            .or_insert_with(|| Group::new("ungrouped"));
        // Every top-level group other than all is a child of all.
        let names: Vec<String> = groups.keys().cloned().collect();
        for n in &names {
            if n != "all" && groups[n].parents.is_empty() {
                groups.get_mut(n).unwrap().parents.insert("all".into());
                groups.get_mut("all").unwrap().children.insert(n.clone());
            }
        }
        let mut inv = Inventory {
            path: path.to_path_buf(),
            hosts: order
                .iter()
                .map(|n| Host {
                    name: n.clone(),
                    vars: Map::new(),
                    groups: BTreeSet::new(),
                    own_vars: host_vars.remove(n).unwrap_or_default(),
                })
                .collect(),
            groups,
        };
        // Hosts only listed under `all` are `ungrouped`.
        for h in inv.hosts.clone() {
            let direct: Vec<&Group> = inv
                .groups
                .values()
                .filter(|g| g.hosts.contains(&h.name))
                .collect();
            if direct.iter().all(|g| g.name == "all") {
                inv.groups
                    .get_mut("ungrouped")
                    .unwrap()
                    .hosts
                    .push(h.name.clone());
            }
        }
        inv.resolve(&BTreeMap::new());
        Ok(inv)
    }

    fn depth(&self, group: &str) -> usize {
        let g = &self.groups[group];
        g.parents
            .iter()
            .map(|p| self.depth(p) + 1)
            .max()
            .unwrap_or(0)
    }

    fn ancestors(&self, group: &str, out: &mut BTreeSet<String>) {
        if out.insert(group.to_string()) {
            for p in &self.groups[group].parents {
                self.ancestors(p, out);
            }
        }
    }

    /// Compute each host's groups and merged variables; `files` (from host_vars/) override the
    /// host's inline variables.
    fn resolve(&mut self, files: &BTreeMap<String, Map<String, Value>>) {
        let snapshot = self.clone();
        for h in &mut self.hosts {
            let mut groups = BTreeSet::new();
            groups.insert("all".to_string());
            for g in snapshot
                .groups
                .values()
                .filter(|g| g.hosts.contains(&h.name))
            {
                snapshot.ancestors(&g.name, &mut groups);
            }
            let mut ordered: Vec<&String> = groups.iter().collect();
            ordered.sort_by_key(|g| (snapshot.depth(g), (*g).clone()));
            let mut vars = Map::new();
            for g in ordered {
                vars.extend(snapshot.groups[g].vars.clone());
            }
            if let Some(f) = files.get(&h.name) {
                h.own_vars.extend(f.clone());
            }
            vars.extend(h.own_vars.clone());
            h.vars = vars;
            h.groups = groups;
        }
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// A host named in a playbook but not in the inventory: `localhost` exists implicitly, with
    /// the local connection, as in Ansible.
    fn implicit(&self, name: &str) -> Option<Host> {
        (name == "localhost").then(|| {
            let mut vars = self
                .groups
                .get("all")
                .map(|g| g.vars.clone())
                .unwrap_or_default();
            vars.insert("connection".into(), Value::String("local".into()));
            Host {
                name: "localhost".into(),
                own_vars: Map::new(),
                vars,
                groups: ["all".to_string()].into(),
            }
        })
    }

    /// Resolve a host pattern: `all`, `*`, a group, a host, globs (`web*`), unions `a:b` or
    /// `a,b`, intersections `a:&b`, exclusions `a:!b`. Hosts come back in inventory order.
    pub fn select(&self, pattern: &str) -> Result<Vec<Host>, Error> {
        let mut selected: Vec<String> = Vec::new();
        let parts: Vec<&str> = pattern
            .split([':', ','])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(Error::Pattern(format!("empty host pattern `{pattern}`")));
        }
        let mut implicit = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let (op, name) = if let Some(n) = part.strip_prefix('&') {
                ('&', n)
            } else if let Some(n) = part.strip_prefix('!') {
                ('!', n)
            } else {
                ('|', *part)
            };
            let matched = self.match_term(name, &mut implicit)?;
            match op {
                '&' => selected.retain(|h| matched.contains(h)),
                '!' => selected.retain(|h| !matched.contains(h)),
                _ if i == 0 || op == '|' => {
                    for h in matched {
                        if !selected.contains(&h) {
                            selected.push(h);
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
        let mut out: Vec<Host> = Vec::new();
        for h in &self.hosts {
            if selected.contains(&h.name) {
                out.push(h.clone());
            }
        }
        for h in implicit {
            if selected.contains(&h.name) && !out.iter().any(|x| x.name == h.name) {
                out.push(h);
            }
        }
        Ok(out)
    }

    fn match_term(&self, name: &str, implicit: &mut Vec<Host>) -> Result<Vec<String>, Error> {
        if name == "all" || name == "*" {
            return Ok(self.hosts.iter().map(|h| h.name.clone()).collect());
        }
        if let Some(g) = self.groups.get(name) {
            return Ok(self
                .hosts
                .iter()
                .filter(|h| h.groups.contains(&g.name))
                .map(|h| h.name.clone())
                .collect());
        }
        if self.host(name).is_some() {
            return Ok(vec![name.to_string()]);
        }
        if name.contains('*') || name.contains('?') {
            let re = regex::Regex::new(&format!(
                "^{}$",
                regex::escape(name).replace(r"\*", ".*").replace(r"\?", ".")
            ))
            .map_err(|e| Error::Pattern(e.to_string()))?;
            let mut out: Vec<String> = self
                .hosts
                .iter()
                .filter(|h| re.is_match(&h.name))
                .map(|h| h.name.clone())
                .collect();
            out.extend(self.groups.keys().filter(|g| re.is_match(g)).flat_map(|g| {
                self.hosts
                    .iter()
                    .filter(move |h| h.groups.contains(g))
                    .map(|h| h.name.clone())
            }));
            return Ok(out);
        }
        if let Some(h) = self.implicit(name) {
            implicit.push(h);
            return Ok(vec![name.to_string()]);
        }
        let candidates = self
            .groups
            .keys()
            .map(String::as_str)
            .chain(self.hosts.iter().map(|h| h.name.as_str()));
        Err(Error::Pattern(match did_you_mean(name, candidates) {
            Some(s) => format!("no host or group named `{name}` (did you mean `{s}`?)"),
            None => format!("no host or group named `{name}` in the inventory"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
all:
  vars:
    proxy: http://all:3128
    site: lab
  hosts:
    localhost:
      connection: local
  children:
    jump:
      hosts:
        jump1: { ansible_host: 10.0.0.1, user: admin }
    kvm:
      vars:
        proxy: http://kvm:3128
      hosts:
        kvm1: { host: 192.168.121.105, jump: "admin@10.0.0.1" }
        kvm2: { host: 192.168.121.106, proxy: http://own:3128 }
      children:
        gpu:
          vars:
            proxy: http://gpu:3128
          hosts:
            kvm2:
"#;

    fn inv() -> Inventory {
        Inventory::parse(INV, Path::new("inv.yaml")).unwrap()
    }

    #[test]
    fn precedence_all_then_parent_then_child_then_host() {
        let i = inv();
        assert_eq!(i.host("kvm1").unwrap().vars["proxy"], "http://kvm:3128");
        assert_eq!(i.host("kvm2").unwrap().vars["proxy"], "http://own:3128");
        assert_eq!(i.host("jump1").unwrap().vars["proxy"], "http://all:3128");
        assert_eq!(i.host("kvm1").unwrap().vars["site"], "lab");
        assert!(i.host("kvm2").unwrap().groups.contains("gpu"));
        assert!(i.host("kvm2").unwrap().groups.contains("kvm"));
    }

    #[test]
    fn child_group_beats_parent() {
        let text = "all:\n  children:\n    kvm:\n      vars: {x: parent}\n      children:\n        gpu:\n          vars: {x: child}\n          hosts: {h: }\n";
        let i = Inventory::parse(text, Path::new("i")).unwrap();
        assert_eq!(i.host("h").unwrap().vars["x"], "child");
    }

    #[test]
    fn patterns() {
        let i = inv();
        let names = |p: &str| {
            i.select(p)
                .unwrap()
                .into_iter()
                .map(|h| h.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("all"), vec!["localhost", "jump1", "kvm1", "kvm2"]);
        assert_eq!(names("kvm"), vec!["kvm1", "kvm2"]);
        assert_eq!(names("jump:kvm1"), vec!["jump1", "kvm1"]);
        assert_eq!(names("kvm:&gpu"), vec!["kvm2"]);
        assert_eq!(names("kvm:!gpu"), vec!["kvm1"]);
        assert_eq!(names("all:!kvm:!localhost"), vec!["jump1"]);
        assert_eq!(names("kvm*"), vec!["kvm1", "kvm2"]);
        let e = i.select("kmv").unwrap_err().to_string();
        assert!(e.contains("did you mean `kvm"), "{e}");
    }

    #[test]
    fn connection_vars_short_and_ansible_names() {
        let i = inv();
        let c = i.host("kvm1").unwrap().connection().unwrap();
        assert_eq!(c.address, "192.168.121.105");
        assert_eq!(c.jump.as_deref(), Some("admin@10.0.0.1"));
        let j = i.host("jump1").unwrap().connection().unwrap();
        assert_eq!(
            (j.address.as_str(), j.user.as_deref()),
            ("10.0.0.1", Some("admin"))
        );
        assert_eq!(
            i.host("localhost").unwrap().connection().unwrap().kind,
            ConnectionKind::Local
        );
    }

    #[test]
    fn implicit_localhost() {
        let i = Inventory::parse("all:\n  hosts:\n    a:\n", Path::new("i")).unwrap();
        let h = i.select("localhost").unwrap();
        assert_eq!(h[0].connection().unwrap().kind, ConnectionKind::Local);
    }

    #[test]
    fn errors() {
        let e = Inventory::parse("all:\n  host:\n    a:\n", Path::new("i"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `hosts`"), "{e}");
        let e = Inventory::parse("all:\n  hosts:\n    a: [\n", Path::new("inv.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("inv.yaml:"), "{e}");
        let e = Inventory::parse(
            "all:\n  children:\n    a:\n      children:\n        a:\n",
            Path::new("i"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("own descendant"), "{e}");
    }

    #[test]
    fn group_and_host_vars_folders() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("inv.yaml"), INV).unwrap();
        std::fs::create_dir_all(d.path().join("group_vars/kvm")).unwrap();
        std::fs::write(d.path().join("group_vars/all.yaml"), "site: folder\n").unwrap();
        std::fs::write(d.path().join("group_vars/kvm/10.yaml"), "mtu: 1450\n").unwrap();
        std::fs::create_dir_all(d.path().join("host_vars")).unwrap();
        std::fs::write(
            d.path().join("host_vars/kvm1.yml"),
            "proxy: http://file:3128\n",
        )
        .unwrap();
        let i = Inventory::load(&d.path().join("inv.yaml")).unwrap();
        let k1 = i.host("kvm1").unwrap();
        assert_eq!(k1.vars["site"], "folder");
        assert_eq!(k1.vars["mtu"], 1450);
        assert_eq!(k1.vars["proxy"], "http://file:3128");
        // group_vars/kvm does not beat host inline vars
        assert_eq!(i.host("kvm2").unwrap().vars["proxy"], "http://own:3128");
    }
}
