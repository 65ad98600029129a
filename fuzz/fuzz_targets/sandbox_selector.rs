//! Label and field selectors as the sandbox parses them from `?labelSelector=` and
//! `?fieldSelector=`: never a panic, and what parses prints as a selector that parses back
//! to the same requirements.
#![no_main]

use flotilla_sandbox::selector::{
    FieldSelector, LabelSelector, label_value_errors, qualified_name_errors,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|input: &str| {
    let object = json!({
        "metadata": {"name": "sensor-0001", "namespace": "fleet",
                     "labels": {"model": "sensor-v2", "flotilla.dev/ring": "canary", "tier": ""}},
        "involvedObject": {"name": "sensor-0001"},
    });
    if let Ok(selector) = LabelSelector::parse(input) {
        let _ = selector.matches_object(&object);
        let printed = selector.to_string();
        let again = LabelSelector::parse(&printed).unwrap_or_else(|e| {
            panic!(
                "{input:?} prints as {printed:?}, which does not parse: {}",
                e.0
            )
        });
        assert_eq!(
            again, selector,
            "{input:?} → {printed:?} reads back differently"
        );
    }
    if let Ok(selector) = FieldSelector::parse_with_fields(input, &["involvedObject.name"]) {
        let _ = selector.matches(&object);
        let _ = selector.required_value("metadata.name");
        let printed = selector.to_string();
        let again = FieldSelector::parse_with_fields(&printed, &["involvedObject.name"])
            .unwrap_or_else(|e| {
                panic!(
                    "{input:?} prints as {printed:?}, which does not parse: {}",
                    e.0
                )
            });
        // Terms are kept in the order of their text, which escaping may change.
        let sorted = |s: &FieldSelector| {
            let mut terms = s.terms().to_vec();
            terms.sort();
            terms
        };
        assert_eq!(
            sorted(&again),
            sorted(&selector),
            "{input:?} → {printed:?} reads back differently"
        );
    }
    let _ = qualified_name_errors(input);
    let _ = label_value_errors(input);
});
