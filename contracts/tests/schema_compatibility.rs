//! `buf breaking` guards the wire format: the schemas as they are pass against the released
//! baseline, and a fixture with an incompatible change fails. Run by `scripts/test`, which
//! installs buf (npm `@bufbuild/buf`) and sets `NUDGE_BUF_BIN`.

use std::{path::Path, process::Command};

fn buf() -> String {
    std::env::var("NUDGE_BUF_BIN").expect("NUDGE_BUF_BIN is set by scripts/test (npm @bufbuild/buf)")
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn breaking(against_dir: &Path, input: &Path) -> std::process::Output {
    Command::new(buf()).arg("breaking").arg(input).arg("--against").arg(against_dir).output().expect("buf runs")
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn the_schemas_stay_compatible_with_the_released_baseline() {
    let out = breaking(&root().join("proto-baseline"), &root().join("proto"));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_incompatible_change_is_caught() {
    let scratch = std::env::temp_dir().join(format!("nudge-buf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    copy_tree(&root().join("proto"), &scratch);

    // The fixture: a field changes type, and another is renumbered.
    let event = scratch.join("nudge/events/v1/event.proto");
    let text = std::fs::read_to_string(&event).expect("event.proto");
    let changed = text
        .replace("  int64 occurred_at_ms = 4;", "  string occurred_at_ms = 4;")
        .replace("  string shopper_id = 3;\n  // When", "  string shopper_id = 30;\n  // When");
    assert_ne!(changed, text, "the fixture applies");
    std::fs::write(&event, changed).expect("write");

    let out = breaking(&root().join("proto-baseline"), &scratch);
    let report = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(!out.status.success(), "buf must refuse the change");
    assert!(report.contains("occurred_at_ms") && report.contains("changed type"), "{report}");
}
