//! `expires DATE` on rules and list entries: what expires when, and today's date.

use serde::Serialize;

use super::Origin;
use crate::diag::Diag;
pub use crate::policy::ast::Date;

/// Environment variable that fixes "today" (YYYY-MM-DD), for reproducible
/// builds and tests; otherwise the system clock's UTC date is used.
pub const TODAY_ENV: &str = "PHANTOMC_TODAY";

/// `lint` warns this many days before a rule or entry expires, unless told otherwise.
pub const DEFAULT_WARN_DAYS: i64 = 14;

/// A rule or list entry with an expiry date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expiry {
    /// `rule` or `entry`.
    pub kind: &'static str,
    /// What is dropped: the rule's origin, or the entry as written.
    pub what: String,
    pub date: Date,
    /// Past its date when compiled: left out of the ruleset.
    pub expired: bool,
    pub origin: Origin,
}

impl Expiry {
    /// Days from `today` to the last day this is in force (negative once expired).
    pub fn days_left(&self, today: Date) -> i64 {
        self.date.days() - today.days()
    }

    /// The warning printed when an expired rule or entry is left out.
    pub fn expired_warning(&self) -> Diag {
        Diag::warning(
            "expired",
            self.origin.span,
            format!("{} {} expired on {} and is left out", self.kind, self.what, self.date),
            format!("expired {}", self.date),
        )
        .with_help("remove it from the policy, or move its date if it is still needed")
    }
}

/// The moment expiry is judged at: the day (which rules and entries are
/// left out) and the second (what a named set's dated entry has left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub today: Date,
    /// Seconds since the epoch.
    pub now: u64,
}

impl Clock {
    /// The system clock, or midnight of `PHANTOMC_TODAY`.
    pub fn system() -> Clock {
        Clock { today: today(), now: now() }
    }

    /// `secs` since the epoch (a proposal made as of when `learn` ran).
    pub fn at(secs: u64) -> Clock {
        Clock { today: Date::from_days(i64::try_from(secs / 86_400).unwrap_or(0)), now: secs }
    }
}

/// Today's date (UTC), or the date in `PHANTOMC_TODAY`.
pub fn today() -> Date {
    if let Some(d) = std::env::var(TODAY_ENV).ok().as_deref().and_then(parse) {
        return d;
    }
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Date::from_days(i64::try_from(secs / 86_400).unwrap_or(0))
}

/// Seconds since the epoch: midnight (UTC) of `PHANTOMC_TODAY` when that is
/// set, so compiled timeouts are reproducible; else the clock.
pub fn now() -> u64 {
    if let Some(d) = std::env::var(TODAY_ENV).ok().as_deref().and_then(parse) {
        return u64::try_from(d.days()).unwrap_or(0) * 86_400;
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD`, if it is a real day.
pub fn parse(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_known_values() {
        assert_eq!(Date::new(1970, 1, 1).map(Date::days), Some(0));
        assert_eq!(Date::new(2000, 3, 1).map(Date::days), Some(11_017));
        assert_eq!(Date::new(2026, 12, 31).map(Date::days), Some(20_818));
        // Years 0 to 9999, the ones a date can be written with.
        for days in (-719_468..2_932_896).step_by(997) {
            assert_eq!(Date::from_days(days).days(), days);
        }
        assert_eq!(Date::from_days(20_818).to_string(), "2026-12-31");
    }

    #[test]
    fn only_real_days_parse() {
        assert_eq!(parse("2028-02-29").map(|d| d.to_string()).as_deref(), Some("2028-02-29"));
        for bad in ["2026-02-29", "2026-13-01", "2026-00-10", "2026-04-31", "26-01-01", "2026-1-1", "x"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
