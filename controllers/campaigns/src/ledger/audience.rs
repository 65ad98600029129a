//! The audience snapshot: who a campaign targets, fixed when it starts. Recipients are sorted
//! by Subscription name (not list order, so two snapshots of the same world are equal), each
//! with its allocation group and the contact fields a sender needs, and persisted as
//! [`flotilla_runtime::shards`] lines — one JSON array per recipient:
//! `["<subscription>","<uid>",<group>,"<email>"|null,"<name>"|null,"<timeZone>"|null]`,
//! where `<group>` is `-1` for held out, else the variant index. JSON escapes whatever a
//! contact name may hold (tabs, newlines).
//!
//! The shard layout is part of the snapshot: progress shard `i` covers the recipients of
//! audience shard `i` ([`Audience::shard_range`]).

use std::ops::Range;
use std::sync::Arc;

use flotilla_crds::subscription::Subscription;
use flotilla_runtime::shards::{self, Shard, ShardError};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::campaign::allocation::{Allocation, Group};

/// Format of the audience lines (the `format` in each shard's `meta`).
pub const AUDIENCE_FORMAT: u32 = 1;

/// One recipient as snapshotted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The Subscription's name (cluster-scoped, so unique).
    pub subscription: String,
    /// The Subscription's UID: the message id is derived from it, and a Subscription deleted
    /// and re-created under the same name is not the one targeted.
    pub uid: String,
    /// Held out, or the variant sent.
    pub group: Group,
    /// `spec.contact.email` at the start.
    pub email: Option<String>,
    /// `spec.contact.name` at the start.
    pub name: Option<String>,
    /// `spec.contact.timeZone` at the start (quiet hours, local-time schedules).
    pub time_zone: Option<String>,
}

type Row = (
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Recipient {
    /// The recipient of `subscription`, in the group `allocation` gives it.
    pub fn of(subscription: &Subscription, allocation: &Allocation) -> Self {
        let name = subscription.name_any();
        let contact = subscription.spec.contact.as_ref();
        Self {
            group: allocation.group(&name),
            uid: subscription.uid().unwrap_or_default(),
            email: contact.and_then(|c| c.email.clone()),
            name: contact.and_then(|c| c.name.clone()),
            time_zone: contact.and_then(|c| c.time_zone.clone()),
            subscription: name,
        }
    }

    fn line(&self) -> String {
        let group = match self.group {
            Group::HeldOut => -1,
            Group::Variant(index) => index as i64,
        };
        let row: Row = (
            self.subscription.clone(),
            self.uid.clone(),
            group,
            self.email.clone(),
            self.name.clone(),
            self.time_zone.clone(),
        );
        serde_json::to_string(&row).expect("a row serializes")
    }

    fn parse(line: &str) -> Result<Self, String> {
        let (subscription, uid, group, email, name, time_zone): Row =
            serde_json::from_str(line).map_err(|e| format!("recipient line {line:?}: {e}"))?;
        let group = match group {
            -1 => Group::HeldOut,
            g if (0..=i64::from(u16::MAX)).contains(&g) => Group::Variant(g as usize),
            g => return Err(format!("recipient {subscription}: group {g}")),
        };
        Ok(Self {
            subscription,
            uid,
            group,
            email,
            name,
            time_zone,
        })
    }
}

/// The message id of the campaign `campaign_uid` to the Subscription `subscription_uid`: the
/// first 128 bits of SHA-256(`campaign_uid` + `/` + `subscription_uid`), as 32 hex digits. The
/// same after any restart, unique per campaign run and recipient (a re-created Campaign or
/// Subscription has a new UID; UIDs hold no `/`, so the input is unambiguous), short enough for any provider's idempotency key, and it
/// reveals neither name.
pub fn message_id(campaign_uid: &str, subscription_uid: &str) -> String {
    let digest = Sha256::new()
        .chain_update(campaign_uid.as_bytes())
        .chain_update(b"/")
        .chain_update(subscription_uid.as_bytes())
        .finalize();
    shards::hex(&digest[..16])
}

/// Why persisted audience shards do not make a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    /// The shards do not decode (missing, duplicate, corrupt, mixed).
    #[error("the audience does not decode")]
    Shards(#[from] ShardError),
}

/// The fixed audience of a started campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    // Shared with the send tasks, which read their recipient without a copy.
    recipients: Arc<[Recipient]>,
    /// Start of each shard's recipients, then the total.
    bounds: Vec<usize>,
    set_sha256: String,
}

impl Audience {
    /// Snapshots `subscriptions` (those the campaign's audience selects now) in name order; a
    /// name given twice counts once.
    pub fn snapshot<'a>(
        subscriptions: impl IntoIterator<Item = &'a Subscription>,
        allocation: &Allocation,
    ) -> (Self, Vec<Shard>) {
        let recipients = subscriptions
            .into_iter()
            .map(|s| Recipient::of(s, allocation))
            .collect();
        Self::from_recipients(recipients)
    }

    /// The audience of `recipients` (sorted here by Subscription name, duplicates dropped)
    /// and the shards that persist it.
    pub fn from_recipients(mut recipients: Vec<Recipient>) -> (Self, Vec<Shard>) {
        recipients.sort_by(|a, b| a.subscription.cmp(&b.subscription));
        recipients.dedup_by(|a, b| a.subscription == b.subscription);
        let lines: Vec<String> = recipients.iter().map(Recipient::line).collect();
        let encoded = shards::encode_lines(AUDIENCE_FORMAT, &lines);
        let mut bounds = Vec::with_capacity(encoded.len() + 1);
        let mut start = 0;
        let mut set_sha256 = String::new();
        for shard in &encoded {
            let meta = shards::shard_meta(AUDIENCE_FORMAT, shard).expect("just encoded");
            bounds.push(start);
            start += meta.lines;
            set_sha256 = meta.set_sha256;
        }
        bounds.push(start);
        let audience = Self {
            recipients: recipients.into(),
            bounds,
            set_sha256,
        };
        (audience, encoded)
    }

    /// The audience persisted in `shards` (any order), checked.
    pub fn decode(shards: &[Shard]) -> Result<Self, AudienceError> {
        let decoded = shards::decode_lines(AUDIENCE_FORMAT, shards)?;
        let set_sha256 = shards::shard_meta(AUDIENCE_FORMAT, &shards[0])?.set_sha256;
        let mut recipients = Vec::new();
        let mut bounds = vec![0];
        for (index, lines) in decoded.iter().enumerate() {
            for line in lines {
                let recipient = Recipient::parse(line)
                    .map_err(|problem| ShardError::Corrupt { index, problem })?;
                if recipients
                    .last()
                    .is_some_and(|last: &Recipient| last.subscription >= recipient.subscription)
                {
                    return Err(ShardError::Corrupt {
                        index,
                        problem: format!("{} is out of order", recipient.subscription),
                    }
                    .into());
                }
                recipients.push(recipient);
            }
            bounds.push(recipients.len());
        }
        Ok(Self {
            recipients: recipients.into(),
            bounds,
            set_sha256,
        })
    }

    /// Every recipient, in order; a recipient's position is its index in the ledger.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// [`Self::recipients`], to share.
    pub fn shared_recipients(&self) -> Arc<[Recipient]> {
        Arc::clone(&self.recipients)
    }

    /// How many shards persist the audience (and how many progress shards it has).
    pub fn shard_count(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The recipients of shard `index`.
    pub fn shard_range(&self, index: usize) -> Range<usize> {
        self.bounds[index]..self.bounds[index + 1]
    }

    /// The shard recipient `recipient` is in.
    pub fn shard_of(&self, recipient: usize) -> usize {
        self.bounds.partition_point(|&start| start <= recipient) - 1
    }

    /// Identifies this audience (the SHA-256 of all its lines): progress shards record it,
    /// so progress of another snapshot is never read as this one's.
    pub fn set_sha256(&self) -> &str {
        &self.set_sha256
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flotilla_runtime::shards::SHARD_DATA_LIMIT;
    use proptest::prelude::*;

    /// `n` recipients with realistic field lengths, every tenth held out.
    pub(crate) fn recipients(n: usize) -> Vec<Recipient> {
        (0..n)
            .map(|i| Recipient {
                subscription: format!("customer-{i:07}"),
                uid: format!("6f1c3a2e-8d4b-4e0f-9a7c-{i:012}"),
                group: if i % 10 == 0 {
                    Group::HeldOut
                } else {
                    Group::Variant(i % 3)
                },
                email: Some(format!("billing+{i}@customer-{i:07}.example.com")),
                name: Some(format!("Customer Number {i} GmbH")),
                time_zone: Some(["Europe/Berlin", "America/Los_Angeles", "UTC"][i % 3].into()),
            })
            .collect()
    }

    #[test]
    fn a_hundred_thousand_recipients_fit_in_few_bounded_shards() {
        let (audience, shards) = Audience::from_recipients(recipients(100_000));
        let largest = shards.iter().map(Shard::data_bytes).max().unwrap();
        assert!(largest <= SHARD_DATA_LIMIT, "a shard has {largest} bytes");
        let bytes: usize = shards.iter().map(Shard::data_bytes).sum();
        // ~150 bytes a recipient: 58 shards of at most 256 KiB, 15 MB in all.
        println!(
            "100,000 recipients: {} audience shards, {bytes} bytes, largest {largest}",
            shards.len()
        );
        assert_eq!(shards.len(), 58, "{bytes} bytes in {} shards", shards.len());
        assert_eq!(audience.shard_count(), shards.len());
        assert_eq!(Audience::decode(&shards).unwrap(), audience);
    }

    #[test]
    fn the_longest_fields_the_schema_allows_still_fit() {
        // Names of 253, contact names of 256 control characters (6 bytes each in JSON),
        // e-mails of 254, zones of 64.
        let list: Vec<Recipient> = (0..2_000)
            .map(|i| Recipient {
                subscription: format!("{}{i:06}", "s".repeat(247)),
                uid: format!("{i:036}"),
                group: Group::Variant(15),
                email: Some(format!("{}@{i:06}", "e".repeat(247))),
                name: Some("\u{1}".repeat(256)),
                time_zone: Some("Z".repeat(64)),
            })
            .collect();
        let (audience, shards) = Audience::from_recipients(list);
        assert!(shards.iter().all(|s| s.data_bytes() <= SHARD_DATA_LIMIT));
        assert_eq!(Audience::decode(&shards).unwrap(), audience);
    }

    #[test]
    fn a_snapshot_takes_names_uids_groups_and_contacts_from_subscriptions() {
        let subscription = |name: &str, email: Option<&str>| -> Subscription {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1",
                "kind": "Subscription",
                "metadata": {"name": name, "uid": format!("uid-{name}")},
                "spec": {
                    "plan": "team",
                    "contact": {"email": email, "name": "Ada", "timeZone": "Europe/Berlin"},
                },
            }))
            .unwrap()
        };
        let subscriptions = [
            subscription("globex", Some("ops@globex.example")),
            subscription("acme", None),
        ];
        let allocation = Allocation::new("shop/promo", 50, &[1, 1]).unwrap();
        let (audience, shards) = Audience::snapshot(&subscriptions, &allocation);
        let [acme, globex] = audience.recipients() else {
            panic!("two recipients");
        };
        assert_eq!(
            (acme.subscription.as_str(), acme.uid.as_str()),
            ("acme", "uid-acme")
        );
        assert_eq!(acme.email, None);
        assert_eq!(globex.email.as_deref(), Some("ops@globex.example"));
        assert_eq!(globex.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(acme.group, allocation.group("acme"));
        assert_eq!(Audience::decode(&shards).unwrap(), audience);
    }

    #[test]
    fn order_is_by_name_and_duplicates_count_once() {
        let mut list = recipients(50);
        list.reverse();
        list.push(list[0].clone());
        let (audience, _) = Audience::from_recipients(list);
        assert_eq!(audience.recipients(), &recipients(50)[..]);
    }

    #[test]
    fn shard_ranges_cover_the_audience() {
        let (audience, shards) = Audience::from_recipients(recipients(5_000));
        assert!(shards.len() > 1);
        let mut next = 0;
        for index in 0..audience.shard_count() {
            let range = audience.shard_range(index);
            assert_eq!(range.start, next);
            assert_eq!(audience.shard_of(range.start), index);
            assert_eq!(audience.shard_of(range.end - 1), index);
            next = range.end;
        }
        assert_eq!(next, 5_000);
    }

    #[test]
    fn damaged_shards_are_named() {
        let (_, shards) = Audience::from_recipients(recipients(5_000));
        let mut missing = shards.clone();
        missing.remove(1);
        assert_eq!(
            Audience::decode(&missing).unwrap_err(),
            AudienceError::Shards(ShardError::Missing {
                index: 1,
                count: shards.len()
            })
        );
        let mut twice = shards.clone();
        twice.push(shards[0].clone());
        assert_eq!(
            Audience::decode(&twice).unwrap_err(),
            AudienceError::Shards(ShardError::Duplicate { index: 0 })
        );
        let mut corrupt = shards.clone();
        let lines = corrupt[1].data.get_mut("lines").unwrap();
        *lines = lines.replacen("customer", "kustomer", 1);
        let AudienceError::Shards(error) = Audience::decode(&corrupt).unwrap_err();
        assert_eq!(error.index(), Some(1));
        let mut other = recipients(5_000);
        other[0].email = None;
        let (_, other) = Audience::from_recipients(other);
        let mut mixed = shards.clone();
        mixed[0] = other[0].clone();
        assert!(matches!(
            Audience::decode(&mixed).unwrap_err(),
            AudienceError::Shards(ShardError::Inconsistent { .. })
        ));
    }

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let id = message_id("campaign-uid", "subscription-uid");
        assert_eq!(id.len(), 32);
        assert_eq!(id, message_id("campaign-uid", "subscription-uid"));
        assert_ne!(id, message_id("campaign-uid2", "subscription-uid"));
        assert_ne!(id, message_id("campaign-uid", "subscription-uid2"));
    }

    fn recipient_strategy() -> impl Strategy<Value = Recipient> {
        (
            "[a-z0-9]([-a-z0-9.]{0,40}[a-z0-9])?",
            "[0-9a-f-]{36}",
            prop_oneof![Just(Group::HeldOut), (0usize..16).prop_map(Group::Variant)],
            proptest::option::of("\\PC{0,30}"),
            proptest::option::of("[\t\n \"\\\\a-zé]{0,30}"),
            proptest::option::of("[A-Za-z_/]{1,30}"),
        )
            .prop_map(
                |(subscription, uid, group, email, name, time_zone)| Recipient {
                    subscription,
                    uid,
                    group,
                    email,
                    name,
                    time_zone,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip(list in proptest::collection::vec(recipient_strategy(), 0..200)) {
            let (audience, shards) = Audience::from_recipients(list);
            prop_assert_eq!(Audience::decode(&shards).unwrap(), audience);
        }
    }
}
