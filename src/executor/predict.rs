//! What the host will look like after actions run, so consecutive changes can be applied
//! together without observing in between.
//!
//! The engine's own actions have exact effects: a write leaves exactly the content written, with
//! the mode and owner the apply script gives it. Those are predicted; anything whose effect is
//! not known (a command, a symlink whose target decides the type) makes the engine forget what it
//! may have changed, and the next task that needs it observes again.

use crate::module::{Action, Attrs, FileKind, FileState, Observation, Observed, Probe};

/// Update `cache` for `actions` having run. `as_root`: the engine runs as root, so a new file is
/// owned by root:root (otherwise owners of new paths are unknown and those paths are forgotten).
pub fn apply(cache: &mut Observed, actions: &[Action], as_root: bool) {
    for a in actions {
        match a {
            Action::WriteFile {
                path,
                content,
                attrs,
                ..
            } => {
                let before = existing(cache, path);
                forget_commands_and_absent_ancestors(cache, path);
                match predicted(before.as_ref(), attrs, as_root, FileKind::File, 0o644) {
                    Some(mut st) => {
                        st.size = content.len() as u64;
                        st.content = Some(content.clone());
                        cache.insert(Probe::File(path.clone()), Observation::File(st));
                    }
                    None => cache.remove(&Probe::File(path.clone())),
                }
            }
            Action::MakeDir { path, attrs } => {
                let before = existing(cache, path);
                forget_commands_and_absent_ancestors(cache, path);
                match before {
                    Some(st) if st.kind == FileKind::Dir => {
                        let st = with_attrs(st, attrs);
                        cache.insert(Probe::File(path.clone()), Observation::File(st));
                    }
                    Some(st) if st.kind != FileKind::Absent => {
                        cache.remove(&Probe::File(path.clone()))
                    }
                    _ => match fresh(FileKind::Dir, 0o755, as_root).map(|st| with_attrs(st, attrs))
                    {
                        Some(st) => cache.insert(Probe::File(path.clone()), Observation::File(st)),
                        None => cache.remove(&Probe::File(path.clone())),
                    },
                }
            }
            Action::SetAttrs { path, attrs } => {
                let before = existing(cache, path);
                forget_commands_and_absent_ancestors(cache, path);
                match before {
                    Some(st) if st.exists() => cache.insert(
                        Probe::File(path.clone()),
                        Observation::File(with_attrs(st, attrs)),
                    ),
                    _ => cache.remove(&Probe::File(path.clone())),
                }
            }
            Action::Remove { path } => {
                cache.invalidate_path(path);
                cache.insert(
                    Probe::File(path.clone()),
                    Observation::File(FileState::absent()),
                );
            }
            Action::Symlink { link, .. } => cache.invalidate_path(link),
            Action::Run { .. } => cache.clear(),
        }
    }
}

fn existing(cache: &Observed, path: &str) -> Option<FileState> {
    match cache.get(&Probe::File(path.to_string())) {
        Some(Observation::File(st)) => Some(st.clone()),
        _ => None,
    }
}

/// Command output may depend on any file; a write also creates missing parent directories.
fn forget_commands_and_absent_ancestors(cache: &mut Observed, path: &str) {
    cache.retain(|p, o| match p {
        Probe::Command(_) => false,
        Probe::File(f) => {
            let ancestor = path.starts_with(&format!("{}/", f.trim_end_matches('/')));
            !(ancestor && matches!(o, Observation::File(st) if !st.exists()))
        }
    });
}

fn with_attrs(mut st: FileState, attrs: &Attrs) -> FileState {
    if let Some(m) = attrs.mode {
        st.mode = m;
    }
    if let Some(o) = &attrs.owner {
        st.owner = o.clone();
    }
    if let Some(g) = &attrs.group {
        st.group = g.clone();
    }
    st
}

/// The state of a path after it is (re)created, or `None` when it cannot be known.
fn predicted(
    before: Option<&FileState>,
    attrs: &Attrs,
    as_root: bool,
    kind: FileKind,
    default_mode: u32,
) -> Option<FileState> {
    let base = match before {
        // An existing file keeps its mode and owner (the apply script copies them).
        Some(st)
            if st.kind == FileKind::File && kind == FileKind::File && st.link_target.is_none() =>
        {
            FileState {
                kind,
                content: None,
                ..st.clone()
            }
        }
        // Writing through a symlink replaces the link: owner and mode are the new file's.
        Some(st) if st.link_target.is_some() || st.kind == FileKind::Absent => {
            fresh(kind, default_mode, as_root)?
        }
        Some(_) => return None,
        None => return None,
    };
    Some(with_attrs(base, attrs))
}

fn fresh(kind: FileKind, mode: u32, as_root: bool) -> Option<FileState> {
    as_root.then(|| FileState {
        kind,
        mode,
        owner: "root".into(),
        group: "root".into(),
        size: 0,
        link_target: None,
        content: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;

    fn file(cache: &Observed, p: &str) -> Option<FileState> {
        existing(cache, p)
    }

    #[test]
    fn write_to_new_file_as_root_is_predicted_exactly() {
        let mut c = Observed::new()
            .with_file("/etc/a", FileState::absent())
            .with_file("/etc", FileState::dir())
            .with_command("systemctl show x", CommandOutput::ok("x"));
        apply(
            &mut c,
            &[Action::write("/etc/a", "hi\n", Attrs::default(), false)],
            true,
        );
        let st = file(&c, "/etc/a").unwrap();
        assert_eq!(st, FileState::file("hi\n"));
        assert!(file(&c, "/etc").is_some(), "an existing parent stays known");
        assert!(
            !c.contains(&Probe::Command("systemctl show x".into())),
            "commands are forgotten"
        );
    }

    #[test]
    fn existing_file_keeps_mode_and_owner_unless_given() {
        let mut c = Observed::new().with_file(
            "/x",
            FileState::file("old")
                .with_mode(0o600)
                .with_owner("kf", "kf"),
        );
        apply(
            &mut c,
            &[Action::write("/x", "new", Attrs::default(), false)],
            true,
        );
        assert_eq!(
            file(&c, "/x").unwrap(),
            FileState::file("new")
                .with_mode(0o600)
                .with_owner("kf", "kf")
        );
        let attrs = Attrs {
            mode: Some(0o640),
            owner: Some("root".into()),
            group: None,
        };
        apply(&mut c, &[Action::write("/x", "new", attrs, false)], false);
        assert_eq!(
            file(&c, "/x").unwrap(),
            FileState::file("new")
                .with_mode(0o640)
                .with_owner("root", "kf")
        );
    }

    #[test]
    fn unknown_owner_or_effects_are_forgotten() {
        let mut c = Observed::new().with_file("/n", FileState::absent());
        apply(
            &mut c,
            &[Action::write("/n", "x", Attrs::default(), false)],
            false,
        );
        assert!(
            file(&c, "/n").is_none(),
            "a new file's owner is unknown when not root"
        );
        let mut c = Observed::new()
            .with_file("/a", FileState::file("x"))
            .with_file("/b", FileState::absent());
        apply(&mut c, &[Action::run("anything")], true);
        assert!(file(&c, "/a").is_none() && file(&c, "/b").is_none());
        let mut c = Observed::new().with_file("/l", FileState::absent());
        apply(
            &mut c,
            &[Action::Symlink {
                target: "/t".into(),
                link: "/l".into(),
            }],
            true,
        );
        assert!(file(&c, "/l").is_none());
    }

    #[test]
    fn directories_and_removal() {
        let mut c = Observed::new()
            .with_file("/var/lib/pool", FileState::absent())
            .with_file("/var/lib", FileState::absent());
        apply(
            &mut c,
            &[Action::MakeDir {
                path: "/var/lib/pool".into(),
                attrs: Attrs {
                    mode: Some(0o711),
                    ..Default::default()
                },
            }],
            true,
        );
        assert_eq!(file(&c, "/var/lib/pool").unwrap().mode, 0o711);
        assert_eq!(file(&c, "/var/lib/pool").unwrap().kind, FileKind::Dir);
        assert!(
            file(&c, "/var/lib").is_none(),
            "an absent ancestor is created by mkdir -p"
        );
        let mut c = Observed::new()
            .with_file("/d", FileState::dir())
            .with_file("/d/f", FileState::file("x"));
        apply(&mut c, &[Action::Remove { path: "/d".into() }], true);
        assert_eq!(file(&c, "/d").unwrap(), FileState::absent());
        assert!(file(&c, "/d/f").is_none());
    }
}
