//! The sync schedule: cron expressions in crontab's 5-field form or the 6/7-field form with
//! seconds, evaluated in UTC by the `cron` crate.
//!
//! One trap is handled here: the `cron` crate numbers days of the week 1 = Sunday .. 7 = Saturday,
//! crontab 0 (or 7) = Sunday .. 6 = Saturday. A user who writes `0 2 * * 1` means Monday, so
//! numeric days of the week are rewritten to names (which both agree on) before parsing.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

#[derive(Clone)]
pub struct CronSchedule {
    /// As the user wrote it, for messages.
    text: String,
    schedule: cron::Schedule,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Rewrites one day-of-week field from crontab numbering to names: `1-5` → `MON-FRI`,
/// `0,6` → `SUN,SAT`, `*/2` stays (a step is not a day).
fn day_of_week_to_names(field: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let mut ends = Vec::new();
        for end in range.split('-') {
            if !end.is_empty() && end.bytes().all(|b| b.is_ascii_digit()) {
                let n: usize = end
                    .parse()
                    .map_err(|_| format!("day of week {end:?} is not a number from 0 to 7"))?;
                if n > 7 {
                    return Err(format!(
                        "day of week {n} is out of range (0 to 7, 0 and 7 = Sunday)"
                    ));
                }
                ends.push(DAY_NAMES[n % 7].to_string());
            } else {
                ends.push(end.to_string());
            }
        }
        let mut rebuilt = ends.join("-");
        if let Some(s) = step {
            rebuilt.push('/');
            rebuilt.push_str(s);
        }
        parts.push(rebuilt);
    }
    Ok(parts.join(","))
}

impl CronSchedule {
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
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
        normalized[5] = day_of_week_to_names(&normalized[5])?;
        let schedule =
            cron::Schedule::from_str(&normalized.join(" ")).map_err(|e| e.to_string())?;
        if schedule.upcoming(Utc).next().is_none() {
            return Err("it never fires".to_string());
        }
        Ok(CronSchedule {
            text: text.trim().to_string(),
            schedule,
        })
    }

    /// The first firing strictly after `after`, or `None` if the schedule has ended
    /// (only possible with a year field).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid date")
    }

    #[test]
    fn five_fields_fire_at_second_zero() {
        let s = CronSchedule::parse("30 2 * * *").expect("parses");
        let next = s.next_after(at(2026, 11, 21, 10, 0)).expect("fires");
        assert_eq!(next, at(2026, 11, 22, 2, 30));
    }

    #[test]
    fn crontab_day_numbers_mean_what_crontab_means() {
        // 2026-11-21 is a Saturday.
        let monday = CronSchedule::parse("0 2 * * 1").expect("parses");
        let next = monday.next_after(at(2026, 11, 21, 0, 0)).expect("fires");
        assert_eq!(next.weekday(), Weekday::Mon);
        for sunday in ["0 2 * * 0", "0 2 * * 7", "0 2 * * SUN"] {
            let s = CronSchedule::parse(sunday).expect("parses");
            let next = s.next_after(at(2026, 11, 21, 0, 0)).expect("fires");
            assert_eq!(next.weekday(), Weekday::Sun, "{sunday}");
        }
        let weekdays = CronSchedule::parse("0 6 * * 1-5").expect("parses");
        let mut t = at(2026, 11, 21, 0, 0);
        for _ in 0..10 {
            t = weekdays.next_after(t).expect("fires");
            assert!(!matches!(t.weekday(), Weekday::Sat | Weekday::Sun));
        }
    }

    #[test]
    fn seconds_form_is_accepted() {
        let s = CronSchedule::parse("*/10 * * * * *").expect("parses");
        let next = s.next_after(at(2026, 11, 21, 0, 0)).expect("fires");
        assert_eq!(next.second(), 10);
        let y = CronSchedule::parse("0 0 3 * * MON 2030").expect("parses");
        assert_eq!(
            y.next_after(at(2026, 1, 1, 0, 0)).map(|d| d.year()),
            Some(2030)
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        assert!(CronSchedule::parse("").unwrap_err().contains("0 fields"));
        assert!(
            CronSchedule::parse("* * *")
                .unwrap_err()
                .contains("3 fields")
        );
        assert!(
            CronSchedule::parse("0 2 * * 8")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(CronSchedule::parse("61 2 * * *").is_err());
        assert!(
            CronSchedule::parse("0 0 0 1 1 * 2020")
                .unwrap_err()
                .contains("never")
        );
    }
}
