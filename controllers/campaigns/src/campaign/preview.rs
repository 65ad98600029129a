//! When the last message of a campaign would go out, for the preview a reviewer reads before
//! it sends: each recipient's earliest moment (the start, or the start's wall-clock time in
//! their zone with `localTime`, moved past quiet hours there), then the throttle spreading the
//! sends over time, never sending into anyone's quiet hours.
//!
//! Recipients are grouped by zone: a zone's members share their earliest moment and their
//! quiet hours, so the estimate costs per zone and per minute of sending, not per recipient.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::quiet_hours::{QuietHours, local_send_at};

/// Most simulated steps: an estimate past this many minutes of sending is reported as not
/// known rather than computed for ever.
const MAX_STEPS: usize = 200_000;

/// The recipients of one time zone.
#[derive(Clone, Debug)]
pub struct ZoneGroup {
    /// Their zone.
    pub zone: TimeZone,
    /// How many recipients it holds.
    pub recipients: u64,
}

/// What the estimate depends on.
#[derive(Clone, Debug)]
pub struct Schedule<'a> {
    /// `schedule.startAt` as written.
    pub start_at: Timestamp,
    /// Nothing goes out before this: now, for a start in the past.
    pub not_before: Timestamp,
    /// `schedule.localTime`: `start_at` is a wall-clock time in each recipient's zone.
    pub local_time: bool,
    /// The campaign's quiet hours.
    pub quiet_hours: Option<&'a QuietHours>,
    /// Messages per minute the campaign may send (its throttle or its channel's rate limit,
    /// whichever is lower); `None` for no limit.
    pub per_minute: Option<u64>,
}

/// When a recipient in `zone` may first be sent to.
pub fn earliest(schedule: &Schedule<'_>, zone: &TimeZone) -> Timestamp {
    // A zone whose hour has passed when the campaign starts is sent to late, never skipped.
    let at = if schedule.local_time {
        local_send_at(schedule.start_at, zone)
    } else {
        schedule.start_at
    }
    .max(schedule.not_before);
    match schedule.quiet_hours {
        Some(quiet) => quiet.next_allowed(at, zone),
        None => at,
    }
}

/// The moment the last message would go out, or `None` with nobody to send to or when the
/// sends would take longer than the estimate looks ahead.
pub fn estimated_finish(schedule: &Schedule<'_>, groups: &[ZoneGroup]) -> Option<Timestamp> {
    let mut pending: Vec<(Timestamp, &ZoneGroup, u64)> = groups
        .iter()
        .filter(|g| g.recipients > 0)
        .map(|g| (earliest(schedule, &g.zone), g, g.recipients))
        .collect();
    if pending.is_empty() {
        return None;
    }
    let Some(per_minute) = schedule.per_minute.filter(|&r| r > 0) else {
        return pending.iter().map(|(at, _, _)| *at).max();
    };
    pending.sort_by_key(|(at, _, _)| *at);
    let minute = SignedDuration::from_secs(60);
    let mut now = pending[0].0;
    let mut last = now;
    for _ in 0..MAX_STEPS {
        // One minute's budget, shared in earliest-first order among the zones allowed now.
        let mut budget = per_minute;
        let mut next_opening: Option<Timestamp> = None;
        for (at, group, left) in pending.iter_mut().filter(|(_, _, left)| *left > 0) {
            let allowed = match schedule.quiet_hours {
                Some(quiet) => quiet.next_allowed(now.max(*at), &group.zone),
                None => now.max(*at),
            };
            if allowed > now {
                next_opening = Some(next_opening.map_or(allowed, |n| n.min(allowed)));
                continue;
            }
            let sent = budget.min(*left);
            if sent > 0 {
                *left -= sent;
                budget -= sent;
                // The last of them goes out `sent / per_minute` into this minute.
                let offset = SignedDuration::from_secs_f64(
                    60.0 * (per_minute - budget) as f64 / per_minute as f64,
                );
                last = last.max(now + offset);
            }
            if *left > 0 && budget == 0 {
                next_opening = Some(now + minute);
            }
        }
        if pending.iter().all(|(_, _, left)| *left == 0) {
            return Some(last);
        }
        now = match next_opening {
            Some(at) if budget > 0 => at.max(now),
            _ => now + minute,
        };
    }
    None
}

/// Recipients by zone: `zones` yields each recipient's zone name, or `None` for the default.
/// Unknown zone names count in the default zone (validation reports them elsewhere).
pub fn group_by_zone<'a>(
    zones: impl IntoIterator<Item = Option<&'a str>>,
    default: &TimeZone,
) -> Vec<ZoneGroup> {
    let mut counts: BTreeMap<Option<&str>, u64> = BTreeMap::new();
    for zone in zones {
        *counts.entry(zone).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(name, recipients)| ZoneGroup {
            zone: name
                .and_then(|n| TimeZone::get(n).ok())
                .unwrap_or_else(|| default.clone()),
            recipients,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc(recipients: u64) -> Vec<ZoneGroup> {
        vec![ZoneGroup {
            zone: TimeZone::UTC,
            recipients,
        }]
    }

    fn schedule(start: &str, per_minute: Option<u64>) -> Schedule<'static> {
        Schedule {
            start_at: ts(start),
            not_before: ts(start),
            local_time: false,
            quiet_hours: None,
            per_minute,
        }
    }

    #[test]
    fn unthrottled_everything_goes_at_the_start() {
        let s = schedule("2026-12-01T10:00:00Z", None);
        assert_eq!(
            estimated_finish(&s, &utc(100_000)),
            Some(ts("2026-12-01T10:00:00Z"))
        );
        assert_eq!(estimated_finish(&s, &utc(0)), None);
    }

    #[test]
    fn the_throttle_spreads_the_sends() {
        // 20,000 at 6,000 a minute: three full minutes and a third of one.
        let s = schedule("2026-12-01T10:00:00Z", Some(6_000));
        assert_eq!(
            estimated_finish(&s, &utc(20_000)),
            Some(ts("2026-12-01T10:03:20Z"))
        );
        assert_eq!(
            estimated_finish(&s, &utc(6_000)),
            Some(ts("2026-12-01T10:01:00Z"))
        );
    }

    #[test]
    fn quiet_hours_hold_the_rest_until_morning() {
        let quiet = QuietHours::new("21:00", "08:00").unwrap();
        let s = Schedule {
            quiet_hours: Some(&quiet),
            ..schedule("2026-12-01T20:58:00Z", Some(100))
        };
        // 200 go out before 21:00, the other 100 from 08:00.
        assert_eq!(
            estimated_finish(&s, &utc(300)),
            Some(ts("2026-12-02T08:01:00Z"))
        );
        // Starting inside the window waits for its end.
        let night = Schedule {
            quiet_hours: Some(&quiet),
            ..schedule("2026-12-01T23:00:00Z", None)
        };
        assert_eq!(
            estimated_finish(&night, &utc(5)),
            Some(ts("2026-12-02T08:00:00Z"))
        );
    }

    #[test]
    fn local_time_finishes_in_the_last_zone_to_reach_the_hour() {
        let s = Schedule {
            local_time: true,
            not_before: ts("2026-11-30T12:00:00Z"),
            ..schedule("2026-12-01T09:00:00Z", None)
        };
        let zones = group_by_zone(
            [
                Some("Europe/Berlin"),
                Some("America/New_York"),
                None,
                Some("Asia/Tokyo"),
            ],
            &TimeZone::UTC,
        );
        assert_eq!(zones.iter().map(|g| g.recipients).sum::<u64>(), 4);
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(earliest(&s, &tokyo), ts("2026-12-01T00:00:00Z"));
        // 09:00 in New York is 14:00Z, the last zone to get there.
        assert_eq!(
            estimated_finish(&s, &zones),
            Some(ts("2026-12-01T14:00:00Z"))
        );
        // Started late, at 10:00Z: Tokyo and Berlin are sent to then, not skipped.
        let late = Schedule {
            not_before: ts("2026-12-01T10:00:00Z"),
            ..s
        };
        assert_eq!(earliest(&late, &tokyo), ts("2026-12-01T10:00:00Z"));
        assert_eq!(
            estimated_finish(&late, &zones),
            Some(ts("2026-12-01T14:00:00Z"))
        );
    }
}
