//! Kubernetes Events about Flotilla objects.
//!
//! Events are for people running `kubectl describe`: controllers publish them when something
//! changes (a phase transition, a blocked deletion, a permanent failure), never on every
//! reconcile. Publishing is best effort: a failure is logged and never fails the reconcile,
//! because the status already carries the same information.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

/// Most bytes in an Event note (the API server's limit is 1 kB).
const MAX_NOTE_BYTES: usize = 1024;

/// Publishes an Event about `object` (best effort; see the module docs).
pub async fn publish<K>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: impl Into<String>,
) where
    K: Resource<DynamicType = ()>,
{
    let reference = object.object_ref(&());
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note.into(), MAX_NOTE_BYTES)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::warn!(%error, reason, "could not publish Event");
    }
}

/// Renders names as a bounded, human list: `a, b, c and 4 more`. Events and condition messages
/// name the objects involved without growing with their number.
pub fn bounded_list(names: &[String], max: usize) -> String {
    let shown = names.len().min(max);
    bounded_count(&names[..shown], names.len())
}

/// Like [`bounded_list`], from the names to show and the total count of names (for callers
/// that only hold the first few).
pub fn bounded_count(shown: &[String], total: usize) -> String {
    let mut text = shown.join(", ");
    if total > shown.len() {
        text.push_str(&format!(" and {} more", total - shown.len()));
    }
    text
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("s{i}")).collect()
    }

    #[test]
    fn short_lists_are_complete() {
        assert_eq!(bounded_list(&names(0), 3), "");
        assert_eq!(bounded_list(&names(3), 3), "s1, s2, s3");
    }

    #[test]
    fn long_lists_say_how_many_are_left_out() {
        assert_eq!(bounded_list(&names(7), 3), "s1, s2, s3 and 4 more");
        assert_eq!(bounded_count(&names(2), 9), "s1, s2 and 7 more");
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let cut = truncate(long, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".into(), MAX_NOTE_BYTES), "short");
    }
}
