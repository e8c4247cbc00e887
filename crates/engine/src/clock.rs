//! Time for the engine (SPEC §3.6 `time`, §3.7 windows, §3.13 test clocks).
//!
//! The engine never reads the system clock directly: it asks a [`Clock`] once per decision, so
//! tests (and `faramesh test`) can drive time with a [`ManualClock`]. All instants are
//! milliseconds since the Unix epoch, UTC; calendar facts are always taken in UTC.

use std::sync::atomic::{AtomicI64, Ordering};

use fpl::ast::BudgetWindow;
use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

const MS_PER_HOUR: i64 = 3_600_000;
const MS_PER_DAY: i64 = 86_400_000;

/// A source of the current instant.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch, UTC.
    fn now_ms(&self) -> i64;
}

/// The real (system) time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Timestamp::now().as_millisecond()
    }
}

/// A clock that only moves when told to; for tests and policy test fixtures.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            now: AtomicI64::new(start_ms),
        }
    }

    /// Moves the clock to `ms` (backwards too).
    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    /// Moves the clock by `ms` (saturating at the ends of `i64`).
    pub fn advance(&self, ms: i64) {
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Parses an RFC 3339 timestamp (`"2026-01-01T09:00:00Z"`, or with a `±hh:mm` offset) to unix
/// milliseconds. Fractions below a millisecond are floored. A timestamp without an offset is an
/// error: it would not name one instant.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let ts: Timestamp = s.trim().parse().map_err(|e| {
        format!("invalid RFC 3339 timestamp {s:?} (expected e.g. \"2026-01-01T09:00:00Z\"): {e}")
    })?;
    let ms = ts.as_millisecond();
    // `as_millisecond` truncates towards zero; floor instead so instants before 1970 with a
    // sub-millisecond fraction land in the millisecond that contains them.
    let floored = match Timestamp::from_millisecond(ms) {
        Ok(back) if back > ts => ms - 1,
        _ => ms,
    };
    Ok(floored)
}

/// UTC calendar facts of an instant, as conditions see them (`time.hour`, `time.weekday`,
/// `time.date`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFacts {
    /// Hour of the day, 0–23.
    pub hour: u8,
    /// `"Mon"`, `"Tue"`, `"Wed"`, `"Thu"`, `"Fri"`, `"Sat"` or `"Sun"`.
    pub weekday: &'static str,
    /// The date as `YYYY-MM-DD`.
    pub date: String,
}

/// The instant `ms` as a `jiff` timestamp, clamped to the range `jiff` supports (years
/// -9999..=9999), so every `i64` has an answer.
fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

fn weekday_abbrev(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

/// UTC hour, weekday and date of the instant `ms` (clamped to years -9999..=9999).
pub fn time_facts(ms: i64) -> TimeFacts {
    time_facts_in(ms, &TimeZone::UTC)
}

/// The calendar facts of an instant in a time zone (`runtime { timezone }`).
pub fn time_facts_in(ms: i64, tz: &TimeZone) -> TimeFacts {
    let dt = tz.to_datetime(timestamp(ms));
    TimeFacts {
        hour: u8::try_from(dt.hour()).unwrap_or(0),
        weekday: weekday_abbrev(dt.weekday()),
        date: dt.date().to_string(),
    }
}

/// Start (unix ms, UTC) of the hourly, daily or monthly window containing `ms`. Session budgets
/// are keyed by session id rather than time, so [`BudgetWindow::Session`] gives `0`.
pub fn window_start_ms(window: BudgetWindow, ms: i64) -> i64 {
    match window {
        BudgetWindow::Hourly => ms.saturating_sub(ms.rem_euclid(MS_PER_HOUR)),
        BudgetWindow::Daily => ms.saturating_sub(ms.rem_euclid(MS_PER_DAY)),
        BudgetWindow::Monthly => {
            // Clamp first so the day of the month and the day start describe the same instant.
            let ms = timestamp(ms).as_millisecond();
            let day_start = ms - ms.rem_euclid(MS_PER_DAY);
            let day_of_month = i64::from(TimeZone::UTC.to_datetime(timestamp(ms)).day());
            day_start - (day_of_month - 1) * MS_PER_DAY
        }
        BudgetWindow::Session => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        parse_rfc3339_ms(s).unwrap()
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(at("1970-01-01T00:00:00Z"), 0);
        assert_eq!(at("2026-01-01T09:00:00Z"), 1_767_258_000_000);
        assert_eq!(at("2026-01-01T09:00:00.250Z"), 1_767_258_000_250);
        // An offset names the same instant as its UTC equivalent.
        assert_eq!(at("2026-01-01T10:30:00+01:30"), at("2026-01-01T09:00:00Z"));
        // Sub-millisecond fractions floor, also before the epoch.
        assert_eq!(at("1970-01-01T00:00:00.0015Z"), 1);
        assert_eq!(at("1969-12-31T23:59:59.9995Z"), -1);
    }

    #[test]
    fn rejects_bad_timestamps_with_a_clear_error() {
        for bad in [
            "",
            "yesterday",
            "2026-01-01",
            "2026-01-01T09:00:00", // no offset: not an instant
            "2026-13-01T09:00:00Z",
            "2026-02-30T09:00:00Z",
            "2026-01-01T25:00:00Z",
        ] {
            let err = parse_rfc3339_ms(bad).unwrap_err();
            assert!(err.contains("invalid RFC 3339 timestamp"), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn time_facts_in_utc() {
        let f = time_facts(at("2026-01-01T09:00:00Z"));
        assert_eq!(
            f,
            TimeFacts {
                hour: 9,
                weekday: "Thu",
                date: "2026-01-01".into()
            }
        );
        // The last millisecond of a Sunday, then the first of the Monday.
        let sun = time_facts(at("2026-01-04T23:59:59.999Z"));
        assert_eq!(
            (sun.hour, sun.weekday, sun.date.as_str()),
            (23, "Sun", "2026-01-04")
        );
        let mon = time_facts(at("2026-01-05T00:00:00Z"));
        assert_eq!(
            (mon.hour, mon.weekday, mon.date.as_str()),
            (0, "Mon", "2026-01-05")
        );
        // An offset in the input does not leak into the facts: they are UTC.
        let off = time_facts(at("2026-01-01T01:00:00+05:00"));
        assert_eq!(
            (off.hour, off.weekday, off.date.as_str()),
            (20, "Wed", "2025-12-31")
        );
        // Before the epoch.
        let pre = time_facts(-1);
        assert_eq!(
            (pre.hour, pre.weekday, pre.date.as_str()),
            (23, "Wed", "1969-12-31")
        );
        // Out of range instants clamp instead of failing.
        // (jiff's range ends a day inside the years ±9999.)
        assert!(time_facts(i64::MAX).date.starts_with("9999-12-3"));
        assert!(time_facts(i64::MIN).date.starts_with("-009999-01-0"));
    }

    #[test]
    fn every_weekday_name() {
        let names: Vec<&str> = (0..7)
            .map(|d| time_facts(at("2026-01-05T12:00:00Z") + d * MS_PER_DAY).weekday)
            .collect();
        assert_eq!(names, ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);
    }

    #[test]
    fn hourly_windows() {
        let w = BudgetWindow::Hourly;
        assert_eq!(
            window_start_ms(w, at("2026-01-31T23:59:59.999Z")),
            at("2026-01-31T23:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2026-02-01T00:00:00Z")),
            at("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2026-01-01T09:00:00Z")),
            at("2026-01-01T09:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2026-01-01T09:59:59Z")),
            at("2026-01-01T09:00:00Z")
        );
        assert_eq!(window_start_ms(w, -1), -MS_PER_HOUR);
    }

    #[test]
    fn daily_windows() {
        let w = BudgetWindow::Daily;
        assert_eq!(
            window_start_ms(w, at("2026-01-31T23:59:59Z")),
            at("2026-01-31T00:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2026-02-01T00:00:00Z")),
            at("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2026-02-01T00:00:00.001Z")),
            at("2026-02-01T00:00:00Z")
        );
        assert_eq!(window_start_ms(w, -1), -MS_PER_DAY);
    }

    #[test]
    fn monthly_windows() {
        let w = BudgetWindow::Monthly;
        assert_eq!(
            window_start_ms(w, at("2026-01-31T23:59:59Z")),
            at("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2026-02-01T00:00:00Z")),
            at("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2026-01-01T00:00:00Z")),
            at("2026-01-01T00:00:00Z")
        );
        // Leap year February, and the year boundary.
        assert_eq!(
            window_start_ms(w, at("2028-02-29T12:00:00Z")),
            at("2028-02-01T00:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("2025-12-31T23:59:59.999Z")),
            at("2025-12-01T00:00:00Z")
        );
        assert_eq!(
            window_start_ms(w, at("1969-12-31T23:59:59.999Z")),
            at("1969-12-01T00:00:00Z")
        );
    }

    #[test]
    fn session_window_is_not_time_based() {
        assert_eq!(window_start_ms(BudgetWindow::Session, 0), 0);
        assert_eq!(
            window_start_ms(BudgetWindow::Session, at("2026-01-31T23:59:59Z")),
            0
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(at("2026-01-01T09:00:00Z"));
        assert_eq!(c.now_ms(), 1_767_258_000_000);
        c.advance(61_000);
        assert_eq!(c.now_ms(), at("2026-01-01T09:01:01Z"));
        c.set(5);
        c.advance(-10);
        assert_eq!(c.now_ms(), -5);
        c.set(i64::MAX - 1);
        c.advance(10);
        assert_eq!(c.now_ms(), i64::MAX);
        let dynamic: &dyn Clock = &c;
        assert_eq!(dynamic.now_ms(), i64::MAX);
    }

    #[test]
    fn system_clock_reads_real_time() {
        let std_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let ours = SystemClock.now_ms();
        assert!(ours > at("2025-01-01T00:00:00Z"));
        assert!((ours - std_ms).abs() < 60_000, "{ours} vs {std_ms}");
    }

    #[test]
    fn extreme_instants_do_not_overflow() {
        for w in [
            BudgetWindow::Hourly,
            BudgetWindow::Daily,
            BudgetWindow::Monthly,
        ] {
            let lo = window_start_ms(w, i64::MIN);
            let hi = window_start_ms(w, i64::MAX);
            assert!(lo <= hi);
        }
        assert_eq!(window_start_ms(BudgetWindow::Hourly, i64::MIN), i64::MIN);
    }
}
