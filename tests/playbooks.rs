//! Every shipped playbook validates with the example inventory beside it
//! (`playbooks/NAME.yaml` with `playbooks/NAME.inventory.yaml`): its variables, modules and
//! arguments are checked without contacting a host.

use std::path::Path;
use std::process::Command;

#[test]
fn every_playbook_validates_with_its_example_inventory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for pb in entries {
        let name = pb.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".yaml") else {
            continue;
        };
        if stem.ends_with(".inventory") {
            continue;
        }
        let inv = dir.join(format!("{stem}.inventory.yaml"));
        assert!(
            inv.exists(),
            "{name} has no example inventory {}",
            inv.display()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .arg("validate")
            .arg(&pb)
            .arg("-i")
            .arg(&inv)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kvmforge validate {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no playbook in {}", dir.display());
}
