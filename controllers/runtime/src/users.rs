//! The objects that use another — the Subscriptions of a Plan, the live rollouts of a
//! FirmwareRelease, the live Campaigns of a Channel: counted and named in the used object's
//! `InUse` condition, and holding its deletion (finalizer) until none is left.

use flotilla_crds::Condition;
use flotilla_crds::condition::{ConditionStatus, find_condition, reasons, types};

use crate::conditions::{ConditionUpdate, changed};
use crate::events::{Planned, bounded_count};

/// Event reason: the deletion waits for the users the note names.
pub const DELETION_BLOCKED: &str = "DeletionBlocked";
/// Event reason: no user is left; the deletion proceeds.
pub const DELETION_ALLOWED: &str = "DeletionAllowed";

/// The users of an object: how many, and the first names in the order given (callers pass
/// them sorted, so messages are stable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    /// How many there are.
    pub count: usize,
    /// The first names.
    pub first: Vec<String>,
}

impl Users {
    /// Counts `names`, keeping the first `keep`.
    pub fn bounded(names: impl IntoIterator<Item = String>, keep: usize) -> Self {
        let mut users = Users::default();
        for name in names {
            if users.first.len() < keep {
                users.first.push(name);
            }
            users.count += 1;
        }
        users
    }

    /// Whether nothing uses the object.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// How a kind's `InUse` condition and Events word its users.
#[derive(Clone, Copy, Debug)]
pub struct Wording {
    /// One user, with any qualifier: `Subscription`, `running FirmwareRollout`.
    pub one: &'static str,
    /// Several users: `Subscriptions`, `running FirmwareRollouts`.
    pub many: &'static str,
    /// The used object as messages call it: `plan`, `release`, `channel`.
    pub object: &'static str,
    /// How a use is said: `referenced by`, `used by`.
    pub used_by: &'static str,
    /// The message when nothing uses it: `no Subscription references this plan`.
    pub unused: &'static str,
    /// The condition reason while used and not being deleted.
    pub referenced: &'static str,
    /// How many names a message shows.
    pub named: usize,
}

/// The `InUse` condition: False when unused; True with the users named, `DeletionBlocked`
/// while the object is being deleted.
pub fn in_use_condition(users: &Users, deleting: bool, wording: &Wording) -> ConditionUpdate {
    if users.is_empty() {
        return ConditionUpdate::new(
            types::IN_USE,
            ConditionStatus::False,
            reasons::NOT_REFERENCED,
            wording.unused,
        );
    }
    let shown = &users.first[..users.first.len().min(wording.named)];
    let named = bounded_count(shown, users.count);
    let count = users.count;
    let noun = if count == 1 {
        wording.one
    } else {
        wording.many
    };
    if deleting {
        ConditionUpdate::new(
            types::IN_USE,
            ConditionStatus::True,
            reasons::DELETION_BLOCKED,
            format!(
                "deletion waits for {count} {noun} that use this {}: {named}",
                wording.object
            ),
        )
    } else {
        ConditionUpdate::new(
            types::IN_USE,
            ConditionStatus::True,
            wording.referenced,
            format!("{} {count} {noun}: {named}", wording.used_by),
        )
    }
}

/// A Warning when the deletion became blocked or its blockers changed; nothing otherwise.
pub fn deletion_blocked_event(before: &[Condition], after: &[Condition]) -> Option<Planned> {
    let in_use = find_condition(after, types::IN_USE)?;
    (in_use.reason == reasons::DELETION_BLOCKED
        && changed(find_condition(before, types::IN_USE), in_use))
    .then(|| Planned::warning(DELETION_BLOCKED, in_use.message.clone()))
}

/// The Event published when the last user let go of a deleted object.
pub fn deletion_allowed_event(wording: &Wording) -> Planned {
    Planned::normal(
        DELETION_ALLOWED,
        format!("{} any more; deletion proceeds", wording.unused),
    )
}

/// Events for the `Ready` condition of a kind that is valid or not by its spec alone: a
/// Normal `valid_reason` when it became valid, a Warning `invalid_reason` with the errors when
/// it became invalid or its errors changed.
pub fn validity_event(
    before: &[Condition],
    after: &[Condition],
    valid: (&'static str, &str),
    invalid_reason: &'static str,
) -> Option<Planned> {
    let ready = find_condition(after, types::READY)?;
    if !changed(find_condition(before, types::READY), ready) {
        return None;
    }
    Some(if ready.status == ConditionStatus::True.as_str() {
        Planned::normal(valid.0, valid.1)
    } else {
        Planned::warning(invalid_reason, ready.message.clone())
    })
}

/// The Events of a used kind whose readiness depends on its spec alone (Plan,
/// FirmwareRelease): [`validity_event`] and [`deletion_blocked_event`], in that order. An
/// unchanged status yields none, so steady-state reconciles stay silent.
pub fn transition_events(
    before: &[Condition],
    after: &[Condition],
    valid: (&'static str, &str),
    invalid_reason: &'static str,
) -> Vec<Planned> {
    validity_event(before, after, valid, invalid_reason)
        .into_iter()
        .chain(deletion_blocked_event(before, after))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::set_condition;
    use jiff::Timestamp;

    const PLAN: Wording = Wording {
        one: "Subscription",
        many: "Subscriptions",
        object: "plan",
        used_by: "referenced by",
        unused: "no Subscription references this plan",
        referenced: reasons::REFERENCED_BY_SUBSCRIPTIONS,
        named: 2,
    };

    fn names(n: usize) -> Users {
        Users::bounded((0..n).map(|i| format!("s{i}")), 3)
    }

    #[test]
    fn counts_every_user_and_keeps_the_first() {
        let users = names(5);
        assert_eq!(users.count, 5);
        assert_eq!(users.first, ["s0", "s1", "s2"]);
        assert!(Users::bounded(Vec::new(), 3).is_empty());
    }

    #[test]
    fn the_condition_names_a_bounded_number_of_users() {
        let unused = in_use_condition(&names(0), false, &PLAN);
        assert_eq!(
            (unused.status, unused.reason),
            (ConditionStatus::False, reasons::NOT_REFERENCED)
        );
        let used = in_use_condition(&names(1), false, &PLAN);
        assert_eq!(used.message, "referenced by 1 Subscription: s0");
        let blocked = in_use_condition(&names(5), true, &PLAN);
        assert_eq!(blocked.reason, reasons::DELETION_BLOCKED);
        assert_eq!(
            blocked.message,
            "deletion waits for 5 Subscriptions that use this plan: s0, s1 and 3 more"
        );
    }

    #[test]
    fn a_blocked_deletion_is_told_once_per_change() {
        let now = Timestamp::UNIX_EPOCH;
        let mut before = Vec::new();
        let mut after = Vec::new();
        set_condition(
            &mut after,
            in_use_condition(&names(2), true, &PLAN),
            None,
            now,
        );
        let event = deletion_blocked_event(&before, &after).expect("blocked");
        assert_eq!(event.reason, DELETION_BLOCKED);
        set_condition(
            &mut before,
            in_use_condition(&names(2), true, &PLAN),
            None,
            now,
        );
        assert_eq!(deletion_blocked_event(&before, &after), None);
        assert_eq!(
            deletion_allowed_event(&PLAN).note,
            "no Subscription references this plan any more; deletion proceeds"
        );
    }
}
