//! Every kind's spec from arbitrary JSON, through the checks the controllers run on it: the
//! first byte picks the kind, the rest is the JSON document. Deserializing may fail; what
//! deserializes must validate without a panic, and a FirmwareRollout that validates must
//! plan (wave boundaries, maintenance window, retry backoff) without one.
#![no_main]

use flotilla_crds::{
    CampaignSpec, ChannelSpec, DeviceSpec, FirmwareReleaseSpec, FirmwareRolloutSpec, PlanSpec,
    Subscription, SubscriptionSpec,
};
use flotilla_ota::rollout::assign::retry_backoff;
use flotilla_ota::rollout::plan::wave_ends;
use flotilla_ota::rollout::window::Window;
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => drop(check::<PlanSpec>(json, PlanSpec::validate)),
        1 => drop(check::<SubscriptionSpec>(json, SubscriptionSpec::validate)),
        // The whole object: a Subscription without namespaces serves the one of its name.
        2 => drop(check::<Subscription>(json, Subscription::validate)),
        3 => drop(check::<FirmwareReleaseSpec>(
            json,
            FirmwareReleaseSpec::validate,
        )),
        4 => drop(check::<DeviceSpec>(json, DeviceSpec::validate)),
        5 => drop(check::<ChannelSpec>(json, ChannelSpec::validate)),
        6 => drop(check::<CampaignSpec>(json, CampaignSpec::validate)),
        _ => {
            if let Some(Ok(())) = check::<FirmwareRolloutSpec>(json, FirmwareRolloutSpec::validate)
            {
                let spec: FirmwareRolloutSpec = serde_json::from_slice(json).expect("parsed once");
                plan_rollout(&spec);
            }
        }
    }
});

fn check<T: serde::de::DeserializeOwned>(
    json: &[u8],
    validate: fn(&T) -> Result<(), Vec<flotilla_crds::SpecError>>,
) -> Option<Result<(), Vec<flotilla_crds::SpecError>>> {
    let value: T = serde_json::from_slice(json).ok()?;
    let verdict = validate(&value);
    if let Err(errors) = &verdict {
        assert!(
            !errors.is_empty(),
            "an invalid spec names at least one problem"
        );
        let _ = flotilla_crds::common::describe_spec_errors(errors);
    }
    Some(verdict)
}

fn plan_rollout(spec: &FirmwareRolloutSpec) {
    for n in [0, 1, 7, 100, 100_000] {
        let ends = wave_ends(&spec.waves, n);
        assert_eq!(
            ends.last(),
            Some(&n),
            "the last wave ends at the fleet size"
        );
        assert!(
            ends.windows(2).all(|w| w[0] <= w[1]),
            "waves grow: {ends:?}"
        );
    }
    if let Some(window) = &spec.maintenance_window {
        let window = Window::new(window).expect("a validated maintenance window parses");
        let now = Timestamp::from_second(1_900_000_000).expect("in range");
        if !window.is_open(now) {
            let _ = window.next_opening(now);
        }
    }
    for attempt in [0, 1, 2, 31, 32, u32::MAX] {
        let delay = retry_backoff(&spec.retries, attempt);
        assert!(
            delay
                <= spec
                    .retries
                    .max_backoff
                    .as_std()
                    .max(spec.retries.initial_backoff.as_std())
        );
    }
}
