//! The sandbox's PATCH formats and server-side apply on arbitrary objects. The first byte
//! picks the format (bits 0–1), the list rules (bits 2–3) and `force` (bit 7); the rest is a
//! JSON array `[live, patch]`. Never a panic; a refused patch leaves the object unchanged;
//! re-applying the configuration an apply produced changes nothing.
#![no_main]

use flotilla_sandbox::apply::{ApplyRequest, server_side_apply};
use flotilla_sandbox::list_type::{ListTypes, MetadataListTypes, builtin_list_types};
use flotilla_sandbox::patch::{json_patch, merge_patch, strategic_merge_patch};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const NOW: &str = "2030-01-01T00:00:00Z";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let Ok(Value::Array(pair)) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let [live, patch] = <[Value; 2]>::try_from(pair).unwrap_or([Value::Null, Value::Null]);
    let lists: Box<dyn ListTypes> = match (selector >> 2) & 3 {
        0 => Box::new(MetadataListTypes),
        1 => builtin_list_types("", "Pod"),
        2 => builtin_list_types("apps", "Deployment"),
        _ => builtin_list_types("", "Service"),
    };
    match selector & 3 {
        0 => {
            let mut target = live;
            merge_patch(&mut target, &patch);
        }
        1 => {
            let mut target = live.clone();
            if json_patch(&mut target, &patch).is_err() {
                assert_eq!(target, live, "a refused JSON patch changed the object");
            }
        }
        2 => {
            let mut target = live.clone();
            if strategic_merge_patch(&mut target, &patch, lists.as_ref()).is_err() {
                assert_eq!(
                    target, live,
                    "a refused strategic merge patch changed the object"
                );
            }
        }
        _ => apply(live, &patch, lists.as_ref(), selector & 0x80 != 0),
    }
});

fn apply(live: Value, applied: &Value, lists: &dyn ListTypes, force: bool) {
    let live = (!live.is_null()).then_some(live);
    let request = |live| ApplyRequest {
        live,
        applied,
        manager: "fuzz",
        force,
        subresource: None,
        lists,
        now: NOW,
    };
    let Ok(merged) = server_side_apply(request(live.as_ref())) else {
        return;
    };
    // The same configuration again, by the same manager: nothing left to change.
    let again = server_side_apply(request(Some(&merged)))
        .unwrap_or_else(|e| panic!("re-applying the same configuration failed: {e}"));
    assert_eq!(
        again, merged,
        "re-applying the same configuration changed the object"
    );
}
