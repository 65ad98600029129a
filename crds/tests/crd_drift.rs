//! The CRDs checked in under `charts/flotilla/crds/` must equal the ones generated from the
//! types. Regenerate with:
//!
//! ```sh
//! FLOTILLA_UPDATE_CRDS=1 cargo test -p flotilla-crds --test crd_drift
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

const UPDATE_VAR: &str = "FLOTILLA_UPDATE_CRDS";
const REGENERATE: &str = "FLOTILLA_UPDATE_CRDS=1 cargo test -p flotilla-crds --test crd_drift";

fn chart_crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/flotilla/crds")
}

#[test]
fn checked_in_crds_match_the_types() {
    let dir = chart_crds_dir();
    let files = flotilla_crds::crd_files();

    if std::env::var_os(UPDATE_VAR).is_some() {
        fs::create_dir_all(&dir).expect("create charts/flotilla/crds");
        for (name, contents) in &files {
            fs::write(dir.join(name), contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
        }
    }

    let mut problems = Vec::new();
    for (name, generated) in &files {
        match fs::read_to_string(dir.join(name)) {
            Ok(checked_in) if &checked_in == generated => {}
            Ok(checked_in) => {
                let line = checked_in
                    .lines()
                    .zip(generated.lines())
                    .position(|(a, b)| a != b)
                    // Equal up to the shorter one: they differ where the shorter one ends.
                    .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()))
                    + 1;
                problems.push(format!(
                    "{name} differs from the generated CRD (first difference at line {line})"
                ));
            }
            Err(error) => problems.push(format!("{name} cannot be read: {error}")),
        }
    }

    // A CRD file without a type behind it would still be installed by Helm.
    let expected: BTreeSet<_> = files.iter().map(|(name, _)| name.clone()).collect();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !expected.contains(&name) {
                problems.push(format!("{name} is not generated from any type (delete it)"));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "the CRDs in {} are out of date:\n  {}\nRegenerate them with:\n  {REGENERATE}",
        dir.display(),
        problems.join("\n  ")
    );
}

#[test]
fn the_stream_is_every_file_in_order() {
    let stream = flotilla_crds::crds_yaml();
    assert_eq!(
        stream.matches("\n---\n").count() + 1,
        flotilla_crds::all_crds().len()
    );
    assert!(stream.starts_with("---\napiVersion: apiextensions.k8s.io/v1\n"));
    let from_files: String = flotilla_crds::crd_files()
        .into_iter()
        .map(|(_, contents)| {
            contents
                .lines()
                .skip_while(|l| l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        })
        .collect();
    assert_eq!(stream, from_files);
    assert_eq!(
        stream,
        flotilla_crds::crds_yaml(),
        "generation is deterministic"
    );
}

#[test]
fn checked_in_files_parse_back_into_the_same_crds() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    for (crd, (name, _)) in flotilla_crds::all_crds()
        .into_iter()
        .zip(flotilla_crds::crd_files())
    {
        let text = fs::read_to_string(chart_crds_dir().join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}; regenerate with {REGENERATE}"));
        let parsed: CustomResourceDefinition =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{name} is not a CRD: {e}"));
        assert_eq!(
            parsed, crd,
            "{name} does not describe the same CRD as the types"
        );
    }
}
