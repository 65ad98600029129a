//! The target set, persisted: the ordered targets of a plan split over ConfigMap `data`
//! maps ("shards") of at most [`SHARD_DATA_LIMIT`] bytes each, so that 100,000 devices fit
//! with every object far below the 1 MiB limit and the rollout's status stays small.
//!
//! A shard's `data` has three keys:
//! - `meta`: JSON — format, this shard's index, the shard count, the number of targets in
//!   this shard and in all shards, the SHA-256 of this shard's `cohorts` and `targets`, and
//!   the SHA-256 of the whole target list (so shards of two different plans never mix);
//! - `cohorts`: one `model<TAB>fromVersion` line per cohort used in this shard;
//! - `targets`: one `name<TAB>cohortLine` line per target, in plan order.
//!
//! Cohorts are written once per shard instead of per device: a fleet has few of them, and
//! they are the longest part of a target.
//!
//! Decoding checks everything and names the shard at fault; the controller names its
//! ConfigMaps after the index, so an error points at one object.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::plan::{Target, hex};

/// Most bytes of `data` (keys and values) in one shard: a quarter of the 1 MiB object limit,
/// leaving room for metadata and for the apiserver's own overhead.
pub const SHARD_DATA_LIMIT: usize = 256 * 1024;
/// Room kept for the `meta` entry.
const META_RESERVE: usize = 1024;
const FORMAT: u32 = 1;

/// One shard: the `data` of one ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Position of the shard, from 0.
    pub index: usize,
    /// The ConfigMap's `data`.
    pub data: BTreeMap<String, String>,
}

/// Why a set of shards does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// No shard at all.
    #[error("no target shards")]
    NoShards,
    /// A shard the others count on is not there.
    #[error("target shard {index} of {count} is missing")]
    Missing {
        /// The missing shard.
        index: usize,
        /// The shard count the others record.
        count: usize,
    },
    /// Two shards claim the same index.
    #[error("target shard {index} is present twice")]
    Duplicate {
        /// The index.
        index: usize,
    },
    /// A shard is damaged.
    #[error("target shard {index} is corrupt: {problem}")]
    Corrupt {
        /// The shard.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// Shards disagree (count, total, or they belong to different plans).
    #[error("target shard {index} does not match the others: {problem}")]
    Inconsistent {
        /// The shard.
        index: usize,
        /// What disagrees.
        problem: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    format: u32,
    index: usize,
    count: usize,
    targets: usize,
    total: usize,
    sha256: String,
    set_sha256: String,
}

struct Draft {
    cohorts: String,
    targets: String,
    lines: HashMap<(String, String), usize>,
    count: usize,
}

impl Draft {
    fn new() -> Self {
        Self {
            cohorts: String::new(),
            targets: String::new(),
            lines: HashMap::new(),
            count: 0,
        }
    }

    fn bytes(&self) -> usize {
        "cohorts".len() + "targets".len() + self.cohorts.len() + self.targets.len()
    }

    /// Bytes `target` adds to this shard.
    fn cost(&self, target: &Target) -> usize {
        let cohort = (target.model.clone(), target.from_version.clone());
        let (line, new) = match self.lines.get(&cohort) {
            Some(&line) => (line, 0),
            None => (
                self.lines.len(),
                target.model.len() + target.from_version.len() + 2,
            ),
        };
        target.name.len() + 2 + digits(line) + new
    }

    fn push(&mut self, target: &Target) {
        let next = self.lines.len();
        let key = (target.model.clone(), target.from_version.clone());
        let line = *self.lines.entry(key).or_insert_with(|| {
            self.cohorts.push_str(&target.model);
            self.cohorts.push('\t');
            self.cohorts.push_str(&target.from_version);
            self.cohorts.push('\n');
            next
        });
        self.targets.push_str(&target.name);
        self.targets.push('\t');
        self.targets.push_str(&line.to_string());
        self.targets.push('\n');
        self.count += 1;
    }
}

fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn shard_digest(cohorts: &str, targets: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(cohorts.as_bytes());
    hasher.update([0]);
    hasher.update(targets.as_bytes());
    hex(&hasher.finalize())
}

fn set_digest<'a>(targets: impl IntoIterator<Item = &'a Target>) -> String {
    let mut hasher = Sha256::new();
    for target in targets {
        for part in [&target.name, &target.model, &target.from_version] {
            hasher.update(part.as_bytes());
            hasher.update(b"\t");
        }
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// Splits the ordered targets into shards. An empty list gives one empty shard, so that
/// "planned, nobody to update" differs from "never planned".
pub fn encode_shards(targets: &[Target]) -> Vec<Shard> {
    let budget = SHARD_DATA_LIMIT - META_RESERVE;
    let mut drafts = vec![Draft::new()];
    for target in targets {
        let current = drafts.last().expect("one draft at least");
        if current.count > 0 && current.bytes() + current.cost(target) > budget {
            drafts.push(Draft::new());
        }
        drafts.last_mut().expect("one draft at least").push(target);
    }
    let count = drafts.len();
    let set_sha256 = set_digest(targets);
    drafts
        .into_iter()
        .enumerate()
        .map(|(index, draft)| {
            let meta = Meta {
                format: FORMAT,
                index,
                count,
                targets: draft.count,
                total: targets.len(),
                sha256: shard_digest(&draft.cohorts, &draft.targets),
                set_sha256: set_sha256.clone(),
            };
            let data = BTreeMap::from([
                (
                    "meta".to_owned(),
                    serde_json::to_string(&meta).expect("meta serializes"),
                ),
                ("cohorts".to_owned(), draft.cohorts),
                ("targets".to_owned(), draft.targets),
            ]);
            Shard { index, data }
        })
        .collect()
}

/// Bytes a shard's `data` takes (keys and values), as counted against the object size.
pub fn data_bytes(shard: &Shard) -> usize {
    shard.data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// How many shards the plan of `shard` has (read from its `meta`), so that a reader can
/// fetch shard 0 first and then the rest by index.
pub fn shard_count(shard: &Shard) -> Result<usize, ShardError> {
    let meta = shard.data.get("meta").ok_or_else(|| ShardError::Corrupt {
        index: shard.index,
        problem: "no meta".into(),
    })?;
    let meta: Meta = serde_json::from_str(meta).map_err(|e| ShardError::Corrupt {
        index: shard.index,
        problem: format!("meta: {e}"),
    })?;
    Ok(meta.count)
}

/// Reassembles the ordered targets from shards given in any order, checking that every
/// shard is there once, undamaged, and from the same plan.
pub fn decode_shards(shards: &[Shard]) -> Result<Vec<Target>, ShardError> {
    if shards.is_empty() {
        return Err(ShardError::NoShards);
    }
    let mut by_index: BTreeMap<usize, (&Shard, Meta)> = BTreeMap::new();
    for shard in shards {
        let corrupt = |problem: &str| ShardError::Corrupt {
            index: shard.index,
            problem: problem.to_owned(),
        };
        let meta: Meta = shard
            .data
            .get("meta")
            .ok_or_else(|| corrupt("no meta entry"))
            .and_then(|m| serde_json::from_str(m).map_err(|e| corrupt(&format!("meta: {e}"))))?;
        if meta.format != FORMAT {
            return Err(corrupt(&format!("unknown format {}", meta.format)));
        }
        if meta.index != shard.index {
            return Err(corrupt(&format!("records index {}", meta.index)));
        }
        let cohorts = shard.data.get("cohorts").map_or("", String::as_str);
        let targets = shard.data.get("targets").map_or("", String::as_str);
        if shard_digest(cohorts, targets) != meta.sha256 {
            return Err(corrupt("checksum mismatch"));
        }
        if by_index.insert(shard.index, (shard, meta)).is_some() {
            return Err(ShardError::Duplicate { index: shard.index });
        }
    }
    let (_, (_, first)) = by_index.first_key_value().expect("not empty");
    let (count, total, set) = (first.count, first.total, first.set_sha256.clone());
    for (&index, (_, meta)) in &by_index {
        let problem = if meta.count != count {
            Some(format!("records {} shards, another {count}", meta.count))
        } else if meta.total != total {
            Some(format!("records {} targets, another {total}", meta.total))
        } else if meta.set_sha256 != set {
            Some("belongs to a different target set".to_owned())
        } else if index >= count {
            Some(format!("index beyond the shard count {count}"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ShardError::Inconsistent { index, problem });
        }
    }
    if let Some(index) = (0..count).find(|i| !by_index.contains_key(i)) {
        return Err(ShardError::Missing { index, count });
    }
    let mut targets = Vec::with_capacity(total);
    for (&index, (shard, meta)) in &by_index {
        let corrupt = |problem: String| ShardError::Corrupt { index, problem };
        let cohorts: Vec<(&str, &str)> = shard
            .data
            .get("cohorts")
            .map_or("", String::as_str)
            .lines()
            .map(|line| line.split_once('\t').ok_or(line))
            .collect::<Result<_, _>>()
            .map_err(|line| corrupt(format!("cohort line {line:?}")))?;
        let before = targets.len();
        for line in shard.data.get("targets").map_or("", String::as_str).lines() {
            let (name, cohort) = line
                .split_once('\t')
                .and_then(|(name, c)| Some((name, cohorts.get(c.parse::<usize>().ok()?)?)))
                .ok_or_else(|| corrupt(format!("target line {line:?}")))?;
            targets.push(Target {
                name: name.to_owned(),
                model: cohort.0.to_owned(),
                from_version: cohort.1.to_owned(),
            });
        }
        if targets.len() - before != meta.targets {
            return Err(corrupt(format!(
                "{} targets, meta records {}",
                targets.len() - before,
                meta.targets
            )));
        }
    }
    if targets.len() != total || set_digest(&targets) != set {
        return Err(ShardError::Inconsistent {
            index: 0,
            problem: "the shards together are not the recorded target set".to_owned(),
        });
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(name: &str, model: &str, from: &str) -> Target {
        Target {
            name: name.into(),
            model: model.into(),
            from_version: from.into(),
        }
    }

    fn fleet(n: usize, name_len: usize) -> Vec<Target> {
        (0..n)
            .map(|i| {
                let suffix = format!("-{i:07}");
                let name = format!("{}{suffix}", "d".repeat(name_len - suffix.len()));
                let model = ["sensor-v2", "gw-200", "cam-1"][i % 3];
                let from = ["2.3.0", "2.2.0-rc.1+build.77"][i % 2];
                target(&name, model, from)
            })
            .collect()
    }

    #[test]
    fn a_hundred_thousand_devices_with_63_char_names_fit() {
        let targets = fleet(100_000, 63);
        let shards = encode_shards(&targets);
        for shard in &shards {
            assert!(
                data_bytes(shard) <= SHARD_DATA_LIMIT,
                "shard {} has {} bytes",
                shard.index,
                data_bytes(shard)
            );
        }
        // ~66 bytes a device: about 26 shards, not hundreds.
        assert!((20..40).contains(&shards.len()), "{} shards", shards.len());
        assert_eq!(decode_shards(&shards).unwrap(), targets);
    }

    #[test]
    fn worst_case_cohorts_still_fit() {
        // Every device its own cohort, longest names, models and versions.
        let targets: Vec<Target> = (0..3_000)
            .map(|i| {
                let n = format!("{i:06}");
                target(
                    &format!("{}{n}", "n".repeat(247)),
                    &format!("{}{n}", "m".repeat(57)),
                    &format!("1.0.0-{}{n}", "r".repeat(116)),
                )
            })
            .collect();
        let shards = encode_shards(&targets);
        assert!(shards.iter().all(|s| data_bytes(s) <= SHARD_DATA_LIMIT));
        assert_eq!(decode_shards(&shards).unwrap(), targets);
    }

    #[test]
    fn empty_target_list_is_one_empty_shard() {
        let shards = encode_shards(&[]);
        assert_eq!(shards.len(), 1);
        assert_eq!(decode_shards(&shards).unwrap(), vec![]);
        assert_eq!(decode_shards(&[]).unwrap_err(), ShardError::NoShards);
    }

    #[test]
    fn order_of_the_shards_given_does_not_matter() {
        let targets = fleet(20_000, 63);
        let mut shards = encode_shards(&targets);
        assert!(shards.len() > 2);
        shards.reverse();
        assert_eq!(decode_shards(&shards).unwrap(), targets);
    }

    #[test]
    fn a_missing_shard_is_named() {
        let mut shards = encode_shards(&fleet(20_000, 63));
        let count = shards.len();
        shards.remove(1);
        assert_eq!(
            decode_shards(&shards).unwrap_err(),
            ShardError::Missing { index: 1, count }
        );
        // The last one missing too: the count recorded in the others tells.
        let mut shards = encode_shards(&fleet(20_000, 63));
        shards.pop();
        assert_eq!(
            decode_shards(&shards).unwrap_err(),
            ShardError::Missing {
                index: count - 1,
                count
            }
        );
    }

    #[test]
    fn corrupt_shards_are_named() {
        let original = encode_shards(&fleet(20_000, 63));
        let mut edited = original.clone();
        let targets = edited[2].data.get_mut("targets").unwrap();
        targets.replace_range(0..1, "x");
        assert!(matches!(
            decode_shards(&edited).unwrap_err(),
            ShardError::Corrupt { index: 2, ref problem } if problem == "checksum mismatch"
        ));
        let mut no_meta = original.clone();
        no_meta[1].data.remove("meta");
        assert!(matches!(
            decode_shards(&no_meta).unwrap_err(),
            ShardError::Corrupt { index: 1, .. }
        ));
        let mut renamed = original.clone();
        renamed[0].index = 5;
        assert!(matches!(
            decode_shards(&renamed).unwrap_err(),
            ShardError::Corrupt { index: 5, .. }
        ));
        let mut twice = original.clone();
        twice.push(original[0].clone());
        assert_eq!(
            decode_shards(&twice).unwrap_err(),
            ShardError::Duplicate { index: 0 }
        );
    }

    #[test]
    fn shards_of_different_plans_do_not_mix() {
        let a = encode_shards(&fleet(20_000, 63));
        let mut other_fleet = fleet(20_000, 63);
        other_fleet[0].from_version = "0.9.0".into();
        let b = encode_shards(&other_fleet);
        assert_eq!(a.len(), b.len());
        let mut mixed = a.clone();
        mixed[0] = b[0].clone();
        assert!(matches!(
            decode_shards(&mixed).unwrap_err(),
            ShardError::Inconsistent { .. }
        ));
    }

    fn targets_strategy() -> impl Strategy<Value = Vec<Target>> {
        proptest::collection::vec(
            (
                "[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?",
                prop_oneof![Just("sensor-v2"), Just("gw-200"), Just("x")],
                "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(-rc\\.[0-9])?",
            ),
            0..300,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .map(|(name, model, from)| target(&name, model, &from))
                .collect()
        })
    }

    proptest! {
        // Each case builds and hashes up to 300 targets; 64 cases keep debug builds quick.
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip(targets in targets_strategy()) {
            let shards = encode_shards(&targets);
            prop_assert!(shards.iter().all(|s| data_bytes(s) <= SHARD_DATA_LIMIT));
            prop_assert_eq!(decode_shards(&shards).unwrap(), targets);
        }
    }
}
