//! Every object in `config/samples/` parses into its type, passes the spec's `validate()`, is
//! admitted by the CRD schema (OpenAPI and CEL), and survives a serde round trip; the
//! Kustomization lists exactly the sample files; `kubectl apply -f config/samples/` meets every
//! namespace before the objects in it.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use flotilla_crds::{
    Campaign, Channel, Device, FirmwareRelease, FirmwareRollout, Plan, Subscription,
};
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples")
}

/// Every YAML document in the samples directory, with the file it came from.
fn sample_documents() -> Vec<(String, Value)> {
    let mut files: Vec<_> = fs::read_dir(samples_dir())
        .expect("config/samples exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = fs::read_to_string(samples_dir().join(&file)).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}"));
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

/// Parses, validates, admits and round-trips one sample as `K`.
fn check_sample<K>(
    file: &str,
    value: &Value,
    validate: impl Fn(&K) -> Result<(), Vec<flotilla_crds::SpecError>>,
) where
    K: CustomResourceExt + DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{file}: does not parse: {e}"));
    if let Err(errors) = validate(&object) {
        panic!("{file}: validate() refuses it: {errors:?}");
    }
    if let Err(errors) = support::admit::<K>(value, None) {
        panic!("{file}: the CRD schema refuses it: {errors:#?}");
    }
    let again: K = serde_json::from_value(serde_json::to_value(&object).unwrap()).unwrap();
    assert_eq!(again, object, "{file}: serde round trip changed the object");
}

#[test]
fn every_sample_is_a_valid_object_of_its_kind() {
    let documents = sample_documents();
    assert!(
        documents.len() >= 6,
        "expected at least three Plans and three Subscriptions"
    );
    for (file, value) in &documents {
        if value["kind"] == "Namespace" {
            assert_eq!(value["apiVersion"], "v1", "{file}");
            let name = value["metadata"]["name"].as_str().unwrap_or_default();
            assert!(!name.is_empty(), "{file}: a Namespace without a name");
            continue;
        }
        assert_eq!(value["apiVersion"], "flotilla.dev/v1alpha1", "{file}");
        match value["kind"].as_str().unwrap_or_default() {
            "Plan" => check_sample::<Plan>(file, value, |p| p.spec.validate()),
            "Subscription" => check_sample::<Subscription>(file, value, Subscription::validate),
            "Channel" => check_sample::<Channel>(file, value, |c| c.spec.validate()),
            "Campaign" => check_sample::<Campaign>(file, value, |c| c.spec.validate()),
            "FirmwareRelease" => {
                check_sample::<FirmwareRelease>(file, value, |r| r.spec.validate())
            }
            "Device" => check_sample::<Device>(file, value, |d| d.spec.validate()),
            "FirmwareRollout" => {
                check_sample::<FirmwareRollout>(file, value, |r| r.spec.validate())
            }
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
}

#[test]
fn samples_cover_several_plans_and_subscriptions_on_them() {
    let documents = sample_documents();
    let names_of = |kind: &str| -> BTreeSet<String> {
        documents
            .iter()
            .filter(|(_, v)| v["kind"] == kind)
            .map(|(_, v)| v["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let plans = names_of("Plan");
    assert!(plans.len() >= 3, "{plans:?}");
    assert!(names_of("Subscription").len() >= 3);
    for (file, value) in documents
        .iter()
        .filter(|(_, v)| v["kind"] == "Subscription")
    {
        let plan = value["spec"]["plan"].as_str().unwrap();
        assert!(
            plans.contains(plan),
            "{file} uses plan {plan}, which no sample defines"
        );
    }
}

#[test]
fn the_kustomization_lists_every_sample_file() {
    let text = fs::read_to_string(samples_dir().join("Kustomization"))
        .expect("config/samples/Kustomization");
    let kustomization: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<String> =
        serde_json::from_value(kustomization["resources"].clone()).unwrap();
    let files: BTreeSet<String> = fs::read_dir(samples_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    assert_eq!(
        listed, files,
        "Kustomization resources and the sample files differ"
    );
}

/// kubectl applies the files of a directory in name order and the documents of a file in
/// order, so a namespace must come before the objects in it.
#[test]
fn every_namespace_is_applied_before_the_objects_in_it() {
    let mut namespaces = BTreeSet::new();
    for (file, value) in sample_documents() {
        let metadata = &value["metadata"];
        if value["kind"] == "Namespace" {
            namespaces.insert(metadata["name"].as_str().unwrap().to_owned());
        } else if let Some(namespace) = metadata["namespace"].as_str() {
            assert!(
                namespaces.contains(namespace),
                "{file}: {} {} is in namespace {namespace}, which no earlier sample creates",
                value["kind"],
                metadata["name"]
            );
        }
    }
}

#[test]
fn the_ota_samples_roll_a_ready_release_out_to_its_models() {
    let documents = sample_documents();
    let of_kind = |kind: &str| -> Vec<&Value> {
        documents
            .iter()
            .filter(|(_, v)| v["kind"] == kind)
            .map(|(_, v)| v)
            .collect()
    };
    let releases: Vec<FirmwareRelease> = of_kind("FirmwareRelease")
        .into_iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let rollouts: Vec<FirmwareRollout> = of_kind("FirmwareRollout")
        .into_iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    assert!(!rollouts.is_empty(), "a FirmwareRollout sample");
    for rollout in &rollouts {
        let release = releases
            .iter()
            .find(|r| {
                r.metadata.name.as_deref() == Some(rollout.spec.release.as_str())
                    && r.metadata.namespace == rollout.metadata.namespace
            })
            .unwrap_or_else(|| {
                panic!(
                    "rollout {:?} uses release {}, which no sample defines in its namespace",
                    rollout.metadata.name, rollout.spec.release
                )
            });
        assert!(release.spec.compatible_models.len() >= 2);
        assert_eq!(rollout.spec.waves.last().and_then(|w| w.percent), Some(100));
    }
}
