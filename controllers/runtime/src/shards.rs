//! Lines of text persisted across several ConfigMaps: an ordered list split over `data` maps
//! ("shards") of at most [`SHARD_DATA_LIMIT`] bytes each, so that a list of 100,000 entries
//! fits with every object far below the 1 MiB limit, and the owner's status stays small.
//!
//! A shard's `data` has two keys: `meta` (JSON: format, index, shard count, lines in this shard
//! and in all, the SHA-256 of this shard's lines and of the whole list) and `lines` (one line
//! each, `\n`-terminated; lines must not contain `\n`). Decoding checks everything and names
//! the shard at fault, so an error points at one object. The caller owns the line format and
//! its version (`format`): shards written under another format do not decode.
//!
//! The OTA rollout's target shards (`flotilla-ota` `rollout/shards.rs`) predate this module
//! and keep their own format (a per-shard cohort table).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most bytes of `data` (keys and values) in one shard: a quarter of the 1 MiB object limit,
/// leaving room for metadata and for the apiserver's own overhead.
pub const SHARD_DATA_LIMIT: usize = 256 * 1024;
/// Room kept for the `meta` entry.
const META_RESERVE: usize = 1024;
const META: &str = "meta";
const LINES: &str = "lines";

/// One shard: the `data` of one ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Position of the shard, from 0 (the caller names the ConfigMap after it).
    pub index: usize,
    /// The ConfigMap's `data`.
    pub data: BTreeMap<String, String>,
}

impl Shard {
    /// Bytes of `data` (keys and values), as counted against the object size.
    pub fn data_bytes(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// What a shard records about itself and its set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardMeta {
    /// The caller's line format.
    pub format: u32,
    /// This shard's index.
    pub index: usize,
    /// How many shards the set has.
    pub count: usize,
    /// Lines in this shard.
    pub lines: usize,
    /// Lines in all shards.
    pub total: usize,
    /// Hex SHA-256 of this shard's `lines` value.
    pub sha256: String,
    /// Hex SHA-256 of the whole list (so shards of two different lists never mix).
    pub set_sha256: String,
}

/// Why a set of shards does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// No shard at all.
    #[error("no shards")]
    NoShards,
    /// A shard the others count on is not there.
    #[error("shard {index} of {count} is missing")]
    Missing {
        /// The missing shard.
        index: usize,
        /// The shard count the others record.
        count: usize,
    },
    /// Two shards claim the same index.
    #[error("shard {index} is present twice")]
    Duplicate {
        /// The index.
        index: usize,
    },
    /// A shard is damaged.
    #[error("shard {index} is corrupt: {problem}")]
    Corrupt {
        /// The shard.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// Shards disagree (count, total, or they belong to different lists).
    #[error("shard {index} does not match the others: {problem}")]
    Inconsistent {
        /// The shard.
        index: usize,
        /// What disagrees.
        problem: String,
    },
}

impl ShardError {
    /// The shard at fault, if one is.
    pub fn index(&self) -> Option<usize> {
        match self {
            ShardError::NoShards => None,
            ShardError::Missing { index, .. }
            | ShardError::Duplicate { index }
            | ShardError::Corrupt { index, .. }
            | ShardError::Inconsistent { index, .. } => Some(*index),
        }
    }
}

/// Hex of `bytes`, lower case.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn set_digest<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// Splits the ordered `lines` into shards of at most [`SHARD_DATA_LIMIT`] bytes. An empty
/// list gives one empty shard, so that "written, nothing in it" differs from "never written".
///
/// # Panics
/// When a line contains `\n`, or is longer than a shard can hold (the caller bounds its
/// fields far below that).
pub fn encode_lines<S: AsRef<str>>(format: u32, lines: &[S]) -> Vec<Shard> {
    let budget = SHARD_DATA_LIMIT - META_RESERVE - LINES.len();
    let mut bodies = vec![(String::new(), 0usize)];
    for line in lines {
        let line = line.as_ref();
        assert!(!line.contains('\n'), "a shard line contains a newline");
        assert!(line.len() < budget, "a shard line is longer than a shard");
        let (body, count) = bodies.last().expect("one body at least");
        if *count > 0 && body.len() + line.len() + 1 > budget {
            bodies.push((String::new(), 0));
        }
        let (body, count) = bodies.last_mut().expect("one body at least");
        body.push_str(line);
        body.push('\n');
        *count += 1;
    }
    let count = bodies.len();
    let set_sha256 = set_digest(lines.iter().map(AsRef::as_ref));
    bodies
        .into_iter()
        .enumerate()
        .map(|(index, (body, in_shard))| {
            let meta = ShardMeta {
                format,
                index,
                count,
                lines: in_shard,
                total: lines.len(),
                sha256: digest(&body),
                set_sha256: set_sha256.clone(),
            };
            let data = BTreeMap::from([
                (
                    META.to_owned(),
                    serde_json::to_string(&meta).expect("meta serializes"),
                ),
                (LINES.to_owned(), body),
            ]);
            Shard { index, data }
        })
        .collect()
}

/// The `meta` of one shard, checked against `format` and the shard's own index and lines, so
/// that a reader can fetch shard 0 first and then the rest by index.
pub fn shard_meta(format: u32, shard: &Shard) -> Result<ShardMeta, ShardError> {
    let corrupt = |problem: String| ShardError::Corrupt {
        index: shard.index,
        problem,
    };
    let meta: ShardMeta = shard
        .data
        .get(META)
        .ok_or_else(|| corrupt("no meta entry".into()))
        .and_then(|m| serde_json::from_str(m).map_err(|e| corrupt(format!("meta: {e}"))))?;
    if meta.format != format {
        return Err(corrupt(format!(
            "format {}, expected {format}",
            meta.format
        )));
    }
    if meta.index != shard.index {
        return Err(corrupt(format!("records index {}", meta.index)));
    }
    let body = shard.data.get(LINES).map_or("", String::as_str);
    if digest(body) != meta.sha256 {
        return Err(corrupt("checksum mismatch".into()));
    }
    if body.lines().count() != meta.lines {
        return Err(corrupt(format!(
            "{} lines, meta records {}",
            body.lines().count(),
            meta.lines
        )));
    }
    Ok(meta)
}

/// Reassembles the ordered lines from shards given in any order, shard by shard (the outer
/// index is the shard's), checking that every shard is there once, undamaged, written under
/// `format`, and from the same list.
pub fn decode_lines(format: u32, shards: &[Shard]) -> Result<Vec<Vec<String>>, ShardError> {
    if shards.is_empty() {
        return Err(ShardError::NoShards);
    }
    let mut by_index: BTreeMap<usize, (&Shard, ShardMeta)> = BTreeMap::new();
    for shard in shards {
        let meta = shard_meta(format, shard)?;
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
            Some(format!("records {} lines, another {total}", meta.total))
        } else if meta.set_sha256 != set {
            Some("belongs to a different list".to_owned())
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
    let decoded: Vec<Vec<String>> = by_index
        .values()
        .map(|(shard, _)| {
            shard
                .data
                .get(LINES)
                .map_or("", String::as_str)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    if decoded.iter().map(Vec::len).sum::<usize>() != total
        || set_digest(decoded.iter().flatten().map(String::as_str)) != set
    {
        return Err(ShardError::Inconsistent {
            index: 0,
            problem: "the shards together are not the recorded list".to_owned(),
        });
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0len$}")).collect()
    }

    #[test]
    fn round_trip_and_bounded() {
        let list = lines(30_000, 40);
        let shards = encode_lines(7, &list);
        assert!(shards.len() > 3);
        assert!(shards.iter().all(|s| s.data_bytes() <= SHARD_DATA_LIMIT));
        let decoded = decode_lines(7, &shards).unwrap();
        assert_eq!(decoded.concat(), list);
        assert_eq!(decoded[0].len(), shard_meta(7, &shards[0]).unwrap().lines);
    }

    #[test]
    fn empty_list_is_one_empty_shard() {
        let shards = encode_lines::<&str>(1, &[]);
        assert_eq!(shards.len(), 1);
        assert_eq!(
            decode_lines(1, &shards).unwrap(),
            vec![Vec::<String>::new()]
        );
        assert_eq!(decode_lines(1, &[]).unwrap_err(), ShardError::NoShards);
    }

    #[test]
    fn faults_name_the_shard() {
        let original = encode_lines(1, &lines(30_000, 40));
        let count = original.len();
        let mut missing = original.clone();
        missing.remove(2);
        assert_eq!(
            decode_lines(1, &missing).unwrap_err(),
            ShardError::Missing { index: 2, count }
        );
        let mut edited = original.clone();
        edited[1]
            .data
            .get_mut(LINES)
            .unwrap()
            .replace_range(0..1, "x");
        assert_eq!(decode_lines(1, &edited).unwrap_err().index(), Some(1));
        let mut twice = original.clone();
        twice.push(original[3].clone());
        assert_eq!(
            decode_lines(1, &twice).unwrap_err(),
            ShardError::Duplicate { index: 3 }
        );
        assert!(matches!(
            decode_lines(2, &original).unwrap_err(),
            ShardError::Corrupt { index: 0, .. }
        ));
        let mut other = lines(30_000, 40);
        other[0] = "y".repeat(40);
        let mut mixed = original.clone();
        mixed[0] = encode_lines(1, &other)[0].clone();
        assert!(matches!(
            decode_lines(1, &mixed).unwrap_err(),
            ShardError::Inconsistent { .. }
        ));
    }
}
