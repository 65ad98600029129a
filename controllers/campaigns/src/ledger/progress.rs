//! Delivery progress: one state per recipient, kept in memory and persisted as one progress
//! shard per audience shard, so that a crash at any point loses at most what was claimed and
//! not yet recorded. Pure: [`super::store`] does the I/O.
//!
//! | State | Code | Next |
//! |---|---|---|
//! | Pending | `.` | Claimed |
//! | Claimed (an attempt may be under way) | `c` | Sent, Waiting, Failed, OptedOut, Skipped |
//! | Waiting (for its retry time, or deferred by quiet hours) | `w` | Claimed |
//! | Sent on channel *n* | `0`–`7` | — |
//! | Failed, OptedOut, Skipped, HeldOut | `f`, `o`, `k`, `h` | — |
//!
//! Protocol: [`DeliveryLedger::claim`] marks a batch Claimed; the claim is persisted (one
//! write, which carries every outcome recorded in that shard so far) before anything is sent;
//! outcomes are recorded in memory and flushed when [`DeliveryLedger::needs_flush`] says so.
//! After a restart every Claimed recipient is claimed again first, under the same message id,
//! so the channel's idempotency key drops what had already gone out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use flotilla_crds::campaign::{ChannelCounts, DeliveryCounts, MAX_CHANNELS, VariantCounts};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::audience::{Audience, Recipient, message_id};
use crate::campaign::allocation::Group;

/// Format of the progress shards (the `format` in their `meta`).
pub const PROGRESS_FORMAT: u32 = 1;
const CHANNELS: usize = MAX_CHANNELS as usize;
/// Distinct failure reasons kept per shard; further ones are counted as [`OTHER_REASON`], so a
/// shard stays bounded whatever the channels answer.
const MAX_REASONS: usize = 32;
const MAX_REASON_LEN: usize = 128;
/// The reason of failures beyond the 31 distinct ones a shard keeps.
pub const OTHER_REASON: &str = "Other";

/// The delivery state of one recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Not attempted yet.
    #[default]
    Pending,
    /// Claimed by a sender: an attempt may be under way, or may have been cut off by a crash.
    Claimed,
    /// An attempt failed transiently; the next one waits for its time.
    Waiting,
    /// Delivered on the channel at this index of the campaign's channels.
    Sent {
        /// The channel's index.
        channel: u8,
    },
    /// Failed for good (permanent error, or retries exhausted).
    Failed,
    /// The recipient opted out before its message was sent.
    OptedOut,
    /// Not sent for another reason (no contact address, Subscription gone).
    Skipped,
    /// In the control group.
    HeldOut,
}

impl Delivery {
    /// Whether nothing more happens to this recipient.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            Delivery::Pending | Delivery::Claimed | Delivery::Waiting
        )
    }

    fn code(self) -> char {
        match self {
            Delivery::Pending => '.',
            Delivery::Claimed => 'c',
            Delivery::Waiting => 'w',
            Delivery::Sent { channel } => char::from(b'0' + channel),
            Delivery::Failed => 'f',
            Delivery::OptedOut => 'o',
            Delivery::Skipped => 'k',
            Delivery::HeldOut => 'h',
        }
    }

    fn from_code(code: char) -> Option<Self> {
        Some(match code {
            '.' => Delivery::Pending,
            'c' => Delivery::Claimed,
            'w' => Delivery::Waiting,
            '0'..='7' => Delivery::Sent {
                channel: code as u8 - b'0',
            },
            'f' => Delivery::Failed,
            'o' => Delivery::OptedOut,
            'k' => Delivery::Skipped,
            'h' => Delivery::HeldOut,
            _ => return None,
        })
    }
}

/// What a sender reports about a claimed recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Delivered on channel `channel`.
    Sent {
        /// The channel's index.
        channel: u8,
    },
    /// Failed transiently; try again at `at`.
    RetryAt {
        /// When the next attempt may start.
        at: Timestamp,
    },
    /// Not attempted (quiet hours, a local-time schedule): wait until `until`, without
    /// counting an attempt.
    Deferred {
        /// When it may be claimed again.
        until: Timestamp,
    },
    /// Failed for good, with a short reason code (`HTTP404`, `SMTP550`).
    Failed {
        /// The reason, counted in the status.
        reason: String,
    },
    /// The recipient opted out (checked at send time).
    OptedOut,
    /// Not sendable (no address, the Subscription is gone), with a reason code.
    Skipped {
        /// The reason.
        reason: String,
    },
}

/// One recipient handed to a sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The recipient's index in the audience.
    pub recipient: usize,
    /// The message id ([`message_id`]): the channel's idempotency key.
    pub message_id: String,
    /// Which attempt this is, from 1; a claim re-sent after a restart keeps its number.
    pub attempt: u16,
    /// Claimed before a restart and never recorded: it may have gone out already.
    pub resent: bool,
    /// `mode: fallback`: the Channel to start at (those before it failed for good).
    pub channel: u8,
}

/// When recorded outcomes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Write once this many outcomes are unwritten.
    pub max_unflushed: usize,
    /// Write once the oldest unwritten outcome is this old.
    pub max_delay: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            max_unflushed: 200,
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Why progress does not load, or a report does not fit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProgressError {
    /// A progress shard the audience has is not there.
    #[error("progress shard {index} is missing")]
    Missing {
        /// The shard.
        index: usize,
    },
    /// A progress shard is damaged or belongs to another audience.
    #[error("progress shard {index} is corrupt: {problem}")]
    Corrupt {
        /// The shard.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// A channel index beyond the campaign's most channels.
    #[error("channel {channel} is beyond the {} a campaign may have", CHANNELS)]
    NoSuchChannel {
        /// The index given.
        channel: u8,
    },
    /// A result for a recipient that is not claimed.
    #[error("recipient {recipient} is not claimed (it is {state:?})")]
    NotClaimed {
        /// The recipient's index.
        recipient: usize,
        /// Its state.
        state: Delivery,
    },
}

/// Whole seconds, rounded up: a retry is never claimed before the time it was given.
fn ceil_second(at: Timestamp) -> i64 {
    at.as_second() + i64::from(at.subsec_nanosecond() > 0)
}

/// `-` for an absent detail field.
fn optional(field: &str) -> Option<&str> {
    (field != "-").then_some(field)
}

impl ProgressError {
    /// The progress shard at fault, if one is.
    pub fn index(&self) -> Option<usize> {
        match self {
            ProgressError::Missing { index } | ProgressError::Corrupt { index, .. } => Some(*index),
            ProgressError::NoSuchChannel { .. } | ProgressError::NotClaimed { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    state: Delivery,
    /// Attempts on `channel`.
    attempts: u16,
    /// `mode: fallback`: the Channel (index) this recipient has reached; the ones before it
    /// failed for good.
    channel: u8,
    /// Unix seconds; only while Waiting.
    next_attempt: Option<i64>,
    /// Index into the shard's reasons; only when Failed or Skipped.
    reason: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    format: u32,
    index: usize,
    first: usize,
    recipients: usize,
    audience_sha256: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    channel_failures: Vec<u64>,
    /// Deliveries on a channel other than the recipient's first (`mode: All`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    channel_extra_sent: Vec<u64>,
}

/// The progress of one audience shard's recipients.
#[derive(Clone, Debug)]
struct ProgressShard {
    first: usize,
    entries: Vec<Entry>,
    reasons: Vec<String>,
    channel_failures: [u64; CHANNELS],
    channel_extra_sent: [u64; CHANNELS],
    /// The stored object's version; `None` until it is created.
    resource_version: Option<String>,
    /// Changed since last written.
    dirty: bool,
    /// Outcomes recorded since last written.
    unflushed: usize,
}

impl ProgressShard {
    fn reason_index(&mut self, reason: &str) -> u16 {
        let reason: String = reason.chars().take(MAX_REASON_LEN).collect();
        if let Some(at) = self.reasons.iter().position(|r| *r == reason) {
            return at as u16;
        }
        if self.reasons.len() < MAX_REASONS - 1 {
            self.reasons.push(reason);
            return (self.reasons.len() - 1) as u16;
        }
        match self.reasons.iter().position(|r| r == OTHER_REASON) {
            Some(at) => at as u16,
            None => {
                self.reasons.push(OTHER_REASON.to_owned());
                (self.reasons.len() - 1) as u16
            }
        }
    }

    fn encode(&self, index: usize, audience_sha256: &str) -> BTreeMap<String, String> {
        let meta = Meta {
            format: PROGRESS_FORMAT,
            index,
            first: self.first,
            recipients: self.entries.len(),
            audience_sha256: audience_sha256.to_owned(),
            reasons: self.reasons.clone(),
            channel_failures: self.channel_failures.to_vec(),
            channel_extra_sent: if self.channel_extra_sent.iter().any(|&n| n > 0) {
                self.channel_extra_sent.to_vec()
            } else {
                Vec::new()
            },
        };
        let states: String = self.entries.iter().map(|e| e.state.code()).collect();
        // Written on every claim and flush, for every recipient with an attempt: straight
        // into one buffer, no string per line or field.
        let mut details = String::with_capacity(self.entries.len() * 12);
        for (at, entry) in self.entries.iter().enumerate() {
            // A finished recipient's attempts no longer matter (its message id does not
            // depend on them): most lines of a sending campaign are left out.
            let nothing_to_keep =
                (entry.attempts == 0 && entry.channel == 0) || entry.state.is_finished();
            if nothing_to_keep && entry.next_attempt.is_none() && entry.reason.is_none() {
                continue;
            }
            let _ = write!(details, "{at}\t{}\t", entry.attempts);
            let _ = match entry.next_attempt {
                Some(at) => write!(details, "{at}\t"),
                None => details.write_str("-\t"),
            };
            let _ = match entry.reason {
                Some(reason) => write!(details, "{reason}"),
                None => details.write_str("-"),
            };
            // A fifth field only once a fallback moved on (earlier ledgers have four).
            let _ = match entry.channel {
                0 => details.write_str("\n"),
                channel => writeln!(details, "\t{channel}"),
            };
        }
        BTreeMap::from([
            (
                "meta".to_owned(),
                serde_json::to_string(&meta).expect("meta serializes"),
            ),
            ("states".to_owned(), states),
            ("details".to_owned(), details),
        ])
    }

    fn decode(
        index: usize,
        data: &BTreeMap<String, String>,
        audience: &Audience,
    ) -> Result<Self, ProgressError> {
        let corrupt = |problem: String| ProgressError::Corrupt { index, problem };
        let meta: Meta = data
            .get("meta")
            .ok_or_else(|| corrupt("no meta entry".into()))
            .and_then(|m| serde_json::from_str(m).map_err(|e| corrupt(format!("meta: {e}"))))?;
        let range = audience.shard_range(index);
        if meta.format != PROGRESS_FORMAT {
            return Err(corrupt(format!("format {}", meta.format)));
        }
        if meta.audience_sha256 != audience.set_sha256() {
            return Err(corrupt("belongs to another audience".into()));
        }
        if meta.index != index || meta.first != range.start || meta.recipients != range.len() {
            return Err(corrupt(format!(
                "records shard {} (recipients {}..{}), expected {index} ({}..{})",
                meta.index,
                meta.first,
                meta.first + meta.recipients,
                range.start,
                range.end
            )));
        }
        if meta.reasons.len() > MAX_REASONS
            || meta.channel_failures.len() > CHANNELS
            || meta.channel_extra_sent.len() > CHANNELS
        {
            return Err(corrupt("too many reasons or channels".into()));
        }
        let states = data.get("states").map_or("", String::as_str);
        let mut entries = Vec::with_capacity(range.len());
        for (at, code) in states.chars().enumerate() {
            let state = Delivery::from_code(code)
                .ok_or_else(|| corrupt(format!("state {code:?} of recipient {at}")))?;
            let held_out = audience.recipients().get(range.start + at).map(|r| r.group)
                == Some(Group::HeldOut);
            if held_out != (state == Delivery::HeldOut) {
                return Err(corrupt(format!(
                    "recipient {at} is {state:?} against its group"
                )));
            }
            entries.push(Entry {
                state,
                ..Entry::default()
            });
        }
        if entries.len() != range.len() {
            return Err(corrupt(format!(
                "{} states for {} recipients",
                entries.len(),
                range.len()
            )));
        }
        for line in data.get("details").map_or("", String::as_str).lines() {
            let bad = || corrupt(format!("detail line {line:?}"));
            let fields: Vec<&str> = line.split('\t').collect();
            let (at, attempts, next, reason, channel) = match fields[..] {
                [at, attempts, next, reason] => (at, attempts, next, reason, "0"),
                [at, attempts, next, reason, channel] => (at, attempts, next, reason, channel),
                _ => return Err(bad()),
            };
            let entry = at
                .parse::<usize>()
                .ok()
                .and_then(|at| entries.get_mut(at))
                .ok_or_else(bad)?;
            entry.attempts = attempts.parse().map_err(|_| bad())?;
            entry.channel = channel
                .parse()
                .ok()
                .filter(|&c| usize::from(c) < CHANNELS)
                .ok_or_else(bad)?;
            entry.next_attempt = optional(next)
                .map(str::parse::<i64>)
                .transpose()
                .map_err(|_| bad())?;
            entry.reason = optional(reason)
                .map(str::parse::<u16>)
                .transpose()
                .map_err(|_| bad())?;
            if entry
                .reason
                .is_some_and(|r| usize::from(r) >= meta.reasons.len())
            {
                return Err(bad());
            }
        }
        let mut channel_failures = [0; CHANNELS];
        channel_failures[..meta.channel_failures.len()].copy_from_slice(&meta.channel_failures);
        let mut channel_extra_sent = [0; CHANNELS];
        channel_extra_sent[..meta.channel_extra_sent.len()]
            .copy_from_slice(&meta.channel_extra_sent);
        Ok(Self {
            first: range.start,
            entries,
            reasons: meta.reasons,
            channel_failures,
            channel_extra_sent,
            resource_version: None,
            dirty: false,
            unflushed: 0,
        })
    }
}

/// Counts of one group (a variant) as the ledger has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupCounts {
    /// Recipients allocated to it.
    pub targeted: u64,
    /// Delivered.
    pub sent: u64,
    /// Failed for good.
    pub failed: u64,
    /// Opted out or skipped: finished, not sent.
    pub not_sent: u64,
    /// Not finished.
    pub pending: u64,
}

/// Everything the Campaign status counts, computed from the ledger, so it is exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    /// The audience size (targeted + held out).
    pub audience: u64,
    /// In the control group.
    pub held_out: u64,
    /// All of the campaign except the held out.
    pub all: GroupCounts,
    /// Of `all.not_sent`: those who opted out.
    pub opted_out: u64,
    /// Per variant index (one entry for a campaign without variants).
    pub variants: Vec<GroupCounts>,
    /// Per channel index: delivered, and failed attempts (including ones a fallback then
    /// delivered).
    pub channels: Vec<(u64, u64)>,
    /// Failures for good and skips by reason, sorted by reason.
    pub reasons: BTreeMap<String, u64>,
}

impl GroupCounts {
    fn merge(&mut self, other: &GroupCounts) {
        self.targeted += other.targeted;
        self.sent += other.sent;
        self.failed += other.failed;
        self.not_sent += other.not_sent;
        self.pending += other.pending;
    }
}

impl LedgerCounts {
    /// Adds `other`'s counts (another round of a trigger campaign) to these.
    pub fn merge(&mut self, other: &LedgerCounts) {
        self.audience += other.audience;
        self.held_out += other.held_out;
        self.all.merge(&other.all);
        self.opted_out += other.opted_out;
        if self.variants.len() < other.variants.len() {
            self.variants
                .resize(other.variants.len(), GroupCounts::default());
        }
        for (mine, theirs) in self.variants.iter_mut().zip(&other.variants) {
            mine.merge(theirs);
        }
        if self.channels.len() < other.channels.len() {
            self.channels.resize(other.channels.len(), (0, 0));
        }
        for (mine, theirs) in self.channels.iter_mut().zip(&other.channels) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
        for (reason, count) in &other.reasons {
            *self.reasons.entry(reason.clone()).or_default() += count;
        }
    }

    /// The status' `counts`. The opted out and skipped are finished and not sent, so they are
    /// in `targeted` but in none of `sent`, `failed`, `pending`; the opted out have their own
    /// count.
    pub fn delivery_counts(&self) -> DeliveryCounts {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        DeliveryCounts {
            targeted: n(self.all.targeted),
            held_out: n(self.held_out),
            opted_out: n(self.opted_out),
            sent: n(self.all.sent),
            failed: n(self.all.failed),
            pending: n(self.all.pending),
        }
    }

    /// The status' `variants`, named after the campaign's variants in order.
    pub fn variant_counts(&self, names: &[String]) -> Vec<VariantCounts> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        names
            .iter()
            .zip(&self.variants)
            .map(|(name, c)| VariantCounts {
                name: name.clone(),
                targeted: n(c.targeted),
                sent: n(c.sent),
                failed: n(c.failed),
                pending: n(c.pending),
            })
            .collect()
    }

    /// The status' `channels`, named after the campaign's channels in order.
    pub fn channel_counts(&self, names: &[String]) -> Vec<ChannelCounts> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        names
            .iter()
            .zip(&self.channels)
            .map(|(name, (sent, failed))| ChannelCounts {
                name: name.clone(),
                sent: n(*sent),
                failed: n(*failed),
            })
            .collect()
    }
}

/// The delivery ledger of one started campaign: its audience and every recipient's progress.
#[derive(Clone, Debug)]
pub struct DeliveryLedger {
    campaign_uid: String,
    audience: Audience,
    shards: Vec<ProgressShard>,
    policy: FlushPolicy,
    /// Claimed before this process loaded the ledger, not handed out again yet.
    resume: VecDeque<usize>,
    /// No recipient before it is Pending (Pending only ever moves forward).
    cursor: usize,
    /// Waiting recipients by next attempt.
    waiting: BTreeSet<(i64, usize)>,
    /// Unix seconds of the oldest outcome not written.
    oldest_unflushed: Option<i64>,
}

impl DeliveryLedger {
    /// The ledger of a campaign starting now: everyone Pending but the held out; nothing
    /// written yet.
    pub fn start(campaign_uid: &str, audience: Audience, policy: FlushPolicy) -> Self {
        let shards = (0..audience.shard_count())
            .map(|index| {
                let range = audience.shard_range(index);
                ProgressShard {
                    first: range.start,
                    entries: audience.recipients()[range]
                        .iter()
                        .map(|r| Entry {
                            state: if r.group == Group::HeldOut {
                                Delivery::HeldOut
                            } else {
                                Delivery::Pending
                            },
                            ..Entry::default()
                        })
                        .collect(),
                    reasons: Vec::new(),
                    channel_failures: [0; CHANNELS],
                    channel_extra_sent: [0; CHANNELS],
                    resource_version: None,
                    dirty: true,
                    unflushed: 0,
                }
            })
            .collect();
        Self::assemble(campaign_uid, audience, shards, policy)
    }

    /// The ledger as persisted: `progress` has each shard's index, `data` and
    /// `resourceVersion`, in any order. Every Claimed recipient is claimed again first.
    pub fn load(
        campaign_uid: &str,
        audience: Audience,
        progress: Vec<(usize, BTreeMap<String, String>, String)>,
        policy: FlushPolicy,
    ) -> Result<Self, ProgressError> {
        let mut found: BTreeMap<usize, ProgressShard> = BTreeMap::new();
        for (index, data, resource_version) in progress {
            if index >= audience.shard_count() {
                continue;
            }
            let mut shard = ProgressShard::decode(index, &data, &audience)?;
            shard.resource_version = Some(resource_version);
            found.insert(index, shard);
        }
        if let Some(index) = (0..audience.shard_count()).find(|i| !found.contains_key(i)) {
            return Err(ProgressError::Missing { index });
        }
        Ok(Self::assemble(
            campaign_uid,
            audience,
            found.into_values().collect(),
            policy,
        ))
    }

    fn assemble(
        campaign_uid: &str,
        audience: Audience,
        shards: Vec<ProgressShard>,
        policy: FlushPolicy,
    ) -> Self {
        let mut ledger = Self {
            campaign_uid: campaign_uid.to_owned(),
            audience,
            shards,
            policy,
            resume: VecDeque::new(),
            cursor: 0,
            waiting: BTreeSet::new(),
            oldest_unflushed: None,
        };
        let mut cursor = None;
        for shard in &ledger.shards {
            for (at, entry) in shard.entries.iter().enumerate() {
                let recipient = shard.first + at;
                match entry.state {
                    Delivery::Claimed => ledger.resume.push_back(recipient),
                    Delivery::Waiting => {
                        let at = entry.next_attempt.unwrap_or(0);
                        ledger.waiting.insert((at, recipient));
                    }
                    Delivery::Pending if cursor.is_none() => cursor = Some(recipient),
                    _ => {}
                }
            }
        }
        ledger.cursor = cursor.unwrap_or(ledger.audience.recipients().len());
        ledger
    }

    /// The audience.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// Recipient `recipient` of the audience.
    pub fn recipient(&self, recipient: usize) -> &Recipient {
        &self.audience.recipients()[recipient]
    }

    /// The state of recipient `recipient`.
    pub fn state(&self, recipient: usize) -> Delivery {
        self.entry(recipient).state
    }

    fn entry(&self, recipient: usize) -> &Entry {
        let shard = &self.shards[self.audience.shard_of(recipient)];
        &shard.entries[recipient - shard.first]
    }

    fn entry_mut(&mut self, recipient: usize) -> (&mut ProgressShard, usize) {
        let shard = &mut self.shards[self.audience.shard_of(recipient)];
        let at = recipient - shard.first;
        (shard, at)
    }

    /// Claims up to `max` recipients due at `now`: first those claimed before a restart, then
    /// retries that are due, then Pending ones in audience order. New claims come from one
    /// shard only, so persisting them is one write.
    ///
    /// # Expected flow
    /// Persist every shard in [`Self::dirty_shards`], then send, then [`Self::record`] each.
    /// Sending before the claim is persisted could, after a crash, send a message the ledger
    /// then finds Pending and sends again under a new attempt.
    pub fn claim(&mut self, max: usize, now: Timestamp) -> Vec<Claim> {
        let mut claims = Vec::new();
        while claims.len() < max
            && let Some(recipient) = self.resume.pop_front()
        {
            claims.push(self.claim_one(recipient, true));
        }
        let mut shard_of_new = None;
        let now = now.as_second();
        while claims.len() < max {
            let Some(&(at, recipient)) = self.waiting.first() else {
                break;
            };
            let shard = self.audience.shard_of(recipient);
            if at > now || shard_of_new.is_some_and(|s| s != shard) {
                break;
            }
            self.waiting.pop_first();
            shard_of_new = Some(shard);
            claims.push(self.claim_one(recipient, false));
        }
        let total = self.audience.recipients().len();
        while claims.len() < max && self.cursor < total {
            let recipient = self.cursor;
            let shard = self.audience.shard_of(recipient);
            if shard_of_new.is_some_and(|s| s != shard) {
                break;
            }
            self.cursor += 1;
            if self.state(recipient) == Delivery::Pending {
                shard_of_new = Some(shard);
                claims.push(self.claim_one(recipient, false));
            }
        }
        claims
    }

    fn claim_one(&mut self, recipient: usize, resent: bool) -> Claim {
        let (shard, at) = self.entry_mut(recipient);
        let entry = &mut shard.entries[at];
        if !resent {
            entry.state = Delivery::Claimed;
            entry.attempts = entry.attempts.saturating_add(1);
            entry.next_attempt = None;
            shard.dirty = true;
        }
        let attempt = entry.attempts.max(1);
        let channel = entry.channel;
        Claim {
            recipient,
            message_id: message_id(&self.campaign_uid, &self.recipient(recipient).uid),
            attempt,
            resent,
            channel,
        }
    }

    /// `mode: fallback`: the claimed recipient's attempt moved on to `channel` (those before
    /// it failed for good), so this attempt is the first there; record the outcome after.
    pub fn move_to_channel(&mut self, recipient: usize, channel: u8) {
        if usize::from(channel) >= CHANNELS {
            return;
        }
        let (shard, at) = self.entry_mut(recipient);
        let entry = &mut shard.entries[at];
        if entry.channel != channel {
            entry.channel = channel;
            entry.attempts = 1;
            shard.dirty = true;
        }
    }

    /// Records what the sender reports about a claimed recipient, in memory.
    pub fn record(
        &mut self,
        recipient: usize,
        result: DeliveryResult,
        now: Timestamp,
    ) -> Result<(), ProgressError> {
        let state = self.state(recipient);
        if state != Delivery::Claimed || self.resume.contains(&recipient) {
            return Err(ProgressError::NotClaimed { recipient, state });
        }
        if let DeliveryResult::Sent { channel } = result
            && usize::from(channel) >= CHANNELS
        {
            return Err(ProgressError::NoSuchChannel { channel });
        }
        let (shard, at) = self.entry_mut(recipient);
        let (state, next_attempt, reason) = match &result {
            DeliveryResult::Sent { channel } => (Delivery::Sent { channel: *channel }, None, None),
            DeliveryResult::RetryAt { at } => (Delivery::Waiting, Some(ceil_second(*at)), None),
            DeliveryResult::Deferred { until } => {
                let entry = &mut shard.entries[at];
                entry.attempts = entry.attempts.saturating_sub(1);
                (Delivery::Waiting, Some(ceil_second(*until)), None)
            }
            DeliveryResult::Failed { reason } => {
                (Delivery::Failed, None, Some(shard.reason_index(reason)))
            }
            DeliveryResult::OptedOut => (Delivery::OptedOut, None, None),
            DeliveryResult::Skipped { reason } => {
                (Delivery::Skipped, None, Some(shard.reason_index(reason)))
            }
        };
        let entry = &mut shard.entries[at];
        entry.state = state;
        entry.next_attempt = next_attempt;
        entry.reason = reason;
        shard.dirty = true;
        shard.unflushed += 1;
        if let Some(at) = next_attempt {
            self.waiting.insert((at, recipient));
        }
        self.oldest_unflushed.get_or_insert(now.as_second());
        Ok(())
    }

    /// Counts a failed attempt on `channel` for a recipient (one a fallback channel may still
    /// deliver); written with the next write of its shard.
    pub fn record_channel_failure(&mut self, recipient: usize, channel: u8) {
        let (shard, _) = self.entry_mut(recipient);
        if let Some(count) = shard.channel_failures.get_mut(usize::from(channel)) {
            *count += 1;
            shard.dirty = true;
        }
    }

    /// Counts a delivery on `channel` besides the one the recipient is recorded Sent on
    /// (`mode: All` sends on every Channel); written with the next write of its shard.
    pub fn record_channel_delivery(&mut self, recipient: usize, channel: u8) {
        let (shard, _) = self.entry_mut(recipient);
        if let Some(count) = shard.channel_extra_sent.get_mut(usize::from(channel)) {
            *count += 1;
            shard.dirty = true;
        }
    }

    /// Outcomes recorded and not written yet: what a crash now would make the ledger re-send.
    pub fn unflushed(&self) -> usize {
        self.shards.iter().map(|s| s.unflushed).sum()
    }

    /// Whether recorded outcomes should be written now (by count, or by age).
    pub fn needs_flush(&self, now: Timestamp) -> bool {
        let unflushed = self.unflushed();
        unflushed >= self.policy.max_unflushed
            || (unflushed > 0
                && self.oldest_unflushed.is_some_and(|oldest| {
                    now.as_second().saturating_sub(oldest) >= self.policy.max_delay.as_secs() as i64
                }))
    }

    /// When [`Self::needs_flush`] turns true without another outcome, if it will.
    pub fn flush_due_at(&self) -> Option<Timestamp> {
        let oldest = self.oldest_unflushed?;
        Timestamp::from_second(oldest + self.policy.max_delay.as_secs() as i64).ok()
    }

    /// The shards changed since they were last written (all of them, before the first write).
    pub fn dirty_shards(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| self.shards[i].dirty)
            .collect()
    }

    /// The `data` of progress shard `index` as it is now.
    pub fn progress_data(&self, index: usize) -> BTreeMap<String, String> {
        self.shards[index].encode(index, self.audience.set_sha256())
    }

    /// The `resourceVersion` progress shard `index` was last read or written at; `None` before
    /// it is created.
    pub fn resource_version(&self, index: usize) -> Option<&str> {
        self.shards[index].resource_version.as_deref()
    }

    /// Shard `index` was written, as [`Self::progress_data`] gave it, and is now at
    /// `resource_version`.
    pub fn persisted(&mut self, index: usize, resource_version: String) {
        let shard = &mut self.shards[index];
        shard.resource_version = Some(resource_version);
        shard.dirty = false;
        shard.unflushed = 0;
        if self.unflushed() == 0 {
            self.oldest_unflushed = None;
        }
    }

    /// Whether every recipient is finished.
    pub fn is_finished(&self) -> bool {
        self.resume.is_empty()
            && self.waiting.is_empty()
            && self
                .shards
                .iter()
                .all(|s| s.entries.iter().all(|e| e.state.is_finished()))
    }

    /// The earliest retry time of a Waiting recipient.
    pub fn next_attempt_at(&self) -> Option<Timestamp> {
        let (at, _) = self.waiting.first()?;
        Timestamp::from_second(*at).ok()
    }

    /// The counts the Campaign status shows. One pass over the ledger (100,000 recipients
    /// in about a millisecond); call it once per status write, not per message.
    pub fn counts(&self) -> LedgerCounts {
        let mut counts = LedgerCounts {
            channels: vec![(0, 0); CHANNELS],
            ..LedgerCounts::default()
        };
        for shard in &self.shards {
            for (channel, failed) in shard.channel_failures.iter().enumerate() {
                counts.channels[channel].1 += failed;
            }
            for (channel, sent) in shard.channel_extra_sent.iter().enumerate() {
                counts.channels[channel].0 += sent;
            }
            for (at, entry) in shard.entries.iter().enumerate() {
                counts.audience += 1;
                let Group::Variant(variant) = self.recipient(shard.first + at).group else {
                    counts.held_out += 1;
                    continue;
                };
                if counts.variants.len() <= variant {
                    counts.variants.resize(variant + 1, GroupCounts::default());
                }
                for group in [&mut counts.all, &mut counts.variants[variant]] {
                    group.targeted += 1;
                    match entry.state {
                        Delivery::Sent { .. } => group.sent += 1,
                        Delivery::Failed => group.failed += 1,
                        Delivery::OptedOut | Delivery::Skipped => group.not_sent += 1,
                        _ => group.pending += 1,
                    }
                }
                match entry.state {
                    Delivery::Sent { channel } => counts.channels[usize::from(channel)].0 += 1,
                    Delivery::OptedOut => counts.opted_out += 1,
                    _ => {}
                }
                if let Some(reason) = entry.reason {
                    *counts
                        .reasons
                        .entry(shard.reasons[usize::from(reason)].clone())
                        .or_default() += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests;
