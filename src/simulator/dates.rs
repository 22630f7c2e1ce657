//! What Microsoft changes on a date, without an activity record, played on the simulator's
//! clock: after the last day of a term Partner Center renews it (an auto-renewing term rolls
//! over: its end moves on by the term) or lets it expire; after the last day of a billing
//! cycle, the next cycle begins. Each is processed at an hour of the day after the date (the
//! renewal queue takes up to 24 h), the same hour for the same subscription and date.
//!
//! Applied when a customer is read, so the world needs no background task and a simulator
//! whose clock jumps a month ahead shows every month's roll-over at once.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::data::{REFUND_DAYS, cycle_months, day_text, refund_window, term_months};

/// The day part of a Partner Center date or timestamp.
fn day_of(value: Option<&Value>) -> Option<NaiveDate> {
    let text = value?.as_str()?;
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

/// When Partner Center processes what the end of `day` changes for subscription `id`: at a
/// moment of the following day (UTC), the same one every time it is asked.
pub fn processed_at(id: &str, day: NaiveDate) -> DateTime<Utc> {
    // FNV-1a over the id and the day: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain(day.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let next = day.succ_opt().unwrap_or(day);
    next.and_time(chrono::NaiveTime::MIN).and_utc() + chrono::Duration::seconds((h % 86_400) as i64)
}

/// What [`apply`] changed, for the benchmark's reckoning.
#[derive(Debug, Clone, PartialEq)]
pub struct DateChange {
    /// `commitmentEndDate` (a roll-over or renewal), `status` (an expiry),
    /// `billingCycleEndDate` (a new billing cycle) or `refundableQuantity` (a refund window
    /// closed).
    pub field: &'static str,
    /// When Partner Center began to show it.
    pub at: DateTime<Utc>,
}

/// Applies every date-driven change Microsoft has processed by `now` to an active
/// subscription; returns what changed (oldest first).
pub fn apply(sub: &mut Map<String, Value>, now: DateTime<Utc>) -> Vec<DateChange> {
    let mut done = Vec::new();
    let id = sub
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // A refund window that closed by now is gone from the answer (of a subscription in use:
    // a cancelled or expired one keeps what it had).
    if matches!(
        sub.get("status").and_then(Value::as_str),
        Some("active" | "suspended")
    ) {
        close_refund_windows(sub, now, &mut done);
    }
    // A bounded number of steps: a clock years ahead must not spin.
    for _ in 0..240 {
        if sub.get("status").and_then(Value::as_str) != Some("active") {
            break;
        }
        let end = day_of(sub.get("commitmentEndDate"));
        let cycle_end = day_of(sub.get("billingCycleEndDate"));
        // The earliest date that is processed by now.
        let next = [
            end.map(|d| ("term", d)),
            cycle_end
                .filter(|c| end.is_none_or(|e| *c < e))
                .map(|d| ("cycle", d)),
        ]
        .into_iter()
        .flatten()
        .map(|(what, d)| (what, d, processed_at(&id, d)))
        .filter(|(_, _, at)| *at <= now)
        .min_by_key(|(_, _, at)| *at);
        let Some((what, day, at)) = next else { break };
        if what == "cycle" {
            let months = sub
                .get("billingCycle")
                .and_then(Value::as_str)
                .and_then(cycle_months)
                .unwrap_or(1);
            let Some(next_cycle) = day.checked_add_months(Months::new(months)) else {
                break;
            };
            sub.insert("billingCycleEndDate".into(), json!(day_text(next_cycle)));
            done.push(DateChange {
                field: "billingCycleEndDate",
                at,
            });
            continue;
        }
        let renews = sub
            .get("autoRenewEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !renews {
            sub.insert("status".into(), json!("expired"));
            done.push(DateChange {
                field: "status",
                at,
            });
            break;
        }
        let term = sub
            .get("termDuration")
            .and_then(Value::as_str)
            .unwrap_or("P1Y");
        let Some(new_end) = day.checked_add_months(Months::new(term_months(term))) else {
            break;
        };
        sub.insert("commitmentEndDate".into(), json!(day_text(new_end)));
        if sub.contains_key("refundableQuantity") {
            // The renewed seats can be returned for a week from the new term's first day.
            let quantity = sub.get("quantity").and_then(Value::as_u64).unwrap_or(1);
            let closes = day + chrono::Duration::days(1 + REFUND_DAYS);
            sub.insert(
                "refundableQuantity".into(),
                refund_window(
                    quantity,
                    &format!("{}T00:00:00Z", closes.format("%Y-%m-%d")),
                ),
            );
            close_refund_windows(sub, now, &mut done);
        }
        if sub.contains_key("commitmentEndDateTime") {
            sub.insert(
                "commitmentEndDateTime".into(),
                json!(format!("{}T23:59:59Z", new_end.format("%Y-%m-%d"))),
            );
        }
        if let Some(cycle) = sub.get("billingCycle").and_then(Value::as_str) {
            if sub.contains_key("billingCycleEndDate")
                && cycle_months(cycle).is_none_or(|m| m >= 12)
            {
                sub.insert("billingCycleEndDate".into(), json!(day_text(new_end)));
            }
        }
        done.push(DateChange {
            field: "commitmentEndDate",
            at,
        });
    }
    done
}

/// Drops the refund windows that closed by `now`.
fn close_refund_windows(
    sub: &mut Map<String, Value>,
    now: DateTime<Utc>,
    done: &mut Vec<DateChange>,
) {
    let Some(details) = sub
        .get("refundableQuantity")
        .and_then(|r| r.get("details"))
        .and_then(Value::as_array)
    else {
        return;
    };
    let until = |d: &Value| {
        d.get("allowedUntilDateTime")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc())
    };
    let closed: Vec<DateTime<Utc>> = details
        .iter()
        .filter_map(until)
        .filter(|t| *t <= now)
        .collect();
    if closed.is_empty() {
        return;
    }
    let open: Vec<Value> = details
        .iter()
        .filter(|d| until(d).is_none_or(|t| t > now))
        .cloned()
        .collect();
    let total: u64 = open
        .iter()
        .filter_map(|d| d.get("quantity").and_then(Value::as_u64))
        .sum();
    sub.insert(
        "refundableQuantity".into(),
        json!({"totalQuantity": total, "details": open}),
    );
    if let Some(at) = closed.into_iter().max() {
        done.push(DateChange {
            field: "refundableQuantity",
            at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("day")
    }

    fn sub(
        renews: bool,
        term: &str,
        cycle: &str,
        end: &str,
        cycle_end: &str,
    ) -> Map<String, Value> {
        json!({"id": "s1", "status": "active", "autoRenewEnabled": renews, "termDuration": term,
               "billingCycle": cycle, "commitmentEndDate": format!("{end}T00:00:00Z"),
               "billingCycleEndDate": format!("{cycle_end}T00:00:00Z")})
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn processed_the_day_after_at_a_stable_hour() {
        let at = processed_at("s1", day("2026-12-01"));
        assert_eq!(at.date_naive(), day("2026-12-02"));
        assert_eq!(at, processed_at("s1", day("2026-12-01")));
    }

    #[test]
    fn monthly_terms_roll_over_and_others_expire() {
        let mut s = sub(true, "P1M", "monthly", "2026-12-01", "2026-12-01");
        let before = processed_at("s1", day("2026-12-01")) - chrono::Duration::seconds(1);
        assert!(apply(&mut s, before).is_empty(), "not yet processed");
        let after = day("2026-12-03").and_time(chrono::NaiveTime::MIN).and_utc();
        let done = apply(&mut s, after);
        assert_eq!(s["commitmentEndDate"], "2027-01-01T00:00:00Z");
        assert_eq!(
            s["billingCycleEndDate"],
            "2026-12-01T00:00:00Z".replace("2026-12", "2027-01")
        );
        assert!(done.iter().any(|d| d.field == "commitmentEndDate"));

        let mut s = sub(false, "P1Y", "monthly", "2026-12-01", "2026-12-01");
        apply(&mut s, after);
        assert_eq!(s["status"], "expired");
        assert_eq!(
            s["commitmentEndDate"], "2026-12-01T00:00:00Z",
            "an expired term keeps its end"
        );

        let mut s = sub(true, "P1Y", "monthly", "2027-06-01", "2026-12-01");
        let done = apply(&mut s, after);
        assert_eq!(s["billingCycleEndDate"], "2027-01-01T00:00:00Z");
        assert_eq!(s["commitmentEndDate"], "2027-06-01T00:00:00Z");
        assert_eq!(done.len(), 1);
    }
}
