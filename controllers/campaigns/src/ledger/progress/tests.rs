use std::collections::HashMap;

use flotilla_runtime::shards::{SHARD_DATA_LIMIT, Shard};
use proptest::prelude::*;

use super::*;
use crate::ledger::audience::tests::recipients;

const UID: &str = "0b7c5e9e-campaign";

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// The ConfigMaps, as far as the ledger is concerned: data and a resourceVersion each.
#[derive(Clone, Default)]
struct Persisted {
    audience: Vec<Shard>,
    progress: BTreeMap<usize, (BTreeMap<String, String>, u64)>,
    writes: usize,
}

impl Persisted {
    fn started(n: usize, policy: FlushPolicy) -> (Self, DeliveryLedger) {
        let (audience, shards) = Audience::from_recipients(recipients(n));
        let mut persisted = Self {
            audience: shards,
            ..Self::default()
        };
        let mut ledger = DeliveryLedger::start(UID, audience, policy);
        persisted.write(&mut ledger);
        (persisted, ledger)
    }

    /// Writes every dirty shard under its resourceVersion, as the store does.
    fn write(&mut self, ledger: &mut DeliveryLedger) {
        for index in ledger.dirty_shards() {
            let seen = ledger
                .resource_version(index)
                .map(|v| v.parse::<u64>().unwrap());
            let stored = self.progress.get(&index).map(|(_, v)| *v);
            assert_eq!(seen, stored, "a write over another writer's change");
            let version = stored.unwrap_or(0) + 1;
            self.progress
                .insert(index, (ledger.progress_data(index), version));
            self.writes += 1;
            ledger.persisted(index, version.to_string());
        }
    }

    fn load(&self, policy: FlushPolicy) -> DeliveryLedger {
        let audience = Audience::decode(&self.audience).unwrap();
        let progress = self
            .progress
            .iter()
            .map(|(i, (data, v))| (*i, data.clone(), v.to_string()))
            .collect();
        DeliveryLedger::load(UID, audience, progress, policy).unwrap()
    }

    fn claimed(&self) -> usize {
        self.progress
            .values()
            .map(|(data, _)| data["states"].chars().filter(|&c| c == 'c').count())
            .sum()
    }
}

/// What happens to each recipient when its message is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Delivered(u8),
    /// Fails transiently on the first attempt, then goes out on channel 0.
    FlakyOnce,
    Rejected,
    OptedOut,
}

fn fate(recipient: usize) -> Fate {
    match recipient * 7 % 10 {
        0..=5 => Fate::Delivered((recipient % 2) as u8),
        6 | 7 => Fate::FlakyOnce,
        8 => Fate::Rejected,
        _ => Fate::OptedOut,
    }
}

/// A channel with an idempotency key: it counts every send and every message accepted.
#[derive(Default)]
struct Channel {
    sends: usize,
    /// Sends of claims handed out again after a crash.
    resent: usize,
    accepted: HashMap<String, usize>,
}

impl Channel {
    /// Sends a claim, returning what the sender records.
    fn send(&mut self, ledger: &DeliveryLedger, claim: &Claim, now: Timestamp) -> DeliveryResult {
        let recipient = ledger.recipient(claim.recipient);
        assert_eq!(claim.message_id, message_id(UID, &recipient.uid));
        assert_ne!(recipient.group, Group::HeldOut, "a held-out recipient sent");
        self.sends += 1;
        self.resent += usize::from(claim.resent);
        match fate(claim.recipient) {
            Fate::OptedOut => DeliveryResult::OptedOut,
            Fate::Rejected => DeliveryResult::Failed {
                reason: "HTTP404".into(),
            },
            Fate::FlakyOnce if claim.attempt == 1 => DeliveryResult::RetryAt {
                at: now + Duration::from_secs(60),
            },
            Fate::FlakyOnce => self.accept(&claim.message_id, 0),
            Fate::Delivered(channel) => self.accept(&claim.message_id, channel),
        }
    }

    fn accept(&mut self, id: &str, channel: u8) -> DeliveryResult {
        *self.accepted.entry(id.to_owned()).or_default() += 1;
        DeliveryResult::Sent { channel }
    }

    fn duplicates(&self) -> usize {
        self.accepted.values().map(|n| n - 1).sum()
    }
}

fn expected_state(ledger: &DeliveryLedger, recipient: usize) -> Delivery {
    if ledger.recipient(recipient).group == Group::HeldOut {
        return Delivery::HeldOut;
    }
    match fate(recipient) {
        Fate::Delivered(channel) => Delivery::Sent { channel },
        Fate::FlakyOnce => Delivery::Sent { channel: 0 },
        Fate::Rejected => Delivery::Failed,
        Fate::OptedOut => Delivery::OptedOut,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Claim(usize),
    Deliver(usize),
    FlushIfDue,
    Tick(u64),
    Crash,
    ClaimThenCrash(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..300).prop_map(Op::Claim),
        4 => (1usize..300).prop_map(Op::Deliver),
        2 => Just(Op::FlushIfDue),
        1 => (1u64..120).prop_map(Op::Tick),
        1 => Just(Op::Crash),
        1 => (1usize..300).prop_map(Op::ClaimThenCrash),
    ]
}

/// Drives the ledger to the end with no more crashes.
fn finish(
    persisted: &mut Persisted,
    ledger: &mut DeliveryLedger,
    in_flight: &mut VecDeque<Claim>,
    channel: &mut Channel,
    now: &mut Timestamp,
) {
    for _ in 0..100_000 {
        while let Some(claim) = in_flight.pop_front() {
            let result = channel.send(ledger, &claim, *now);
            ledger.record(claim.recipient, result, *now).unwrap();
        }
        let claims = ledger.claim(500, *now);
        persisted.write(ledger);
        if claims.is_empty() {
            if ledger.is_finished() {
                return;
            }
            *now = ledger.next_attempt_at().expect("waiting for a retry");
        }
        in_flight.extend(claims);
    }
    panic!("the ledger never finished");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Crashes at arbitrary points: every recipient ends in its one right state, nobody is
    /// skipped, a re-send is only ever of a claim not recorded when the crash came, and it
    /// carries the same message id.
    #[test]
    fn crashes_never_skip_and_resend_only_unrecorded_claims(
        n in 1usize..3_500,
        ops in proptest::collection::vec(op(), 0..80),
        max_unflushed in 1usize..400,
    ) {
        let policy = FlushPolicy { max_unflushed, max_delay: Duration::from_secs(30) };
        let (mut persisted, mut ledger) = Persisted::started(n, policy);
        let mut channel = Channel::default();
        let mut in_flight = VecDeque::new();
        let mut now = t(0);
        let mut resend_budget = 0;
        for op in ops {
            match op {
                Op::Claim(max) => {
                    let claims = ledger.claim(max, now);
                    persisted.write(&mut ledger);
                    in_flight.extend(claims);
                }
                Op::Deliver(k) => {
                    for _ in 0..k {
                        let Some(claim) = in_flight.pop_front() else { break };
                        let result = channel.send(&ledger, &claim, now);
                        ledger.record(claim.recipient, result, now).unwrap();
                    }
                }
                Op::FlushIfDue => {
                    if ledger.needs_flush(now) {
                        persisted.write(&mut ledger);
                    }
                    prop_assert!(!ledger.needs_flush(now));
                }
                Op::Tick(seconds) => now += Duration::from_secs(seconds),
                Op::Crash | Op::ClaimThenCrash(_) => {
                    if let Op::ClaimThenCrash(max) = op {
                        // Claimed in memory, the process dies before the write.
                        ledger.claim(max, now);
                    }
                    let claimed = persisted.claimed();
                    resend_budget += claimed;
                    ledger = persisted.load(policy);
                    prop_assert_eq!(ledger.resume.len(), claimed);
                    in_flight.clear();
                }
            }
        }
        finish(&mut persisted, &mut ledger, &mut in_flight, &mut channel, &mut now);
        prop_assert!(
            channel.resent <= resend_budget,
            "{} re-sent, {} claimed at crashes", channel.resent, resend_budget
        );
        prop_assert!(channel.duplicates() <= resend_budget);
        let reloaded = persisted.load(policy);
        for recipient in 0..n {
            let expected = expected_state(&reloaded, recipient);
            prop_assert_eq!(reloaded.state(recipient), expected, "recipient {}", recipient);
            let accepted = channel
                .accepted
                .get(&message_id(UID, &reloaded.recipient(recipient).uid))
                .copied()
                .unwrap_or(0);
            prop_assert_eq!(accepted > 0, matches!(expected, Delivery::Sent { .. }));
        }
        let counts = reloaded.counts();
        prop_assert_eq!(counts.audience, n as u64);
        prop_assert_eq!(counts.all.pending, 0);
        prop_assert_eq!(
            counts.all.sent + counts.all.failed + counts.all.not_sent,
            counts.all.targeted
        );
    }
}

#[test]
fn a_batch_costs_one_write_and_outcomes_ride_along() {
    let policy = FlushPolicy {
        max_unflushed: 200,
        max_delay: Duration::from_secs(5),
    };
    let n = 20_000;
    let (mut persisted, mut ledger) = Persisted::started(n, policy);
    let start_writes = persisted.writes;
    assert_eq!(start_writes, ledger.audience().shard_count());
    let mut channel = Channel::default();
    let mut now = t(0);
    let mut in_flight = VecDeque::new();
    for _ in 0..10_000 {
        let claims = ledger.claim(100, now);
        persisted.write(&mut ledger);
        if claims.is_empty() {
            if ledger.is_finished() {
                break;
            }
            now = ledger.next_attempt_at().unwrap();
            continue;
        }
        in_flight.extend(claims);
        while let Some(claim) = in_flight.pop_front() {
            let result = channel.send(&ledger, &claim, now);
            ledger.record(claim.recipient, result, now).unwrap();
        }
        now += Duration::from_secs(1);
        if ledger.needs_flush(now) {
            persisted.write(&mut ledger);
        }
    }
    persisted.write(&mut ledger);
    assert!(ledger.is_finished());
    let writes = persisted.writes - start_writes;
    let per_message = writes as f64 / channel.sends as f64;
    // One write per batch of 100, plus the writes closing shards and retry rounds.
    assert!(
        per_message <= 0.02,
        "{writes} writes for {} sends: {per_message:.4} a message",
        channel.sends
    );
}

#[test]
fn the_start_holds_the_held_out_out() {
    let (_, ledger) = Persisted::started(100, FlushPolicy::default());
    for recipient in 0..100 {
        let expected = if recipient % 10 == 0 {
            Delivery::HeldOut
        } else {
            Delivery::Pending
        };
        assert_eq!(ledger.state(recipient), expected);
    }
    let counts = ledger.counts();
    assert_eq!((counts.held_out, counts.all.targeted), (10, 90));
    assert_eq!(counts.all.pending, 90);
    assert_eq!(counts.variants.len(), 3);
}

#[test]
fn claims_stay_in_one_shard_and_results_need_a_claim() {
    let (mut persisted, mut ledger) = Persisted::started(5_000, FlushPolicy::default());
    let first = ledger.audience().shard_range(0);
    let claims = ledger.claim(first.len() + 100, t(0));
    assert!(
        claims
            .iter()
            .all(|c| ledger.audience().shard_of(c.recipient) == 0)
    );
    assert_eq!(ledger.dirty_shards(), vec![0]);
    persisted.write(&mut ledger);
    let pending = (first.end..)
        .find(|&r| ledger.state(r) == Delivery::Pending)
        .unwrap();
    assert_eq!(
        ledger.record(pending, DeliveryResult::OptedOut, t(0)),
        Err(ProgressError::NotClaimed {
            recipient: pending,
            state: Delivery::Pending
        })
    );
    assert_eq!(
        ledger.record(
            claims[0].recipient,
            DeliveryResult::Sent { channel: 8 },
            t(0)
        ),
        Err(ProgressError::NoSuchChannel { channel: 8 })
    );
    // Claimed before a crash: handed out again first, not recordable before that.
    let mut reloaded = persisted.load(FlushPolicy::default());
    let claimed = claims[0].recipient;
    assert!(matches!(
        reloaded.record(claimed, DeliveryResult::OptedOut, t(0)),
        Err(ProgressError::NotClaimed { .. })
    ));
    let again = reloaded.claim(1, t(0));
    assert_eq!(again[0].recipient, claimed);
    assert!(again[0].resent);
    assert_eq!(again[0].message_id, claims[0].message_id);
    assert_eq!(again[0].attempt, 1);
    assert!(
        reloaded.dirty_shards().is_empty(),
        "a re-claim writes nothing"
    );
}

#[test]
fn flushes_come_by_count_and_by_age() {
    let policy = FlushPolicy {
        max_unflushed: 3,
        max_delay: Duration::from_secs(5),
    };
    let (mut persisted, mut ledger) = Persisted::started(50, policy);
    let claims = ledger.claim(10, t(0));
    persisted.write(&mut ledger);
    let sent = DeliveryResult::Sent { channel: 0 };
    ledger
        .record(claims[0].recipient, sent.clone(), t(0))
        .unwrap();
    assert!(!ledger.needs_flush(t(4)));
    assert!(ledger.needs_flush(t(5)));
    assert_eq!(ledger.flush_due_at(), Some(t(5)));
    ledger
        .record(claims[1].recipient, sent.clone(), t(1))
        .unwrap();
    ledger.record(claims[2].recipient, sent, t(1)).unwrap();
    assert!(ledger.needs_flush(t(1)));
    persisted.write(&mut ledger);
    assert_eq!(ledger.unflushed(), 0);
    assert!(!ledger.needs_flush(t(100)));
}

#[test]
fn progress_round_trips_with_retries_reasons_and_channel_failures() {
    let (mut persisted, mut ledger) = Persisted::started(200, FlushPolicy::default());
    let claims = ledger.claim(200, t(0));
    for (k, claim) in claims.iter().enumerate() {
        if k % 4 == 0 {
            // `mode: All`: channel 2 took it too.
            ledger.record_channel_delivery(claim.recipient, 2);
        }
        let result = match k % 4 {
            0 => DeliveryResult::Sent { channel: 1 },
            1 => DeliveryResult::RetryAt { at: t(90) },
            2 => DeliveryResult::Failed {
                reason: format!("SMTP55{}", k % 3),
            },
            _ => DeliveryResult::Skipped {
                reason: "NoAddress".into(),
            },
        };
        ledger.record_channel_failure(claim.recipient, 0);
        ledger.record(claim.recipient, result, t(0)).unwrap();
    }
    persisted.write(&mut ledger);
    let reloaded = persisted.load(FlushPolicy::default());
    assert_eq!(reloaded.counts(), ledger.counts());
    assert_eq!(reloaded.next_attempt_at(), Some(t(90)));
    let counts = reloaded.counts();
    assert_eq!(counts.channels[0].1, claims.len() as u64);
    assert_eq!(counts.reasons["NoAddress"], 45);
    assert_eq!(counts.reasons.len(), 4);
    let status = counts.delivery_counts();
    assert_eq!((status.sent, status.failed, status.pending), (45, 45, 45));
    let variants = counts.variant_counts(&["a".into(), "b".into(), "c".into()]);
    assert_eq!(variants.iter().map(|v| v.targeted).sum::<i64>(), 180);
    let channels = counts.channel_counts(&["mail".into(), "slack".into(), "hook".into()]);
    assert_eq!((channels[1].sent, channels[0].failed), (45, 180));
    assert_eq!(
        channels[2].sent, 45,
        "deliveries besides the first survive a reload"
    );
}

#[test]
fn reasons_are_bounded_per_shard() {
    let (_, mut ledger) = Persisted::started(500, FlushPolicy::default());
    let claims = ledger.claim(500, t(0));
    for (k, claim) in claims.iter().enumerate() {
        let reason = format!("{k}{}", "x".repeat(200));
        ledger
            .record(claim.recipient, DeliveryResult::Failed { reason }, t(0))
            .unwrap();
    }
    let counts = ledger.counts();
    assert_eq!(counts.reasons.len(), MAX_REASONS);
    assert!(counts.reasons.keys().all(|r| r.len() <= MAX_REASON_LEN));
    assert_eq!(counts.reasons[OTHER_REASON], 450 - (MAX_REASONS as u64 - 1));
}

#[test]
fn damaged_or_foreign_progress_is_named() {
    let (persisted, _) = Persisted::started(5_000, FlushPolicy::default());
    let audience = Audience::decode(&persisted.audience).unwrap();
    let all = || -> Vec<(usize, BTreeMap<String, String>, String)> {
        persisted
            .progress
            .iter()
            .map(|(i, (d, v))| (*i, d.clone(), v.to_string()))
            .collect()
    };
    let load =
        |progress| DeliveryLedger::load(UID, audience.clone(), progress, FlushPolicy::default());
    let mut missing = all();
    missing.remove(1);
    assert_eq!(
        load(missing).unwrap_err(),
        ProgressError::Missing { index: 1 }
    );
    let mut bad_state = all();
    bad_state[2]
        .1
        .get_mut("states")
        .unwrap()
        .replace_range(1..2, "z");
    assert!(matches!(
        load(bad_state).unwrap_err(),
        ProgressError::Corrupt { index: 2, .. }
    ));
    let mut short = all();
    short[0].1.get_mut("states").unwrap().pop();
    assert!(matches!(
        load(short).unwrap_err(),
        ProgressError::Corrupt { index: 0, .. }
    ));
    let mut unheld = all();
    // Recipient 0 is held out; a ledger calling it Pending is not this audience's.
    unheld[0]
        .1
        .get_mut("states")
        .unwrap()
        .replace_range(0..1, ".");
    assert!(matches!(
        load(unheld).unwrap_err(),
        ProgressError::Corrupt { index: 0, .. }
    ));
    let (other, _) = Audience::from_recipients(recipients(4_999));
    let foreign = DeliveryLedger::load(UID, other, all(), FlushPolicy::default());
    assert!(matches!(
        foreign.unwrap_err(),
        ProgressError::Corrupt { index: 0, ref problem } if problem.contains("another audience")
    ));
}

#[test]
fn a_hundred_thousand_recipients_all_failed_still_fit() {
    let (_, mut ledger) = Persisted::started(100_000, FlushPolicy::default());
    loop {
        let claims = ledger.claim(5_000, t(0));
        if claims.is_empty() {
            break;
        }
        for claim in claims {
            let reason = format!("HTTP4{:02}", claim.recipient % 40);
            ledger
                .record(claim.recipient, DeliveryResult::Failed { reason }, t(0))
                .unwrap();
        }
    }
    let shards = ledger.audience().shard_count();
    let largest = (0..shards)
        .map(|i| {
            ledger
                .progress_data(i)
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
        })
        .max()
        .unwrap();
    println!("100,000 recipients, all failed: 58 progress shards, largest {largest} bytes");
    // ~1,700 recipients a shard at ~15 bytes each.
    assert!(largest < SHARD_DATA_LIMIT / 8, "{largest} bytes");
    assert_eq!(shards, 58);
}

#[test]
fn a_deferral_waits_without_counting_an_attempt_and_retries_wait_whole_seconds() {
    let (mut persisted, mut ledger) = Persisted::started(20, FlushPolicy::default());
    let claims = ledger.claim(2, t(0));
    persisted.write(&mut ledger);
    let (deferred, retried) = (claims[0].recipient, claims[1].recipient);
    ledger
        .record(deferred, DeliveryResult::Deferred { until: t(3_600) }, t(0))
        .unwrap();
    let half_past = t(10) + Duration::from_millis(500);
    ledger
        .record(retried, DeliveryResult::RetryAt { at: half_past }, t(0))
        .unwrap();
    persisted.write(&mut ledger);
    let mut ledger = persisted.load(FlushPolicy::default());
    assert_eq!(ledger.next_attempt_at(), Some(t(11)));
    let due = |ledger: &mut DeliveryLedger, at| {
        let claims = ledger.claim(20, at);
        claims
            .into_iter()
            .filter(|c| c.recipient == deferred || c.recipient == retried)
            .collect::<Vec<_>>()
    };
    assert!(due(&mut ledger, t(10)).is_empty());
    let again = due(&mut ledger, t(11));
    assert_eq!((again[0].recipient, again[0].attempt), (retried, 2));
    let later = due(&mut ledger, t(3_600));
    assert_eq!((later[0].recipient, later[0].attempt), (deferred, 1));
}

#[test]
fn a_fallback_that_moved_on_resumes_on_that_channel_after_a_reload() {
    let (mut persisted, mut ledger) = Persisted::started(20, FlushPolicy::default());
    let claims = ledger.claim(20, t(0));
    let moved = claims[0].recipient;
    assert_eq!(claims[0].channel, 0);
    // The first Channel gave up; the second failed transiently on its first attempt.
    ledger.move_to_channel(moved, 1);
    ledger
        .record(moved, DeliveryResult::RetryAt { at: t(30) }, t(0))
        .unwrap();
    for claim in &claims[1..] {
        ledger
            .record(claim.recipient, DeliveryResult::Sent { channel: 0 }, t(0))
            .unwrap();
    }
    persisted.write(&mut ledger);
    let mut reloaded = persisted.load(FlushPolicy::default());
    let again = reloaded.claim(20, t(30));
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].recipient, again[0].channel, again[0].attempt),
        (moved, 1, 2),
        "second attempt on the second Channel"
    );
}
