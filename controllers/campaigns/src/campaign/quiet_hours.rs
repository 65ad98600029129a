//! When a recipient may be messaged: quiet hours are a daily wall-clock window in the
//! recipient's own time zone (it may span midnight), and a local-time schedule sends at a
//! wall-clock time in that zone. All arithmetic is on civil time in the zone (jiff), so the
//! days DST starts or ends are neither an hour short nor long: a time that does not exist (the
//! spring gap) ends a quiet window when the clocks jump over it and moves a local-time send
//! forward by the jump (02:30 → 03:30), an ambiguous one (the autumn repeat) is the first
//! occurrence that has not passed.

use jiff::civil::{DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, Zoned};

/// Why quiet hours or a time zone cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuietHoursError {
    /// Not `HH:MM`.
    #[error("{field}: {value:?} is not a time of day (HH:MM)")]
    TimeOfDay { field: &'static str, value: String },
    /// Start equals end.
    #[error("spec.quietHours: start and end are both {0}; a window needs two different times")]
    Empty(String),
    /// Not an IANA zone.
    #[error("{field}: {value:?} is not an IANA time zone")]
    TimeZone { field: &'static str, value: String },
}

/// An IANA time zone by name; `field` names where it came from in errors.
pub fn time_zone(field: &'static str, name: &str) -> Result<TimeZone, QuietHoursError> {
    TimeZone::get(name).map_err(|_| QuietHoursError::TimeZone {
        field,
        value: name.to_owned(),
    })
}

fn time_of_day(field: &'static str, value: &str) -> Result<Time, QuietHoursError> {
    let error = || QuietHoursError::TimeOfDay {
        field,
        value: value.to_owned(),
    };
    let (hour, minute) = value.split_once(':').ok_or_else(error)?;
    if hour.len() != 2 || minute.len() != 2 {
        return Err(error());
    }
    let hour: i8 = hour.parse().map_err(|_| error())?;
    let minute: i8 = minute.parse().map_err(|_| error())?;
    Time::new(hour, minute, 0, 0).map_err(|_| error())
}

/// A daily quiet window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    start: Time,
    end: Time,
}

impl QuietHours {
    /// From `HH:MM` start and end.
    pub fn new(start: &str, end: &str) -> Result<Self, QuietHoursError> {
        let start_time = time_of_day("spec.quietHours.start", start)?;
        let end_time = time_of_day("spec.quietHours.end", end)?;
        if start_time == end_time {
            return Err(QuietHoursError::Empty(start.to_owned()));
        }
        Ok(Self {
            start: start_time,
            end: end_time,
        })
    }

    fn quiet_at(&self, local: Time) -> bool {
        if self.start < self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }

    /// The first moment at or after `at` outside the window in `zone`: `at` itself when it is
    /// not quiet there.
    pub fn next_allowed(&self, at: Timestamp, zone: &TimeZone) -> Timestamp {
        let local = at.to_zoned(zone.clone());
        if !self.quiet_at(local.time()) {
            return at;
        }
        // The window ends today, or (spanning midnight, before it) tomorrow.
        let mut date = local.date();
        if self.start > self.end && local.time() >= self.start {
            date = date.tomorrow().expect("not the end of time");
        }
        first_not_before(zone, date.to_datetime(self.end), at)
    }
}

/// The first instant at or after `not_before` whose wall clock in `zone` has reached `civil`:
/// when the clocks jump over `civil` (spring), the jump; when `civil` happens twice (autumn),
/// the first occurrence not yet passed.
fn first_not_before(zone: &TimeZone, civil: DateTime, not_before: Timestamp) -> Timestamp {
    let ambiguous = zone.to_ambiguous_timestamp(civil);
    let earlier = ambiguous.earlier().expect("a civil time in range");
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { .. } => earlier,
        AmbiguousOffset::Gap { .. } => zone
            .following(earlier)
            .next()
            .map_or(earlier, |transition| transition.timestamp()),
        AmbiguousOffset::Fold { .. } if earlier >= not_before => earlier,
        AmbiguousOffset::Fold { .. } => ambiguous.later().expect("a civil time in range"),
    }
}

/// A local-time schedule: `start_at`'s date and time of day as written in UTC, read as a wall
/// clock in `zone` (so 09:00Z means 09:00 for every recipient, each in their own zone).
pub fn local_send_at(start_at: Timestamp, zone: &TimeZone) -> Timestamp {
    let civil = start_at.to_zoned(TimeZone::UTC).datetime();
    // Compatible disambiguation: a gap moves forward, a repeat takes the first occurrence.
    zone.to_ambiguous_zoned(civil)
        .compatible()
        .map(|z: Zoned| z.timestamp())
        .expect("a civil time in range")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    #[test]
    fn a_window_across_midnight_holds_until_its_end_in_the_recipients_zone() {
        let quiet = QuietHours::new("21:00", "08:00").unwrap();
        let zone = berlin();
        // 19:30Z is 20:30 in Berlin (CET, +1): not quiet.
        let before = ts("2026-01-15T19:30:00Z");
        assert_eq!(quiet.next_allowed(before, &zone), before);
        // 21:30 Berlin → 08:00 Berlin tomorrow = 07:00Z.
        assert_eq!(
            quiet.next_allowed(ts("2026-01-15T20:30:00Z"), &zone),
            ts("2026-01-16T07:00:00Z")
        );
        // 03:00 Berlin → 08:00 Berlin the same day.
        assert_eq!(
            quiet.next_allowed(ts("2026-01-16T02:00:00Z"), &zone),
            ts("2026-01-16T07:00:00Z")
        );
        // The end itself is allowed.
        let end = ts("2026-01-16T07:00:00Z");
        assert_eq!(quiet.next_allowed(end, &zone), end);
    }

    #[test]
    fn a_daytime_window_and_another_zone() {
        let quiet = QuietHours::new("12:00", "13:30").unwrap();
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        // 03:15Z is 12:15 in Tokyo (+9) → 13:30 Tokyo = 04:30Z.
        assert_eq!(
            quiet.next_allowed(ts("2026-06-01T03:15:00Z"), &tokyo),
            ts("2026-06-01T04:30:00Z")
        );
        let early = ts("2026-06-01T02:59:00Z");
        assert_eq!(quiet.next_allowed(early, &tokyo), early);
    }

    #[test]
    fn the_night_dst_starts_is_an_hour_shorter() {
        // Berlin springs forward on 2026-03-29 at 02:00 → 03:00.
        let quiet = QuietHours::new("22:00", "08:00").unwrap();
        let zone = berlin();
        // 23:00 CET on the 28th (22:00Z) → 08:00 CEST (+2) on the 29th = 06:00Z: 7 hours later.
        assert_eq!(
            quiet.next_allowed(ts("2026-03-28T22:00:00Z"), &zone),
            ts("2026-03-29T06:00:00Z")
        );
        // A window ending inside the gap ends when the gap does.
        let gap = QuietHours::new("01:00", "02:30").unwrap();
        assert_eq!(
            gap.next_allowed(ts("2026-03-29T00:30:00Z"), &zone),
            ts("2026-03-29T01:00:00Z"),
            "01:30 CET → 03:00 CEST"
        );
    }

    #[test]
    fn the_night_dst_ends_is_an_hour_longer_and_a_repeated_end_is_not_passed_twice() {
        // Berlin falls back on 2026-10-25 at 03:00 CEST → 02:00 CET.
        let quiet = QuietHours::new("22:00", "08:00").unwrap();
        let zone = berlin();
        // 23:00 CEST on the 24th (21:00Z) → 08:00 CET (+1) on the 25th = 07:00Z: 10 hours.
        assert_eq!(
            quiet.next_allowed(ts("2026-10-24T21:00:00Z"), &zone),
            ts("2026-10-25T07:00:00Z")
        );
        // Quiet 00:00–02:30: 02:30 happens twice. Before the first, the first ends it.
        let repeat = QuietHours::new("00:00", "02:30").unwrap();
        assert_eq!(
            repeat.next_allowed(ts("2026-10-24T23:00:00Z"), &zone),
            ts("2026-10-25T00:30:00Z"),
            "01:00 CEST → 02:30 CEST"
        );
        // At 02:10 the second time (CET, 01:10Z) the wall clock is inside the window again;
        // the end still to come is 02:30 CET.
        assert_eq!(
            repeat.next_allowed(ts("2026-10-25T01:10:00Z"), &zone),
            ts("2026-10-25T01:30:00Z")
        );
    }

    #[test]
    fn local_time_sends_at_the_wall_clock_in_each_zone() {
        let at = ts("2026-12-05T09:00:00Z");
        assert_eq!(local_send_at(at, &berlin()), ts("2026-12-05T08:00:00Z"));
        let new_york = TimeZone::get("America/New_York").unwrap();
        assert_eq!(local_send_at(at, &new_york), ts("2026-12-05T14:00:00Z"));
        assert_eq!(local_send_at(at, &TimeZone::UTC), at);
        // 02:30 on the day Berlin springs forward does not exist: 03:30 CEST, as the clocks moved.
        assert_eq!(
            local_send_at(ts("2026-03-29T02:30:00Z"), &berlin()),
            ts("2026-03-29T01:30:00Z")
        );
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            QuietHours::new("25:00", "08:00"),
            Err(QuietHoursError::TimeOfDay {
                field: "spec.quietHours.start",
                ..
            })
        ));
        assert!(matches!(
            QuietHours::new("21:00", "8:00"),
            Err(QuietHoursError::TimeOfDay {
                field: "spec.quietHours.end",
                ..
            })
        ));
        assert_eq!(
            QuietHours::new("21:00", "21:00"),
            Err(QuietHoursError::Empty("21:00".into()))
        );
        assert!(time_zone("spec.quietHours.defaultTimeZone", "Mars/Olympus").is_err());
        assert!(time_zone("x", "America/Argentina/Buenos_Aires").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn the_answer_is_never_earlier_and_never_quiet(
            secs in 1_700_000_000i64..1_900_000_000,
            start in 0i8..24, end in 0i8..24, zone in 0usize..4,
        ) {
            proptest::prop_assume!(start != end);
            let quiet = QuietHours::new(&format!("{start:02}:00"), &format!("{end:02}:00")).unwrap();
            let zone = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"][zone];
            let zone = TimeZone::get(zone).unwrap();
            let at = Timestamp::from_second(secs).unwrap();
            let next = quiet.next_allowed(at, &zone);
            proptest::prop_assert!(next >= at);
            proptest::prop_assert!(!quiet.quiet_at(next.to_zoned(zone.clone()).time()));
            proptest::prop_assert!(next.duration_since(at).as_hours() <= 24);
        }
    }
}
