//! `docs/runbook.md` section 8 lists every condition reason the controllers can write, each
//! with a diagnosis and a fix, and nothing else.
//!
//! The reasons are read from the source — every `pub const X: &str = "..."` in
//! `flotilla_crds::condition::reasons` and in the controllers' `*_reasons` modules (not their
//! `event_reasons`) — so that a reason added to the code without a runbook row fails here;
//! a list kept beside them would go stale with them. A rollout's `Progressing` condition
//! carries its phase as reason: those come from the CRD's phase enum.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The string values of `pub const` items in `pub mod *reasons` blocks, but `event_reasons`.
fn reasons_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("pub mod ")
            .and_then(|rest| rest.strip_suffix(" {"))
        {
            inside = name.ends_with("reasons") && name != "event_reasons";
            continue;
        }
        if line.starts_with('}') {
            inside = false;
        }
        if inside
            && trimmed.starts_with("pub const ")
            && let Some((_, value)) = trimmed.split_once("&str = \"")
        {
            found.push(value.trim_end_matches("\";").to_owned());
        }
    }
    found
}

fn written_reasons() -> BTreeSet<String> {
    let mut files = vec![root().join("crds/src/condition.rs")];
    rust_files(&root().join("controllers"), &mut files);
    let mut reasons = BTreeSet::new();
    for file in files
        .iter()
        .filter(|f| f.components().any(|c| c.as_os_str() == "src"))
    {
        let text = std::fs::read_to_string(file).expect("a source file");
        reasons.extend(reasons_in(&text));
    }
    let rollout = flotilla_crds::all_crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "FirmwareRollout")
        .expect("the FirmwareRollout CRD");
    let schema = serde_json::to_value(&rollout.spec.versions[0].schema).expect("a schema");
    let phases = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"];
    let phases = phases.as_array().expect("the phase enum");
    reasons.extend(
        phases
            .iter()
            .map(|p| p.as_str().expect("a phase").to_owned()),
    );
    reasons
}

/// `(reasons of the row, its cells)` of the table in section 8.
fn runbook_rows() -> Vec<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("docs/runbook.md")).expect("docs/runbook.md");
    let section = text
        .split_once("## 8. Every condition reason")
        .expect("section 8 of the runbook")
        .1;
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            let reasons = cells[0]
                .split(", ")
                .map(|r| r.trim_matches('`').to_owned())
                .collect();
            (reasons, cells)
        })
        .collect()
}

#[test]
fn the_source_yields_the_reasons_a_test_would_miss_otherwise() {
    let reasons = written_reasons();
    for known in [
        "Reconciled",
        "NamespaceConflict",
        "QuotaExceeded",
        "BreakerOpen",
        "LedgerUnavailable",
        "RolledBack",
    ] {
        assert!(reasons.contains(known), "{known} not found in {reasons:?}");
    }
    assert!(
        !reasons.contains("CampaignStarted"),
        "Event reasons are not condition reasons"
    );
}

#[test]
fn every_condition_reason_has_a_runbook_row_with_a_diagnosis_and_a_fix() {
    let written = written_reasons();
    let rows = runbook_rows();
    let mut documented = BTreeSet::new();
    for (reasons, cells) in &rows {
        assert_eq!(
            cells.len(),
            4,
            "a row needs reason, where, diagnosis, fix: {cells:?}"
        );
        assert!(
            cells[1..].iter().all(|c| c.len() >= 3),
            "an empty cell: {cells:?}"
        );
        documented.extend(reasons.iter().cloned());
    }
    let missing: Vec<_> = written.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "reasons without a runbook row: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&written).collect();
    assert!(
        stale.is_empty(),
        "runbook rows for reasons no code writes: {stale:?}"
    );
}
