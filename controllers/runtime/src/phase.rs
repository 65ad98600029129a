//! Phase state machines: the trait (defined beside the API types in `flotilla_crds::phase`), the
//! phase metric and the transition-table test.
//!
//! Every kind's `status.phase` is an explicit enum whose legal moves are written down once, in
//! [`Phase::allows`]. Controllers compute the phase they want and go through
//! [`Phase::transition`], which refuses anything else, so a bug or a hand-edited status can
//! never silently walk an object through an impossible lifecycle.

pub use flotilla_crds::phase::{IllegalTransition, Phase};

/// Counts phases for `flotilla_objects_by_phase`: every phase appears (zero if empty), objects
/// without a phase yet count as [`Phase::INITIAL`].
pub fn census<P: Phase>(phases: impl IntoIterator<Item = Option<P>>) -> Vec<(&'static str, i64)> {
    let mut counts: Vec<(&'static str, i64)> = P::ALL.iter().map(|p| (p.as_str(), 0)).collect();
    for phase in phases {
        let phase = phase.unwrap_or(P::INITIAL);
        if let Some(slot) = counts.iter_mut().find(|(name, _)| *name == phase.as_str()) {
            slot.1 += 1;
        }
    }
    counts
}

/// Checks a phase machine against its full table: every pair in `legal` (distinct phases) must
/// be allowed, every other distinct pair refused, and self-transitions always allowed.
/// Use it in each kind's `phase.rs` tests so that the table in the test is the specification.
pub fn assert_transition_table<P: Phase>(legal: &[(P, P)]) {
    for &(from, to) in legal {
        assert_ne!(from, to, "list only moves between different phases");
    }
    for &from in P::ALL {
        for &to in P::ALL {
            let expected = from == to || legal.contains(&(from, to));
            let actual = from.transition(to);
            if expected {
                assert_eq!(actual, Ok(to), "{from:?} -> {to:?} must be legal");
            } else {
                assert_eq!(
                    actual,
                    Err(IllegalTransition { from, to }),
                    "{from:?} -> {to:?} must be refused"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small machine to test the trait's provided behaviour.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Light {
        Off,
        On,
        Broken,
    }

    impl Phase for Light {
        const ALL: &'static [Self] = &[Light::Off, Light::On, Light::Broken];
        const INITIAL: Self = Light::Off;

        fn as_str(self) -> &'static str {
            match self {
                Light::Off => "Off",
                Light::On => "On",
                Light::Broken => "Broken",
            }
        }

        fn allows(self, next: Self) -> bool {
            matches!(
                (self, next),
                (Light::Off, Light::On) | (Light::On, Light::Off) | (_, Light::Broken)
            )
        }
    }

    #[test]
    fn the_table_is_enforced() {
        assert_transition_table(&[
            (Light::Off, Light::On),
            (Light::On, Light::Off),
            (Light::Off, Light::Broken),
            (Light::On, Light::Broken),
        ]);
    }

    #[test]
    fn refusals_name_both_phases() {
        let refused = Light::Broken.transition(Light::On).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "illegal phase transition from Broken to On"
        );
    }

    #[test]
    fn phases_parse_from_their_status_string() {
        assert_eq!(Light::parse("On"), Some(Light::On));
        assert_eq!(Light::parse("on"), None);
    }

    #[test]
    fn census_counts_every_phase_and_defaults_to_initial() {
        let counts = census([Some(Light::On), None, Some(Light::On), Some(Light::Broken)]);
        assert_eq!(counts, vec![("Off", 1), ("On", 2), ("Broken", 1)]);
    }
}
