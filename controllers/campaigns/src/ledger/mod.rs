//! The delivery ledger: a campaign never skips a recipient and never sends twice, even across
//! crashes. The audience is fixed when the campaign starts ([`audience`]), each recipient's
//! delivery state is persisted in batches ([`progress`]), both in ConfigMaps the Campaign owns
//! ([`store`]), so 100,000 recipients take 58 + 58 objects of at most 256 KiB of data.
//!
//! | Guarantee | How |
//! |---|---|
//! | later Subscription changes do not change who is targeted | the snapshot holds names, UIDs, groups and contact fields |
//! | no recipient skipped | Pending only moves to Claimed, and a claim is persisted before sending |
//! | a re-send carries the same id | [`audience::message_id`] (campaign UID, Subscription UID) |
//! | re-sends after a crash ≤ claimed and not yet recorded | outcomes flush with the next claim of their shard, or by count or age |
//! | few writes | one write per claimed batch (carrying the previous outcomes), plus flushes |
//! | no blind overwrite | every progress write is a replace under its `resourceVersion`; 409 → reload |
//!
//! A later opt-out is the sender's to check at send time ([`progress::DeliveryResult::OptedOut`]).
//!
//! A Campaign controller: [`LedgerStore::open`] (snapshot only if the start never committed);
//! then, within the throttle, [`LedgerStore::claim`] → send each [`Claim`] with its
//! `message_id` → [`DeliveryLedger::record`] → [`LedgerStore::flush_if_due`]; requeue at
//! [`DeliveryLedger::flush_due_at`] / [`DeliveryLedger::next_attempt_at`]; status from
//! [`DeliveryLedger::counts`]. After [`LedgerError::Conflict`], drop the ledger and open again.

pub mod audience;
pub mod progress;
pub mod store;

pub use audience::{Audience, Recipient, message_id};
pub use progress::{Claim, Delivery, DeliveryLedger, DeliveryResult, FlushPolicy, LedgerCounts};
pub use store::{LedgerError, LedgerStore};
