//! Durations and times of day: `GoDuration` (the CRDs' `metav1.Duration` fields), the
//! runtime's `parse_duration` (flags and Helm values), `TimeOfDay` and time zone names. Never
//! a panic; what parses is non-negative and reads back the same.
#![no_main]

use flotilla_crds::common::{GoDuration, TimeOfDay, validate_time_zone};
use flotilla_runtime::config::parse_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let parsed = input.parse::<GoDuration>();
    if let Ok(duration) = &parsed {
        assert_eq!(duration.as_str(), input);
        // Round trip through JSON, as objects are stored.
        let json = serde_json::to_string(duration).expect("serializes");
        let back: GoDuration = serde_json::from_str(&json).expect("reads back");
        assert_eq!(&back, duration);
    }
    // Flags and Helm values follow the objects' grammar exactly.
    assert_eq!(
        parse_duration(input).ok(),
        parsed.as_ref().ok().map(GoDuration::as_std),
        "{input:?}"
    );
    if let Some(time) = TimeOfDay::parse(input) {
        assert!(time.minutes_since_midnight() < 24 * 60);
    }
    let _ = validate_time_zone("spec.timeZone", input);
});
