//! Durations and times of day: `GoDuration` (the CRDs' `metav1.Duration` fields), the
//! runtime's `parse_duration` (flags and Helm values), `TimeOfDay` and time zone names. Never
//! a panic; what parses is non-negative and reads back the same.
#![no_main]

use flotilla_crds::common::{GoDuration, TimeOfDay, validate_time_zone};
use flotilla_runtime::config::parse_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Ok(duration) = input.parse::<GoDuration>() {
        assert_eq!(duration.as_str(), input);
        let _ = duration.as_std();
        // What the runtime accepts for the same text agrees on the length of time, to the
        // rounding of its float arithmetic.
        if let Ok(runtime) = parse_duration(input) {
            let (a, b) = (duration.as_std().as_secs_f64(), runtime.as_secs_f64());
            assert!(
                (a - b).abs() <= 1e-6 * a.max(1.0),
                "{input:?}: {a} s vs {b} s"
            );
        }
        // Round trip through JSON, as objects are stored.
        let json = serde_json::to_string(&duration).expect("serializes");
        let back: GoDuration = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, duration);
    }
    let _ = parse_duration(input);
    if let Some(time) = TimeOfDay::parse(input) {
        assert!(time.minutes_since_midnight() < 24 * 60);
    }
    let _ = validate_time_zone("spec.timeZone", input);
});
