//! Who is held out and who gets which variant: a hash of campaign and recipient, so the same
//! recipient lands in the same group after a restart, a re-run of the campaign (same namespace
//! and name) or on another replica, with no state to store.
//!
//! Two independent draws come from one SHA-256: the first 8 bytes decide the holdout, the next
//! 8 the variant, so the variant split among those not held out follows the weights whatever
//! the holdout percentage.

use sha2::{Digest, Sha256};

/// Resolution of the holdout draw: holdout percentages are whole numbers, so 10,000 buckets
/// leave no rounding bias.
const HOLDOUT_BUCKETS: u64 = 10_000;

/// The group a recipient is allocated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// In the control group: receives nothing, counted as held out.
    HeldOut,
    /// Receives the variant at this index of the campaign's variants (0 when it has none).
    Variant(usize),
}

/// Why a campaign's variants cannot be allocated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocationError {
    /// Every variant has weight 0.
    #[error("spec.variants: the weights sum to zero; give at least one variant a weight above 0")]
    ZeroWeights,
    /// The holdout percentage is outside 0–100.
    #[error("spec.audience.holdoutPercent: {0} is outside 0–100")]
    Holdout(i32),
}

/// The allocation of one campaign.
#[derive(Clone, Debug)]
pub struct Allocation {
    campaign: String,
    holdout_buckets: u64,
    /// Cumulative weights; empty for a campaign without variants.
    cumulative: Vec<u64>,
}

impl Allocation {
    /// `campaign` identifies the campaign across re-runs (`namespace/name`); `weights` are the
    /// variants' in order.
    pub fn new(
        campaign: impl Into<String>,
        holdout_percent: i32,
        weights: &[i32],
    ) -> Result<Self, AllocationError> {
        if !(0..=100).contains(&holdout_percent) {
            return Err(AllocationError::Holdout(holdout_percent));
        }
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut total = 0u64;
        for weight in weights {
            total += u64::try_from(*weight).unwrap_or(0);
            cumulative.push(total);
        }
        if !weights.is_empty() && total == 0 {
            return Err(AllocationError::ZeroWeights);
        }
        Ok(Self {
            campaign: campaign.into(),
            holdout_buckets: holdout_percent as u64 * HOLDOUT_BUCKETS / 100,
            cumulative,
        })
    }

    /// The group of `recipient` (a Subscription's name).
    pub fn group(&self, recipient: &str) -> Group {
        let digest = Sha256::new()
            .chain_update(self.campaign.as_bytes())
            .chain_update([0])
            .chain_update(recipient.as_bytes())
            .finalize();
        let draw = |at: usize| u64::from_be_bytes(digest[at..at + 8].try_into().expect("8 bytes"));
        if draw(0) % HOLDOUT_BUCKETS < self.holdout_buckets {
            return Group::HeldOut;
        }
        let Some(&total) = self.cumulative.last() else {
            return Group::Variant(0);
        };
        let point = draw(8) % total;
        Group::Variant(self.cumulative.partition_point(|&end| end <= point))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(allocation: &Allocation, recipients: usize, variants: usize) -> (usize, Vec<usize>) {
        let mut held_out = 0;
        let mut counts = vec![0; variants.max(1)];
        for i in 0..recipients {
            match allocation.group(&format!("tenant-{i:06}")) {
                Group::HeldOut => held_out += 1,
                Group::Variant(v) => counts[v] += 1,
            }
        }
        (held_out, counts)
    }

    #[test]
    fn over_100000_recipients_the_split_is_within_1_percent_of_the_weights() {
        let allocation = Allocation::new("default/spring-launch", 10, &[50, 30, 20]).unwrap();
        let n = 100_000;
        let (held_out, counts) = shares(&allocation, n, 3);
        let within = |got: usize, want: f64, of: usize| {
            let share = got as f64 / of as f64;
            assert!((share - want).abs() < 0.01, "{share} vs {want}");
        };
        within(held_out, 0.10, n);
        let sent = n - held_out;
        within(counts[0], 0.5, sent);
        within(counts[1], 0.3, sent);
        within(counts[2], 0.2, sent);
    }

    #[test]
    fn the_same_recipient_lands_in_the_same_group_every_time() {
        let a = Allocation::new("ns/c", 25, &[1, 1]).unwrap();
        let b = Allocation::new("ns/c", 25, &[1, 1]).unwrap();
        for i in 0..1000 {
            let r = format!("r{i}");
            assert_eq!(a.group(&r), b.group(&r));
        }
        // Another campaign draws afresh.
        let other = Allocation::new("ns/other", 25, &[1, 1]).unwrap();
        let differ = (0..1000)
            .filter(|i| a.group(&format!("r{i}")) != other.group(&format!("r{i}")))
            .count();
        assert!(differ > 200, "{differ}");
    }

    #[test]
    fn zero_weight_variants_get_nobody_and_edges_hold() {
        let a = Allocation::new("ns/c", 0, &[0, 5, 0]).unwrap();
        let (held_out, counts) = shares(&a, 2000, 3);
        assert_eq!((held_out, counts[0], counts[2]), (0, 0, 0));
        let all = Allocation::new("ns/c", 100, &[1]).unwrap();
        assert_eq!(shares(&all, 500, 1).0, 500);
        let plain = Allocation::new("ns/c", 0, &[]).unwrap();
        assert_eq!(shares(&plain, 500, 0).1, [500]);
        assert_eq!(
            Allocation::new("ns/c", 0, &[0, 0]).unwrap_err(),
            AllocationError::ZeroWeights
        );
        assert_eq!(
            Allocation::new("ns/c", 101, &[]).unwrap_err(),
            AllocationError::Holdout(101)
        );
    }

    #[test]
    fn raising_the_holdout_only_moves_recipients_into_it() {
        let low = Allocation::new("ns/c", 5, &[1, 1]).unwrap();
        let high = Allocation::new("ns/c", 20, &[1, 1]).unwrap();
        for i in 0..5000 {
            let r = format!("r{i}");
            match (low.group(&r), high.group(&r)) {
                (Group::HeldOut, g) => assert_eq!(g, Group::HeldOut),
                (g, Group::HeldOut) => assert!(matches!(g, Group::Variant(_))),
                (a, b) => assert_eq!(a, b, "variant kept"),
            }
        }
    }
}
