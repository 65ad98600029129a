//! Resource quantities (`500m`, `8Gi`, `1e3`) as `ParsedQuantity` reads them: never a panic,
//! and the canonical string reads back as the same value.
#![no_main]

use std::collections::BTreeMap;

use flotilla_crds::ParsedQuantity;
use flotilla_crds::quantity::{is_resource_name, validate_resource_list};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Ok(quantity) = ParsedQuantity::parse(input) {
        let _ = (
            quantity.value(),
            quantity.milli_value(),
            quantity.is_negative(),
        );
        let canonical = quantity.to_canonical_string();
        let again = ParsedQuantity::parse(&canonical)
            .unwrap_or_else(|e| panic!("canonical {canonical:?} of {input:?} does not parse: {e}"));
        assert_eq!(
            again, quantity,
            "{input:?} → {canonical:?} changes the value"
        );
        // Not a fixed point in general: a binary quantity that is not a whole number of Ki
        // prints without suffix ("62.5Ki" → "64000"), which reads back as decimal ("64k"),
        // exactly as apimachinery does.
        let _ = quantity.saturating_add(again);
    }
    // The same text as a resource name and as a whole resource list entry.
    let _ = is_resource_name(input);
    let (name, value) = input.split_once('=').unwrap_or((input, input));
    let list = BTreeMap::from([(name.to_owned(), Quantity(value.to_owned()))]);
    let mut errors = Vec::new();
    let parsed = validate_resource_list("spec.fuzz", &list, &mut errors);
    assert!(
        parsed.len() + errors.len() == 1,
        "{input:?}: one entry, one verdict"
    );
});
