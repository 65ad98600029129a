//! The maintenance window: when a rollout may assign devices.
//!
//! A window *occurrence* belongs to the civil date it opens on (`days` name that date's
//! weekday; empty means every day). It runs from `start` on that date to `end` on the same
//! date, or on the next date when `end` is before `start` (it spans midnight), and is the
//! half-open interval `[opening, closing)`.
//!
//! Wall-clock times are turned into instants by one rule, for both ends: *the first instant
//! at which the local clock shows that time or later*.
//! - In the spring-forward gap (02:30 does not exist in Berlin on the last Sunday of March)
//!   that is the transition itself: a 02:30 start opens at 03:00 CEST, not an hour late.
//! - In the autumn fold (02:30 happens twice) it is the first 02:30. A window spanning the
//!   fold is an hour longer in real time, one spanning the gap an hour shorter; a window
//!   whose both ends fall in the gap (02:10–02:50 on that day) does not open that day.

use flotilla_crds::common::TimeOfDay;
use flotilla_crds::firmware_rollout::MaintenanceWindow;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// Occurrences are at most about a day long, so a week and a bit always finds the next one
/// (unless every occurrence collapses in a gap, which no real zone does).
const SEARCH_DAYS: i32 = 9;

/// Why a `MaintenanceWindow` cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `start` or `end` is not `HH:MM`.
    #[error("{field} {value:?} is not a time of day HH:MM")]
    TimeOfDay {
        /// `start` or `end`.
        field: &'static str,
        /// The text as written.
        value: String,
    },
    /// `start` equals `end`: the window would be empty (or everything; neither is meant).
    #[error("the window starts and ends at {0}")]
    Empty(String),
    /// The time zone is not in the IANA database.
    #[error("unknown IANA time zone {0:?}")]
    TimeZone(String),
}

/// A parsed maintenance window.
#[derive(Clone, Debug)]
pub struct Window {
    /// Weekdays the window opens on; all seven when the spec lists none.
    days: [bool; 7],
    start: Time,
    end: Time,
    zone: TimeZone,
}

/// One occurrence of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Occurrence {
    opening: Timestamp,
    closing: Timestamp,
}

impl Window {
    /// Parses the spec's window.
    pub fn new(spec: &MaintenanceWindow) -> Result<Self, WindowError> {
        let time = |field, value: &str| {
            TimeOfDay::parse(value)
                .map(|t| Time::constant(t.hour as i8, t.minute as i8, 0, 0))
                .ok_or_else(|| WindowError::TimeOfDay {
                    field,
                    value: value.to_owned(),
                })
        };
        let start = time("start", &spec.start)?;
        let end = time("end", &spec.end)?;
        if start == end {
            return Err(WindowError::Empty(spec.start.clone()));
        }
        let zone = TimeZone::get(&spec.time_zone)
            .map_err(|_| WindowError::TimeZone(spec.time_zone.clone()))?;
        let mut days = [spec.days.is_empty(); 7];
        for day in &spec.days {
            days[weekday_index(day.to_jiff())] = true;
        }
        Ok(Self {
            days,
            start,
            end,
            zone,
        })
    }

    /// Whether the window is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.containing(at).is_some()
    }

    /// The earliest instant at or after `at` when the window is open: `at` itself when it is
    /// open now. `None` only if no occurrence opens within the next week.
    pub fn next_opening(&self, at: Timestamp) -> Option<Timestamp> {
        let today = self.zone.to_datetime(at).date();
        (-1..SEARCH_DAYS)
            .filter_map(|offset| self.occurrence(today.checked_add(offset.days()).ok()?))
            .find(|occurrence| occurrence.closing > at)
            .map(|occurrence| occurrence.opening.max(at))
    }

    /// When the window, open at `at`, closes: the end of the occurrence containing `at`,
    /// carried over occurrences that follow without a gap. `None` when closed at `at`.
    pub fn closing(&self, at: Timestamp) -> Option<Timestamp> {
        let mut closing = self.containing(at)?.closing;
        // Back-to-back occurrences (only possible when a DST gap swallows the time between
        // them) make one open stretch; bounded, since each step is a later date.
        for _ in 0..SEARCH_DAYS {
            match self.containing(closing) {
                Some(next) if next.closing > closing => closing = next.closing,
                _ => break,
            }
        }
        Some(closing)
    }

    fn containing(&self, at: Timestamp) -> Option<Occurrence> {
        let today = self.zone.to_datetime(at).date();
        // An occurrence that opened yesterday may still run (it spans midnight, or DST
        // stretched it).
        [-1, 0]
            .into_iter()
            .filter_map(|offset| self.occurrence(today.checked_add(offset.days()).ok()?))
            .find(|occurrence| occurrence.opening <= at && at < occurrence.closing)
    }

    /// The occurrence opening on `date`, if the window opens that weekday and the occurrence
    /// is not empty.
    fn occurrence(&self, date: Date) -> Option<Occurrence> {
        if !self.days[weekday_index(date.weekday())] {
            return None;
        }
        let end_date = if self.end < self.start {
            date.tomorrow().ok()?
        } else {
            date
        };
        let opening = self.first_instant_showing(date.to_datetime(self.start))?;
        let closing = self.first_instant_showing(end_date.to_datetime(self.end))?;
        (opening < closing).then_some(Occurrence { opening, closing })
    }

    /// The first instant at which the local clock shows `wall` or later.
    fn first_instant_showing(&self, wall: DateTime) -> Option<Timestamp> {
        let ambiguous = self.zone.to_ambiguous_timestamp(wall);
        match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
                ambiguous.earlier().ok()
            }
            // `earlier()` in a gap is the instant before the jump that the old offset would
            // give; the jump itself is the first instant the clock shows `wall` or later.
            AmbiguousOffset::Gap { .. } => {
                let before_gap = ambiguous.earlier().ok()?;
                self.zone
                    .following(before_gap)
                    .next()
                    .map(|transition| transition.timestamp())
            }
        }
    }
}

fn weekday_index(day: Weekday) -> usize {
    day.to_monday_zero_offset() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::common::Weekday as Day;
    use proptest::prelude::*;

    fn window(days: &[Day], start: &str, end: &str, zone: &str) -> Window {
        Window::new(&MaintenanceWindow {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            time_zone: zone.into(),
        })
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn invalid_windows_are_errors() {
        let spec = |start: &str, end: &str, zone: &str| MaintenanceWindow {
            days: vec![],
            start: start.into(),
            end: end.into(),
            time_zone: zone.into(),
        };
        assert_eq!(
            Window::new(&spec("22:00", "04:00", "Mars/Olympus")).unwrap_err(),
            WindowError::TimeZone("Mars/Olympus".into())
        );
        assert_eq!(
            Window::new(&spec("22:00", "22:00", "UTC")).unwrap_err(),
            WindowError::Empty("22:00".into())
        );
        assert!(matches!(
            Window::new(&spec("24:00", "04:00", "UTC")).unwrap_err(),
            WindowError::TimeOfDay { field: "start", .. }
        ));
        assert!(matches!(
            Window::new(&spec("01:00", "4:00", "UTC")).unwrap_err(),
            WindowError::TimeOfDay { field: "end", .. }
        ));
    }

    #[test]
    fn every_day_when_days_are_empty() {
        let w = window(&[], "09:00", "17:00", "UTC");
        for day in 1..=7 {
            let noon = ts(&format!("2030-07-0{day}T12:00:00Z"));
            assert!(w.is_open(noon), "day {day}");
        }
        assert!(!w.is_open(ts("2030-07-01T17:00:00Z")), "end is exclusive");
        assert!(w.is_open(ts("2030-07-01T09:00:00Z")), "start is inclusive");
        assert!(!w.is_open(ts("2030-07-01T08:59:59Z")));
        assert_eq!(
            w.next_opening(ts("2030-07-01T18:00:00Z")),
            Some(ts("2030-07-02T09:00:00Z"))
        );
        assert_eq!(
            w.closing(ts("2030-07-01T10:00:00Z")),
            Some(ts("2030-07-01T17:00:00Z"))
        );
        assert_eq!(w.closing(ts("2030-07-01T18:00:00Z")), None);
    }

    #[test]
    fn a_single_weekday() {
        // 2030-07-06 is a Saturday.
        let w = window(&[Day::Saturday], "10:00", "12:00", "UTC");
        assert!(w.is_open(ts("2030-07-06T11:00:00Z")));
        assert!(!w.is_open(ts("2030-07-07T11:00:00Z")));
        assert!(!w.is_open(ts("2030-07-05T11:00:00Z")));
        assert_eq!(
            w.next_opening(ts("2030-07-06T12:00:00Z")),
            Some(ts("2030-07-13T10:00:00Z"))
        );
        assert_eq!(
            w.next_opening(ts("2030-07-06T11:00:00Z")),
            Some(ts("2030-07-06T11:00:00Z")),
            "open now: now"
        );
    }

    #[test]
    fn across_midnight_belongs_to_the_opening_day() {
        // Saturday 22:00 to Sunday 04:00; Sunday evening is closed.
        let w = window(&[Day::Saturday], "22:00", "04:00", "UTC");
        assert!(w.is_open(ts("2030-07-06T23:30:00Z")));
        assert!(w.is_open(ts("2030-07-07T03:59:00Z")), "Sunday morning");
        assert!(!w.is_open(ts("2030-07-07T04:00:00Z")));
        assert!(!w.is_open(ts("2030-07-07T23:00:00Z")), "Sunday night");
        assert!(
            !w.is_open(ts("2030-07-06T03:00:00Z")),
            "Saturday morning belongs to Friday"
        );
        assert_eq!(
            w.closing(ts("2030-07-06T23:00:00Z")),
            Some(ts("2030-07-07T04:00:00Z"))
        );
        assert_eq!(
            w.next_opening(ts("2030-07-07T05:00:00Z")),
            Some(ts("2030-07-13T22:00:00Z"))
        );
    }

    #[test]
    fn berlin_spring_forward_start_in_the_gap_opens_at_the_jump() {
        // 2030-03-31: clocks jump from 02:00 CET to 03:00 CEST (01:00 UTC).
        let w = window(&[], "02:30", "04:00", "Europe/Berlin");
        assert_eq!(
            w.next_opening(ts("2030-03-30T23:00:00Z")),
            Some(ts("2030-03-31T01:00:00Z")),
            "03:00 CEST, the first instant the clock shows 02:30 or later"
        );
        assert_eq!(
            w.closing(ts("2030-03-31T01:00:00Z")),
            Some(ts("2030-03-31T02:00:00Z")),
            "04:00 CEST"
        );
        assert!(!w.is_open(ts("2030-03-31T00:59:59Z")));
        // The day before, a normal 90 minutes in CET.
        assert_eq!(
            w.next_opening(ts("2030-03-29T23:00:00Z")),
            Some(ts("2030-03-30T01:30:00Z"))
        );
    }

    #[test]
    fn berlin_window_inside_the_gap_does_not_open_that_day() {
        let w = window(&[], "02:10", "02:50", "Europe/Berlin");
        assert_eq!(
            w.next_opening(ts("2030-03-30T23:00:00Z")),
            Some(ts("2030-04-01T00:10:00Z")),
            "next day 02:10 CEST"
        );
    }

    #[test]
    fn berlin_autumn_fold_makes_a_spanning_window_an_hour_longer() {
        // 2030-10-27: clocks go back from 03:00 CEST to 02:00 CET (01:00 UTC).
        let w = window(&[], "01:00", "04:00", "Europe/Berlin");
        let opening = w.next_opening(ts("2030-10-26T20:00:00Z")).unwrap();
        assert_eq!(opening, ts("2030-10-26T23:00:00Z"), "01:00 CEST");
        let closing = w.closing(opening).unwrap();
        assert_eq!(closing, ts("2030-10-27T03:00:00Z"), "04:00 CET");
        assert_eq!(closing.duration_since(opening).as_hours(), 4);
        // Inside the repeated hour, both passes of 02:30 are open.
        assert!(w.is_open(ts("2030-10-27T00:30:00Z")));
        assert!(w.is_open(ts("2030-10-27T01:30:00Z")));
    }

    #[test]
    fn berlin_start_in_the_fold_opens_at_the_first_pass() {
        let w = window(&[], "02:30", "05:00", "Europe/Berlin");
        assert_eq!(
            w.next_opening(ts("2030-10-26T20:00:00Z")),
            Some(ts("2030-10-27T00:30:00Z")),
            "02:30 CEST"
        );
    }

    #[test]
    fn new_york_both_changes() {
        // 2030-03-10: 02:00 EST -> 03:00 EDT (07:00 UTC). A window 01:30-03:30 lasts an hour.
        let w = window(&[], "01:30", "03:30", "America/New_York");
        let opening = w.next_opening(ts("2030-03-10T00:00:00Z")).unwrap();
        assert_eq!(opening, ts("2030-03-10T06:30:00Z"), "01:30 EST");
        assert_eq!(w.closing(opening), Some(ts("2030-03-10T07:30:00Z")));
        // 2030-11-03: 02:00 EDT -> 01:00 EST (06:00 UTC). The same window lasts three hours.
        let opening = w.next_opening(ts("2030-11-03T00:00:00Z")).unwrap();
        assert_eq!(opening, ts("2030-11-03T05:30:00Z"), "first 01:30, EDT");
        assert_eq!(w.closing(opening), Some(ts("2030-11-03T08:30:00Z")));
        // A start in the New York gap opens at the jump.
        let w = window(&[Day::Sunday], "02:15", "06:00", "America/New_York");
        assert_eq!(
            w.next_opening(ts("2030-03-09T12:00:00Z")),
            Some(ts("2030-03-10T07:00:00Z"))
        );
    }

    #[test]
    fn across_midnight_and_dst_at_once() {
        // Saturday 23:00 to Sunday 03:30 in Berlin over the spring jump: 3.5 wall hours, 3.5
        // minus one real hours.
        let w = window(&[Day::Saturday], "23:00", "03:30", "Europe/Berlin");
        let opening = w.next_opening(ts("2030-03-30T12:00:00Z")).unwrap();
        assert_eq!(opening, ts("2030-03-30T22:00:00Z"));
        assert_eq!(w.closing(opening), Some(ts("2030-03-31T01:30:00Z")));
    }

    #[test]
    fn back_to_back_occurrences_close_once() {
        // Every day 03:00 to 02:30 next day: on the spring day, 02:30 falls in the gap and
        // the next occurrence opens at the same instant, so the window stays open.
        let w = window(&[], "03:00", "02:30", "Europe/Berlin");
        let closing = w.closing(ts("2030-03-30T12:00:00Z")).unwrap();
        assert_eq!(closing, ts("2030-04-01T00:30:00Z"), "Monday 02:30 CEST");
    }

    fn zones() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("UTC"),
            Just("Europe/Berlin"),
            Just("America/New_York"),
            Just("Australia/Lord_Howe"),
            Just("Asia/Kolkata"),
        ]
    }

    fn days() -> impl Strategy<Value = Vec<Day>> {
        let all = [
            Day::Monday,
            Day::Tuesday,
            Day::Wednesday,
            Day::Thursday,
            Day::Friday,
            Day::Saturday,
            Day::Sunday,
        ];
        proptest::sample::subsequence(all.to_vec(), 0..=7)
    }

    proptest! {
        #[test]
        fn next_opening_is_open_and_nothing_before_it_is(
            zone in zones(),
            days in days(),
            start in 0u32..1440,
            length in 1u32..1439,
            at in 1_900_000_000i64..1_960_000_000,
        ) {
            let end = (start + length) % 1440;
            let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
            let w = window(&days, &hhmm(start), &hhmm(end), zone);
            let at = Timestamp::from_second(at).unwrap();
            let opening = w.next_opening(at).expect("every window opens within a week");
            prop_assert!(opening >= at);
            prop_assert!(w.is_open(opening));
            let closing = w.closing(opening).expect("open at its opening");
            prop_assert!(closing > opening);
            prop_assert!(!w.is_open(closing));
            // Sample the stretch before the opening: nothing there is open.
            let gap = opening.duration_since(at).as_secs();
            for step in 0..64 {
                let probe = at.checked_add(jiff::SignedDuration::from_secs(gap * step / 64)).unwrap();
                if probe < opening {
                    prop_assert!(!w.is_open(probe), "open at {probe} before {opening}");
                }
            }
        }
    }
}
