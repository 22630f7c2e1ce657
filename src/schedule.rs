//! The sync schedule: cron expressions in crontab's 5-field form or the 6/7-field form with
//! seconds, read in an IANA time zone, evaluated by the `cron` crate with crontab's meaning.
//!
//! Where the `cron` crate and crontab differ, crontab wins:
//! - Days of the week: the crate numbers 1 = Sunday .. 7 = Saturday, crontab 0 or 7 = Sunday,
//!   1 = Monday. Every day-of-week field is rewritten to an explicit list of day names (which
//!   both read alike), so `1-5`, `1-7`, `5-7` and `*/2` mean what crontab means.
//! - Day of month and day of week: when both are restricted (neither starts with `*`), a day
//!   matching either fires; the crate wants both. Such a schedule is kept as two schedules,
//!   one per field, and the earlier firing of the two wins.
//! - Time zones: the expression is evaluated on the local wall clock of `sync.timezone`. A
//!   firing that falls in the hour skipped when daylight-saving time starts runs at the end of
//!   the gap; one in the hour repeated when it ends runs once, at its first occurrence.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Clone)]
pub struct CronSchedule {
    /// As the user wrote it, for messages.
    text: String,
    tz: Tz,
    /// One schedule, or two when day-of-month and day-of-week are both restricted.
    branches: Vec<cron::Schedule>,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.text, self.tz)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A day of the week in crontab's reading: 0-7 (0 and 7 Sunday) or a name.
fn day_number(text: &str) -> Result<usize, String> {
    if let Some(i) = DAY_NAMES.iter().position(|d| d.eq_ignore_ascii_case(text)) {
        return Ok(i);
    }
    match text.parse::<usize>() {
        Ok(n) if n <= 7 => Ok(n),
        Ok(n) => Err(format!(
            "day of week {n} is out of range (0 to 7, 0 and 7 = Sunday)"
        )),
        Err(_) => Err(format!(
            "day of week {text:?} is not a number from 0 to 7 or a name such as MON"
        )),
    }
}

/// Rewrites a day-of-week field from crontab's reading to an explicit list of names:
/// `1-5` → `MON,TUE,WED,THU,FRI`, `5-7` → `SUN,FRI,SAT`, `*/2` → `SUN,TUE,THU,SAT`.
/// `*` and `?` stay as they are.
fn day_of_week_to_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: usize = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("day-of-week step {s:?} is not a whole number above 0")
                })?;
                (r, step)
            }
            None => (item, 1),
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            // A range may end on Sunday as 0 or SUN too (FRI-SUN): it is the week's end, 7.
            Some((a, b)) => match (day_number(a)?, day_number(b)?) {
                (a, 0) if a > 0 => (a, 7),
                ends => ends,
            },
            // `3/2` in crontab: from Wednesday to the end of the week, every second day.
            None if step > 1 => (day_number(range)?, 6),
            None => {
                let d = day_number(range)?;
                (d, d)
            }
        };
        if first > last {
            return Err(format!(
                "day-of-week range {range:?} goes backwards (0 to 7, 0 and 7 = Sunday)"
            ));
        }
        days.extend((first..=last).step_by(step).map(|d| d % 7));
    }
    Ok(days
        .iter()
        .map(|d| DAY_NAMES[*d])
        .collect::<Vec<_>>()
        .join(","))
}

/// Crontab's test for a restricted field: it does not start with `*` (nor is `?`).
fn restricted(field: &str) -> bool {
    !(field.starts_with('*') || field == "?")
}

impl CronSchedule {
    /// Parses `text` (5, 6 or 7 fields), to be read in time zone `tz`.
    pub fn parse(text: &str, tz: Tz) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let mut normalized: Vec<String> = match fields.len() {
            // crontab: minute hour dom month dow → fire at second 0.
            5 => std::iter::once("0")
                .chain(fields.iter().copied())
                .map(String::from)
                .collect(),
            6 | 7 => fields.iter().map(|f| f.to_string()).collect(),
            n => return Err(format!("it has {n} fields; expected 5, 6 or 7")),
        };
        let (dom, dow) = (normalized[3].clone(), normalized[5].clone());
        normalized[5] = day_of_week_to_names(&dow)?;
        let variants = if restricted(&dom) && restricted(&dow) {
            let mut by_month_day = normalized.clone();
            by_month_day[5] = "*".to_string();
            let mut by_week_day = normalized;
            by_week_day[3] = "*".to_string();
            vec![by_month_day, by_week_day]
        } else {
            vec![normalized]
        };
        let branches = variants
            .iter()
            .map(|v| cron::Schedule::from_str(&v.join(" ")).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = CronSchedule {
            text: text.trim().to_string(),
            tz,
            branches,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err("it never fires".to_string());
        }
        Ok(schedule)
    }

    /// The first firing strictly after `after`, or `None` if the schedule has ended
    /// (only possible with a year field).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.branches
            .iter()
            .filter_map(|b| next_local(b, self.tz, after))
            .min()
    }
}

/// The next firing of `schedule` on `tz`'s wall clock after the instant `after`.
fn next_local(schedule: &cron::Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // The wall clock as a naive time, walked by the cron crate as if it were UTC.
    let mut wall = after.with_timezone(&tz).naive_local();
    // Each turn moves the wall clock forward; a few thousand covers any daylight-saving mess.
    for _ in 0..4096 {
        let candidate = schedule.after(&wall.and_utc()).next()?.naive_utc();
        if let Some(instant) = instant_of(tz, candidate) {
            if instant > after {
                return Some(instant);
            }
        }
        wall = candidate;
    }
    None
}

/// The instant a wall-clock time names: its first occurrence when the clock went back, the
/// end of the gap when it does not exist (the clock jumped over it).
fn instant_of(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.to_utc()),
        LocalResult::Ambiguous(first, _) => Some(first.to_utc()),
        LocalResult::None => (1..=24 * 60).find_map(|m| {
            let later = wall + chrono::Duration::minutes(m);
            match tz.from_local_datetime(&later) {
                LocalResult::None => None,
                // Back to the first valid minute, then to the exact end of the gap.
                r => r.earliest().map(|t| {
                    let t = t.to_utc();
                    let gap_end = t - chrono::Duration::minutes(1);
                    (0..60)
                        .map(|s| gap_end + chrono::Duration::seconds(s))
                        .find(|u| u.with_timezone(&tz).naive_local() > wall)
                        .unwrap_or(t)
                }),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid date")
    }

    fn utc(text: &str) -> CronSchedule {
        CronSchedule::parse(text, Tz::UTC).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn firings(s: &CronSchedule, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut t = from;
        (0..n)
            .map(|_| {
                t = s.next_after(t).expect("fires");
                t
            })
            .collect()
    }

    #[test]
    fn five_fields_fire_at_second_zero() {
        let next = utc("30 2 * * *").next_after(at(2026, 11, 21, 10, 0));
        assert_eq!(next, Some(at(2026, 11, 22, 2, 30)));
    }

    #[test]
    fn crontab_day_numbers_mean_what_crontab_means() {
        // 2026-11-21 is a Saturday.
        let monday = utc("0 2 * * 1").next_after(at(2026, 11, 21, 0, 0));
        assert_eq!(monday.map(|d| d.weekday()), Some(Weekday::Mon));
        for sunday in ["0 2 * * 0", "0 2 * * 7", "0 2 * * SUN", "0 2 * * sun"] {
            let next = utc(sunday).next_after(at(2026, 11, 21, 0, 0));
            assert_eq!(next.map(|d| d.weekday()), Some(Weekday::Sun), "{sunday}");
        }
        for t in firings(&utc("0 6 * * 1-5"), at(2026, 11, 21, 0, 0), 10) {
            assert!(!matches!(t.weekday(), Weekday::Sat | Weekday::Sun));
        }
    }

    #[test]
    fn ranges_through_seven_reach_sunday() {
        // Every day of the week, seven firings in a row on seven days.
        let every = firings(&utc("0 2 * * 1-7"), at(2026, 11, 21, 3, 0), 7);
        let days: Vec<u32> = every.iter().map(|t| t.day()).collect();
        assert_eq!(days, vec![22, 23, 24, 25, 26, 27, 28]);
        let weekend = firings(&utc("0 2 * * 5-7"), at(2026, 11, 21, 3, 0), 4);
        let names: Vec<Weekday> = weekend.iter().map(|t| t.weekday()).collect();
        assert_eq!(
            names,
            vec![Weekday::Sun, Weekday::Fri, Weekday::Sat, Weekday::Sun]
        );
        assert_eq!(
            firings(&utc("0 2 * * 0-7"), at(2026, 11, 21, 3, 0), 7),
            every
        );
        assert_eq!(
            firings(&utc("0 2 * * FRI-SUN"), at(2026, 11, 21, 3, 0), 4),
            weekend
        );
        // */2 is Sunday, Tuesday, Thursday, Saturday, as in crontab.
        let every_other: Vec<Weekday> = firings(&utc("0 2 * * */2"), at(2026, 11, 21, 3, 0), 4)
            .iter()
            .map(|t| t.weekday())
            .collect();
        assert_eq!(
            every_other,
            vec![Weekday::Sun, Weekday::Tue, Weekday::Thu, Weekday::Sat]
        );
    }

    #[test]
    fn restricted_day_of_month_and_day_of_week_fire_on_either() {
        // The 1st of the month or any Monday; from Saturday 2026-11-21.
        let s = utc("0 0 1 * 1");
        assert_eq!(
            firings(&s, at(2026, 11, 21, 0, 0), 4),
            vec![
                at(2026, 11, 23, 0, 0),
                at(2026, 11, 30, 0, 0),
                at(2026, 12, 1, 0, 0),
                at(2026, 12, 7, 0, 0)
            ]
        );
        // A field starting with `*` is not restricted: then both must match (crontab's
        // other rule): days 1, 11, 21, 31 that are Mondays.
        let s = utc("0 0 */10 * MON");
        assert_eq!(
            firings(&s, at(2026, 11, 21, 0, 0), 3),
            vec![
                at(2026, 12, 21, 0, 0),
                at(2027, 1, 11, 0, 0),
                at(2027, 2, 1, 0, 0)
            ]
        );
    }

    #[test]
    fn a_time_zone_moves_the_firing_and_daylight_saving_is_crossed_correctly() {
        let berlin = CronSchedule::parse("0 2 * * *", chrono_tz::Europe::Berlin).expect("parses");
        // 02:00 CET is 01:00 UTC in winter, 02:00 CEST is 00:00 UTC in summer.
        assert_eq!(
            berlin.next_after(at(2026, 11, 21, 12, 0)),
            Some(at(2026, 11, 22, 1, 0))
        );
        assert_eq!(
            berlin.next_after(at(2026, 7, 1, 12, 0)),
            Some(at(2026, 7, 2, 0, 0))
        );

        // New York, spring forward on 2027-03-14: 02:30 does not exist that day; the pass
        // runs at the end of the gap (03:00 EDT = 07:00 UTC), once.
        let ny = CronSchedule::parse("30 2 * * *", chrono_tz::America::New_York).expect("parses");
        assert_eq!(
            firings(&ny, at(2027, 3, 13, 0, 0), 3),
            vec![
                at(2027, 3, 13, 7, 30),
                at(2027, 3, 14, 7, 0),
                at(2027, 3, 15, 6, 30)
            ]
        );
        // Fall back on 2026-11-01: 01:30 happens twice; the pass runs once, at the first.
        let ny = CronSchedule::parse("30 1 * * *", chrono_tz::America::New_York).expect("parses");
        assert_eq!(
            firings(&ny, at(2026, 10, 31, 12, 0), 3),
            vec![
                at(2026, 11, 1, 5, 30),
                at(2026, 11, 2, 6, 30),
                at(2026, 11, 3, 6, 30)
            ]
        );
        // Hourly across the same night: every real hour once, none twice.
        let hourly =
            CronSchedule::parse("0 * * * *", chrono_tz::America::New_York).expect("parses");
        let night = firings(&hourly, at(2026, 11, 1, 3, 30), 4);
        assert!(night.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(night[0], at(2026, 11, 1, 4, 0), "00:00 EDT");
        assert_eq!(night[1], at(2026, 11, 1, 5, 0), "01:00 EDT");
    }

    #[test]
    fn seconds_form_is_accepted() {
        let next = utc("*/10 * * * * *").next_after(at(2026, 11, 21, 0, 0));
        assert_eq!(next.map(|n| n.second()), Some(10));
        let y = utc("0 0 3 * * MON 2030");
        assert_eq!(
            y.next_after(at(2026, 1, 1, 0, 0)).map(|d| d.year()),
            Some(2030)
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        let err = |t: &str| CronSchedule::parse(t, Tz::UTC).expect_err(t);
        assert!(err("").contains("0 fields"));
        assert!(err("* * *").contains("3 fields"));
        assert!(err("0 2 * * 8").contains("out of range"));
        assert!(err("0 2 * * 5-1").contains("backwards"));
        assert!(err("0 2 * * FUNDAY").contains("name such as MON"));
        assert!(CronSchedule::parse("61 2 * * *", Tz::UTC).is_err());
        assert!(err("0 0 0 1 1 * 2020").contains("never"));
    }
}
