//! Inventories as Ansible reads them: its YAML and INI formats (chosen by content, as Ansible
//! does), a directory of inventory files, several `-i` merged in order, comma-separated host
//! lists, host ranges (`www[001:006].example.com`), and `group_vars/`/`host_vars/` beside each
//! source.
//!
//! Resolution follows Ansible's variable precedence, lowest first:
//! 1. variables of the `all` group written in the inventory, then those of the host's other
//!    groups (by depth below `all`, then `ansible_group_priority`, then name);
//! 2. `group_vars/all` beside each source, then `group_vars/GROUP` for the host's other groups
//!    in the same order (a later source's files win over an earlier one's);
//! 3. the host's own variables from the inventory, then `host_vars/HOST`.
//!
//! Each level replaces whole top-level variables (Ansible's default `hash_behaviour`). Which
//! files Ansible picks (`NAME` before `NAME.yml`, a directory's files in sorted order, hidden
//! and backup files skipped) is reproduced too: `tests/inventory/` holds inventories with the
//! result `ansible-inventory` gave for each.

mod connection;
mod ini;
mod pylit;
mod range;
mod yaml;

pub use connection::{is_secret_var, ssh_args_to_options, ConnectionKind, ConnectionSpec, Secret};

use crate::error::Error;
use crate::params::did_you_mean;
use crate::yaml11;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Parent groups, in the order the relations were declared.
    pub parents: Vec<String>,
    /// Child groups, in the order they were declared.
    pub children: Vec<String>,
    /// Hosts listed in this group itself (not through children).
    pub hosts: Vec<String>,
    /// Variables written for the group in the inventory (not from `group_vars/`).
    pub vars: Map<String, Value>,
    /// Where each of `vars` was written: `FILE:LINE:COLUMN`.
    pub origins: Origins,
    /// `ansible_group_priority`: among groups of equal depth, higher wins.
    pub priority: i64,
    /// Length of the longest path from `all` down to this group.
    pub depth: usize,
}

impl Group {
    fn new(name: &str) -> Self {
        Group {
            name: name.into(),
            parents: Vec::new(),
            children: Vec::new(),
            hosts: Vec::new(),
            vars: Map::new(),
            origins: Origins::new(),
            priority: 1,
            depth: 0,
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
    /// Where each variable's value was written (`FILE:LINE:COLUMN`), where known: errors about
    /// a variable point there.
    pub origins: Origins,
}

/// Variable name to the position of its value, `FILE:LINE:COLUMN`.
pub type Origins = BTreeMap<String, String>;

/// The format a source was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Ini,
    /// `-i 'host1,host2,'`.
    HostList,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Ini => "ini",
            Format::HostList => "host list",
        }
    }
}

/// One inventory file (or host list) that was read.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
}

#[derive(Debug, Clone)]
pub struct Inventory {
    /// The first `-i` given (for messages).
    pub path: PathBuf,
    /// Every file read, in order, with its format.
    pub sources: Vec<Source>,
    /// Hosts in Ansible's order for the pattern `all`.
    pub hosts: Vec<Host>,
    pub groups: BTreeMap<String, Group>,
    /// Folders searched for `group_vars/` and `host_vars/` (one per `-i`).
    var_dirs: Vec<PathBuf>,
}

/// Set a variable as Ansible's inventory does: a later value replaces the whole earlier one,
/// mappings included (Ansible's default `hash_behaviour: replace`).
fn set_var(vars: &mut Map<String, Value>, key: String, value: Value) {
    vars.insert(key, value);
}

#[derive(Debug, Clone)]
struct HostDef {
    name: String,
    vars: Map<String, Value>,
    origins: Origins,
}

/// Inventory data while sources are read (Ansible's `InventoryData`).
#[derive(Debug, Clone)]
struct Data {
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
    hosts: Vec<HostDef>,
    host_index: HashMap<String, usize>,
    /// The file being read, as shown in positions.
    source: String,
}

impl Data {
    fn new() -> Data {
        let mut d = Data {
            groups: Vec::new(),
            group_index: HashMap::new(),
            hosts: Vec::new(),
            host_index: HashMap::new(),
            source: String::new(),
        };
        d.add_group("all");
        d.add_group("ungrouped");
        d.add_child("all", "ungrouped").expect("fresh groups");
        d
    }

    fn has_group(&self, name: &str) -> bool {
        self.group_index.contains_key(name)
    }

    fn group(&mut self, name: &str) -> &mut Group {
        let i = self.group_index[name];
        &mut self.groups[i]
    }

    fn add_group(&mut self, name: &str) {
        if !self.has_group(name) {
            self.group_index.insert(name.to_string(), self.groups.len());
            self.groups.push(Group::new(name));
        }
    }

    /// Add a host (on its first appearance with `port` as `ansible_port`), to `group` if given.
    fn add_host(&mut self, name: &str, group: Option<&str>, port: Option<u64>) {
        if !self.host_index.contains_key(name) {
            let mut vars = Map::new();
            if let Some(p) = port.filter(|p| *p != 0) {
                vars.insert("ansible_port".into(), Value::from(p));
            }
            self.host_index.insert(name.to_string(), self.hosts.len());
            self.hosts.push(HostDef {
                name: name.to_string(),
                vars,
                origins: Origins::new(),
            });
        }
        if let Some(g) = group {
            let g = self.group(g);
            if !g.hosts.iter().any(|h| h == name) {
                g.hosts.push(name.to_string());
            }
        }
    }

    /// `FILE:LINE:COLUMN` of a position in the file being read.
    fn at(&self, (line, col): (usize, usize)) -> String {
        format!("{}:{line}:{col}", self.source)
    }

    /// Set a host's variable, whose value is at `pos` (line, column) of the file being read.
    fn set_host_var(&mut self, host: &str, key: String, value: Value, pos: (usize, usize)) {
        let at = self.at(pos);
        let i = self.host_index[host];
        self.hosts[i].origins.insert(key.clone(), at);
        set_var(&mut self.hosts[i].vars, key, value);
    }

    fn set_group_var(
        &mut self,
        group: &str,
        key: String,
        value: Value,
        pos: (usize, usize),
    ) -> Result<(), String> {
        let at = self.at(pos);
        let g = self.group(group);
        if key == "ansible_group_priority" {
            g.priority = match &value {
                Value::Number(n) if n.is_i64() => n.as_i64().unwrap_or(1),
                Value::String(s) if s.trim().parse::<i64>().is_ok() => {
                    s.trim().parse().unwrap_or(1)
                }
                other => {
                    return Err(format!(
                    "group `{group}`: ansible_group_priority must be a whole number, not {other}"
                ))
                }
            };
            return Ok(());
        }
        g.origins.insert(key.clone(), at);
        set_var(&mut g.vars, key, value);
        Ok(())
    }

    fn ancestors(&self, group: &str, out: &mut BTreeSet<String>) {
        for p in &self.groups[self.group_index[group]].parents {
            if out.insert(p.clone()) {
                self.ancestors(p, out);
            }
        }
    }

    /// Make `child` a child group of `parent`, refusing loops.
    fn add_child(&mut self, parent: &str, child: &str) -> Result<(), String> {
        if parent == child {
            return Err(format!("group `{child}` cannot be a child of itself"));
        }
        let mut above = BTreeSet::new();
        self.ancestors(parent, &mut above);
        if above.contains(child) {
            return Err(format!(
                "making `{child}` a child of `{parent}` creates a loop: `{child}` is already above `{parent}`"
            ));
        }
        let p = self.group(parent);
        if !p.children.iter().any(|c| c == child) {
            p.children.push(child.to_string());
            self.group(child).parents.push(parent.to_string());
        }
        Ok(())
    }

    /// Ansible's reconciliation: groups without a parent go under `all`; hosts in no group are
    /// `ungrouped`, and only those.
    fn reconcile(&mut self) {
        let roots: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.name != "all" && g.parents.is_empty())
            .map(|g| g.name.clone())
            .collect();
        for r in roots {
            self.add_child("all", &r).expect("a root has no ancestors");
        }
        for i in 0..self.hosts.len() {
            let name = self.hosts[i].name.clone();
            let direct: Vec<String> = self
                .groups
                .iter()
                .filter(|g| g.hosts.contains(&name))
                .map(|g| g.name.clone())
                .collect();
            let mut all = BTreeSet::new();
            for g in &direct {
                all.insert(g.clone());
                self.ancestors(g, &mut all);
            }
            let others = all.iter().any(|g| g != "all" && g != "ungrouped");
            if all.contains("ungrouped") && others {
                self.group("ungrouped").hosts.retain(|h| *h != name);
            } else if !others && !all.contains("ungrouped") {
                self.add_host(&name, Some("ungrouped"), None);
            }
        }
        // Depth: the longest path from `all`.
        let mut depth: HashMap<String, usize> = HashMap::new();
        fn depth_of(d: &Data, g: &str, memo: &mut HashMap<String, usize>) -> usize {
            if let Some(v) = memo.get(g) {
                return *v;
            }
            let v = d.groups[d.group_index[g]]
                .parents
                .iter()
                .map(|p| depth_of(d, p, memo) + 1)
                .max()
                .unwrap_or(0);
            memo.insert(g.to_string(), v);
            v
        }
        for i in 0..self.groups.len() {
            let name = self.groups[i].name.clone();
            self.groups[i].depth = depth_of(self, &name, &mut depth);
        }
    }

    /// Hosts in the order Ansible lists them for `all`: the groups below `all` level by level,
    /// each group's own hosts in the order they were added.
    fn host_order(&self) -> Vec<String> {
        let all = &self.groups[self.group_index["all"]];
        let mut ordered: Vec<&str> = vec!["all"];
        ordered.extend(all.children.iter().map(String::as_str));
        let mut seen: BTreeSet<&str> = ordered.iter().copied().collect();
        let mut level: Vec<&str> = all.children.iter().map(String::as_str).collect();
        while !level.is_empty() {
            let mut next = Vec::new();
            for g in &level {
                for c in &self.groups[self.group_index[*g]].children {
                    if seen.insert(c) {
                        ordered.push(c);
                        next.push(c.as_str());
                    }
                }
            }
            level = next;
        }
        let mut hosts: Vec<String> = Vec::new();
        let mut taken = BTreeSet::new();
        for g in ordered {
            for h in &self.groups[self.group_index[g]].hosts {
                if taken.insert(h.clone()) {
                    hosts.push(h.clone());
                }
            }
        }
        hosts
    }
}

/// Names Ansible skips when it reads a directory of inventory files.
fn ignored_in_inventory_dir(name: &str) -> bool {
    const EXTS: [&str; 12] = [
        ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg",
        ".retry",
    ];
    name.starts_with('.')
        || matches!(name, "host_vars" | "group_vars" | "vars_plugins")
        || EXTS.iter().any(|e| name.ends_with(e))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io(path.to_path_buf(), e.to_string())
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    Ok(names)
}

/// Ansible's `find_vars_files`: `DIR/NAME`, else `NAME.yml`, `NAME.yaml`, `NAME.json` (the
/// first that exists); a directory stands for its files, recursively, in sorted order.
fn vars_files(dir: &Path, name: &str) -> Result<Vec<PathBuf>, Error> {
    for ext in ["", ".yml", ".yaml", ".json"] {
        let p = dir.join(format!("{name}{ext}"));
        if p.is_dir() {
            let mut out = Vec::new();
            dir_vars_files(&p, &mut out)?;
            return Ok(out);
        }
        if p.exists() {
            return Ok(vec![p]);
        }
    }
    Ok(Vec::new())
}

fn dir_vars_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for (name, path) in sorted_entries(dir)? {
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let ext = Path::new(&name)
            .extension()
            .map(|e| e.to_string_lossy().into_owned());
        if path.is_dir() && ext.is_none() {
            dir_vars_files(&path, out)?;
        } else if path.is_file()
            && ext
                .as_deref()
                .is_none_or(|e| matches!(e, "yml" | "yaml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Read a YAML (or JSON) file of variables, typed as Ansible types them. An empty file has none.
pub fn load_vars_file(path: &Path) -> Result<Map<String, Value>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let node =
        yaml11::parse(&text).map_err(|e| Error::Inventory(format!("{}:{e}", path.display())))?;
    if node.is_null() {
        return Ok(Map::new());
    }
    yaml11::to_vars(&node).ok_or_else(|| {
        Error::Inventory(format!(
            "{}: a variables file must be a mapping of names to values",
            path.display()
        ))
    })
}

/// A variables file's variables and where each value is in it.
fn load_vars_file_with_origins(path: &Path) -> Result<VarsWithOrigins, Error> {
    let vars = load_vars_file(path)?;
    let mut origins = Origins::new();
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    if let Ok(node) = yaml11::parse(&text) {
        if let yaml11::Yaml::Map(pairs) = &node.value {
            for (k, v) in pairs {
                if let Some(name) = k.key_text() {
                    let m = if v.value == yaml11::Yaml::Null {
                        k.mark
                    } else {
                        v.mark
                    };
                    origins.insert(name, format!("{}:{}:{}", path.display(), m.line, m.col));
                }
            }
        }
    }
    Ok((vars, origins))
}

/// Each `group_vars/NAME` (or `host_vars/NAME`) is looked up and read once however many hosts
/// use it.
#[derive(Default)]
struct VarsCache(HashMap<(&'static str, String), VarsWithOrigins>);

/// Variables and where each value is written.
type VarsWithOrigins = (Map<String, Value>, Origins);

impl VarsCache {
    /// The variables of `SUB/NAME` in each folder, in order.
    fn get(
        &mut self,
        dirs: &[PathBuf],
        sub: &'static str,
        name: &str,
    ) -> Result<VarsWithOrigins, Error> {
        let key = (sub, name.to_string());
        if let Some(v) = self.0.get(&key) {
            return Ok(v.clone());
        }
        let mut out = (Map::new(), Origins::new());
        for d in dirs {
            let base = d.join(sub);
            if base.is_dir() {
                for f in vars_files(&base, name)? {
                    let (vars, origins) = load_vars_file_with_origins(&f)?;
                    for k in vars.keys() {
                        out.1.remove(k);
                    }
                    out.0.extend(vars);
                    out.1.extend(origins);
                }
            }
        }
        self.0.insert(key, out.clone());
        Ok(out)
    }
}

impl Inventory {
    /// Load one inventory source (file, directory or host list).
    pub fn load(path: &Path) -> Result<Inventory, Error> {
        Inventory::load_all(&[path.to_path_buf()])
    }

    /// Load every `-i` given, merged in order as Ansible merges them.
    pub fn load_all(paths: &[PathBuf]) -> Result<Inventory, Error> {
        let mut data = Data::new();
        let mut sources = Vec::new();
        let mut var_dirs = Vec::new();
        for p in paths {
            if p.is_dir() {
                read_dir_source(p, &mut data, &mut sources)?;
                var_dirs.push(p.clone());
            } else if p.exists() {
                let text = std::fs::read_to_string(p).map_err(|e| io(p, e))?;
                read_file(p, &text, &mut data, &mut sources)?;
                var_dirs.push(p.parent().unwrap_or(Path::new(".")).to_path_buf());
            } else if p.to_string_lossy().contains(',') {
                read_host_list(&p.to_string_lossy(), &mut data);
                sources.push(Source {
                    path: p.clone(),
                    format: Format::HostList,
                });
            } else {
                return Err(Error::Inventory(format!(
                    "inventory `{}` does not exist (give a file, a directory, or hosts separated by commas)",
                    p.display()
                )));
            }
        }
        Inventory::finish(
            data,
            paths.first().cloned().unwrap_or_default(),
            sources,
            var_dirs,
        )
    }

    /// Parse inventory text (format chosen by content) without reading any folder beside it.
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, Error> {
        let mut data = Data::new();
        let mut sources = Vec::new();
        read_file(path, text, &mut data, &mut sources)?;
        Inventory::finish(data, path.to_path_buf(), sources, Vec::new())
    }

    /// An inventory with no hosts: only the implicit `localhost` can be targeted.
    pub fn empty() -> Inventory {
        Inventory::finish(
            Data::new(),
            PathBuf::from("(no inventory)"),
            Vec::new(),
            Vec::new(),
        )
        .expect("an empty inventory resolves")
    }

    fn finish(
        mut data: Data,
        path: PathBuf,
        sources: Vec<Source>,
        var_dirs: Vec<PathBuf>,
    ) -> Result<Inventory, Error> {
        data.reconcile();
        let order = data.host_order();
        let groups: BTreeMap<String, Group> = data
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.clone()))
            .collect();
        let mut cache = VarsCache::default();
        let all_files = cache.get(&var_dirs, "group_vars", "all")?;
        let mut hosts = Vec::new();
        for name in order {
            let def = &data.hosts[data.host_index[&name]];
            let mut member = BTreeSet::new();
            for g in data.groups.iter().filter(|g| g.hosts.contains(&name)) {
                member.insert(g.name.clone());
                data.ancestors(&g.name, &mut member);
            }
            member.insert("all".to_string());
            let mut sorted: Vec<&Group> = member
                .iter()
                .filter(|g| *g != "all")
                .map(|g| &groups[g])
                .collect();
            sorted.sort_by(|a, b| {
                (a.depth, a.priority, &a.name).cmp(&(b.depth, b.priority, &b.name))
            });
            // Lowest precedence first; a later layer's value and position win.
            let mut vars = Map::new();
            let mut origins = Origins::new();
            let mut layer = |v: &Map<String, Value>, o: &Origins| {
                for k in v.keys() {
                    origins.remove(k);
                }
                vars.extend(v.clone());
                origins.extend(
                    o.iter()
                        .filter(|(k, _)| v.contains_key(*k))
                        .map(|(k, p)| (k.clone(), p.clone())),
                );
            };
            layer(&groups["all"].vars, &groups["all"].origins);
            for g in &sorted {
                layer(&g.vars, &g.origins);
            }
            layer(&all_files.0, &all_files.1);
            for g in &sorted {
                let (v, o) = cache.get(&var_dirs, "group_vars", &g.name)?;
                layer(&v, &o);
            }
            layer(&def.vars, &def.origins);
            let (v, o) = cache.get(&var_dirs, "host_vars", &name)?;
            layer(&v, &o);
            hosts.push(Host {
                name,
                vars,
                groups: member,
                origins,
            });
        }
        Ok(Inventory {
            path,
            sources,
            hosts,
            groups,
            var_dirs,
        })
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// A host named in a playbook but not in the inventory: `localhost` exists implicitly, with
    /// the local connection and the `all` group's variables, as in Ansible.
    fn implicit(&self, name: &str) -> Option<Host> {
        if name != "localhost" {
            return None;
        }
        let (mut vars, mut origins) = self
            .groups
            .get("all")
            .map(|g| (g.vars.clone(), g.origins.clone()))
            .unwrap_or_default();
        let mut cache = VarsCache::default();
        let (v, o) = cache
            .get(&self.var_dirs, "group_vars", "all")
            .unwrap_or_default();
        for k in v.keys() {
            origins.remove(k);
        }
        vars.extend(v);
        origins.extend(o);
        vars.insert("connection".into(), Value::String("local".into()));
        origins.remove("connection");
        Some(Host {
            name: "localhost".into(),
            vars,
            groups: ["all".to_string()].into(),
            origins,
        })
    }
}

/// Every inventory file in a directory (sorted, recursively), skipping what Ansible skips.
fn read_dir_source(dir: &Path, data: &mut Data, sources: &mut Vec<Source>) -> Result<(), Error> {
    for (name, path) in sorted_entries(dir)? {
        if ignored_in_inventory_dir(&name) {
            continue;
        }
        if path.is_dir() {
            read_dir_source(&path, data, sources)?;
        } else {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            read_file(&path, &text, data, sources)?;
        }
    }
    Ok(())
}

/// `-i 'web1,web2:2222,'`: hosts separated by commas, all ungrouped.
fn read_host_list(list: &str, data: &mut Data) {
    for h in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (name, port) = match range::expand_hostpattern(h) {
            Ok((names, port)) if names.len() == 1 && !h.contains('[') => (names[0].clone(), port),
            _ => (h.to_string(), None),
        };
        data.add_host(&name, Some("ungrouped"), port);
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Read one inventory file, choosing the format as Ansible does: YAML when the file has no
/// extension or `.yml`/`.yaml`/`.json` and parses as a mapping of groups, INI otherwise.
fn read_file(
    path: &Path,
    text: &str,
    data: &mut Data,
    sources: &mut Vec<Source>,
) -> Result<(), Error> {
    let shown = path.display();
    data.source = shown.to_string();
    if text.starts_with("#!") && is_executable(path) {
        return Err(Error::Inventory(format!(
            "{shown}: this is an executable inventory script; kvmforge reads static inventories \
             (YAML or INI). Save what it produces once: `ansible-inventory -i {shown} --list -y > inventory.yaml`"
        )));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if ext.as_deref() == Some("toml") {
        return Err(Error::Inventory(format!(
            "{shown}: TOML inventories are not supported; use the YAML or INI format"
        )));
    }
    let yaml_candidate = ext
        .as_deref()
        .is_none_or(|e| matches!(e, "yml" | "yaml" | "json"));
    let mut as_yaml: Option<String> = None;
    if yaml_candidate {
        match yaml11::parse(text) {
            Ok(node) => match &node.value {
                yaml11::Yaml::Map(pairs) if !pairs.is_empty() => {
                    if pairs.iter().any(|(k, _)| k.as_str() == Some("plugin")) {
                        return Err(Error::Inventory(format!(
                            "{shown}: this configures an Ansible inventory plugin (`plugin:`), which kvmforge \
                             cannot run; save its result once with `ansible-inventory -i {shown} --list -y > inventory.yaml`"
                        )));
                    }
                    yaml::read(&node, data)
                        .map_err(|e| Error::Inventory(format!("{shown}:{e}")))?;
                    sources.push(Source {
                        path: path.to_path_buf(),
                        format: Format::Yaml,
                    });
                    return Ok(());
                }
                yaml11::Yaml::Null | yaml11::Yaml::Map(_) => {}
                _ => as_yaml = Some("it is YAML but not a mapping of groups".into()),
            },
            Err(e) => as_yaml = Some(e.to_string()),
        }
    }
    // A `.yml`/`.yaml`/`.json` file that is not valid YAML is a YAML file with a mistake: say
    // where, rather than how it also fails as INI.
    if let (Some(y), Some("yml" | "yaml" | "json")) = (&as_yaml, ext.as_deref()) {
        if !y.starts_with("it is YAML") {
            return Err(Error::Inventory(format!("{shown}:{y}")));
        }
    }
    match ini::read(text, data) {
        Ok(()) => {
            sources.push(Source {
                path: path.to_path_buf(),
                format: Format::Ini,
            });
            Ok(())
        }
        Err(e) => Err(Error::Inventory(match as_yaml {
            Some(y) => format!(
                "{shown}: not an inventory in either format Ansible reads:\n  as YAML: {y}\n  as INI: line {e}"
            ),
            None => format!("{shown}:{e}"),
        })),
    }
}

impl Inventory {
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

    /// A bad connection value is shown where it is written, whichever layer it won from.
    #[test]
    fn variable_errors_point_at_the_winning_value() {
        let conn_err = |text: &str, name: &str| {
            let inv = Inventory::parse(text, Path::new(name)).unwrap();
            inv.host("h1")
                .unwrap()
                .connection()
                .unwrap_err()
                .to_string()
        };
        let e = conn_err(
            "all:\n  vars:\n    ansible_port: 22\n  children:\n    kvm:\n      vars:\n        ansible_port: 70000\n      hosts:\n        h1:\n",
            "inv.yaml",
        );
        assert!(
            e.contains("inv.yaml:7:23: host `h1`, variable `ansible_port`: "),
            "{e}"
        );
        let e = conn_err(
            "all:\n  hosts:\n    h1:\n      host_key_checking: stirct\n",
            "inv.yaml",
        );
        assert!(
            e.contains("inv.yaml:4:26: host `h1`, variable `host_key_checking`"),
            "{e}"
        );
        assert!(e.contains("did you mean `strict`?"), "{e}");
        let e = conn_err("[g]\nh1 ansible_connection=winrm\n", "hosts.ini");
        assert!(
            e.contains("hosts.ini:2:23: host `h1`, variable `ansible_connection`"),
            "{e}"
        );
        let e = conn_err("[g]\nh1\n[g:vars]\nansible_become =  maybe\n", "hosts.ini");
        assert!(
            e.contains("hosts.ini:4:19: host `h1`, variable `ansible_become`"),
            "{e}"
        );
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
        assert!(e.contains("inv.yaml:4:1: "), "{e}");
        let e = Inventory::parse(
            "all:\n  children:\n    a:\n      children:\n        a:\n",
            Path::new("i"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot be a child of itself"), "{e}");
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

    #[test]
    fn format_is_chosen_by_content_as_ansible_does() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let format = |p: &Path| Inventory::load(p).unwrap().sources[0].format;
        assert_eq!(format(&write("hosts", "[web]\nw1\n")), Format::Ini);
        assert_eq!(
            format(&write("hosts2", "all:\n  hosts:\n    w1:\n")),
            Format::Yaml
        );
        assert_eq!(format(&write("plain", "w1\nw2\n")), Format::Ini);
        assert_eq!(format(&write("empty.yml", "")), Format::Ini);
        // `.ini` is never read as YAML, whatever it contains.
        let e = Inventory::load(&write("x.ini", "all:\n  hosts:\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.ini:1: host `all:` ends in `:`"), "{e}");
        // Neither format: both reasons, with positions.
        let e = Inventory::load(&write("broken", "all: [\n  - {\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("as YAML: ") && e.contains("as INI: line 1"),
            "{e}"
        );
        let e = Inventory::load(&write(
            "aws_ec2.yml",
            "plugin: amazon.aws.aws_ec2\nregions: [x]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("inventory plugin"), "{e}");
        let script = write("inv.py", "#!/usr/bin/env python3\nprint('{}')\n");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let e = Inventory::load(&script).unwrap_err().to_string();
        assert!(e.contains("executable inventory script"), "{e}");
        let e = Inventory::load(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn host_lists_and_several_sources() {
        let i = Inventory::load_all(&[PathBuf::from("web1,web2:2222,")]).unwrap();
        assert_eq!(i.sources[0].format, Format::HostList);
        let w2 = i.host("web2").unwrap();
        assert_eq!(w2.connection().unwrap().port, Some(2222));
        assert!(w2.groups.contains("ungrouped"));
    }

    #[test]
    fn implicit_localhost_sees_group_vars_all() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("hosts"), "[web]\nw1\n").unwrap();
        std::fs::create_dir(d.path().join("group_vars")).unwrap();
        std::fs::write(d.path().join("group_vars/all.yml"), "site: lab\n").unwrap();
        let i = Inventory::load(&d.path().join("hosts")).unwrap();
        let l = i.select("localhost").unwrap();
        assert_eq!(l[0].vars["site"], "lab");
        assert_eq!(l[0].connection().unwrap().kind, ConnectionKind::Local);
    }
}
