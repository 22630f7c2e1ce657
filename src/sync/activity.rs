//! The activity log (audit records): which customers a partner user or app changed, and who.
//!
//! An incremental pass reads the log from the watermark (the instant the last good pass read it
//! through) less an overlap, keeps the records of relevant operations in `activity_log`, and
//! re-fetches only the customers they name. What the log cannot show (renewals, expiries,
//! Microsoft-side suspensions, trial conversions) is caught by the next full pass.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::schedule::CronSchedule;

use crate::partner_center::fields::parse_timestamp;
use crate::partner_center::models::ParseError;

/// How long Partner Center keeps activity records.
pub const LOG_KEEPS: Duration = Duration::days(90);

/// A watermark older than this is too close to the log's horizon to trust (a day of margin
/// for clocks and the day-granular query, a day for records that appear late): full pass.
pub const WATERMARK_MAX_AGE: Duration = Duration::days(88);

/// Read again before the watermark: the log is day-granular and records may appear late.
pub const OVERLAP: Duration = Duration::days(1);

/// Resource types whose operations can change what a customer owns. Others (users, support
/// tickets, ...) are skipped; an unknown type counts when its name says it is about one of these.
const RELEVANT: &[&str] = &[
    "subscription",
    "order",
    "license",
    "transfer",
    "customer",
    "partner_customer_relationship",
];
const RELEVANT_WORDS: &[&str] = &[
    "subscription",
    "order",
    "license",
    "transfer",
    "relationship",
];

/// Whether a record of this resource type can change a customer's subscriptions or services.
pub fn is_relevant(resource_type: &str) -> bool {
    let t = resource_type.to_ascii_lowercase();
    RELEVANT.contains(&t.as_str()) || RELEVANT_WORDS.iter().any(|w| t.contains(w))
}

/// One activity record, as stored in `activity_log`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityRecord {
    pub record_id: String,
    pub customer_id: Option<Uuid>,
    pub customer_name: Option<String>,
    pub partner_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub application_id: Option<String>,
    pub resource_type: String,
    pub operation_type: Option<String>,
    pub operation_status: Option<String>,
    pub operation_at: DateTime<Utc>,
    /// Subscription ids the record names (`customizedData` `SubscriptionId…`, or the
    /// resource's `Id` for a subscription).
    pub subscription_ids: Vec<String>,
    pub resource_old_value: Option<Value>,
    pub resource_new_value: Option<Value>,
    pub customized_data: Option<Value>,
    pub original_correlation_id: Option<String>,
    pub raw: Value,
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `resourceOldValue`/`resourceNewValue` are the resource serialized as a JSON string: parsed
/// to JSON when they are, kept as a JSON string otherwise.
fn serialized(map: &Map<String, Value>, key: &str) -> Option<Value> {
    match map.get(key)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => {
            Some(serde_json::from_str(s).unwrap_or_else(|_| Value::from(s.as_str())))
        }
        other => Some(other.clone()),
    }
}

impl ActivityRecord {
    /// Reads one record; only `id`, `resourceType` and `operationDate` are required.
    pub fn from_json(map: Map<String, Value>) -> Result<ActivityRecord, ParseError> {
        let record_id = text(&map, "id")
            .ok_or_else(|| ParseError("an activity record without an id".into()))?;
        let resource_type = text(&map, "resourceType").unwrap_or_default();
        let operation_at = text(&map, "operationDate")
            .as_deref()
            .and_then(parse_timestamp)
            .ok_or_else(|| {
                ParseError(format!(
                    "activity record {record_id}: no readable operationDate"
                ))
            })?;
        let customer_id = text(&map, "customerId").and_then(|c| Uuid::try_parse(&c).ok());
        let resource_old_value = serialized(&map, "resourceOldValue");
        let resource_new_value = serialized(&map, "resourceNewValue");
        let customized_data = map.get("customizedData").filter(|v| !v.is_null()).cloned();
        let mut subscription_ids: Vec<String> = customized_data
            .iter()
            .flat_map(|d| d.as_array().into_iter().flatten())
            .filter(|kv| {
                kv.get("key")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.to_ascii_lowercase().starts_with("subscriptionid"))
            })
            .filter_map(|kv| kv.get("value").and_then(Value::as_str).map(str::to_string))
            .collect();
        if resource_type.eq_ignore_ascii_case("subscription") {
            for value in [&resource_new_value, &resource_old_value]
                .into_iter()
                .flatten()
            {
                if let Some(id) = value
                    .get("Id")
                    .or_else(|| value.get("id"))
                    .and_then(Value::as_str)
                {
                    subscription_ids.push(id.to_string());
                }
            }
        }
        let mut seen = HashSet::new();
        subscription_ids.retain(|id| seen.insert(id.clone()));
        Ok(ActivityRecord {
            customer_id,
            customer_name: text(&map, "customerName"),
            partner_id: text(&map, "partnerId"),
            user_principal_name: text(&map, "userPrincipalName"),
            application_id: text(&map, "applicationId"),
            operation_type: text(&map, "operationType"),
            operation_status: text(&map, "operationStatus"),
            original_correlation_id: text(&map, "originalCorrelationId"),
            subscription_ids,
            resource_old_value,
            resource_new_value,
            customized_data,
            record_id,
            resource_type,
            operation_at,
            raw: Value::Object(map),
        })
    }
}

/// What the run ledger says about earlier passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ledger {
    /// The newest `activity_read_through` of a succeeded or partial pass.
    pub watermark: Option<DateTime<Utc>>,
    /// When the newest succeeded or partial full pass started.
    pub last_full: Option<DateTime<Utc>>,
}

impl Ledger {
    /// The tenant's own runs only: another tenant's watermark or full pass says nothing here.
    pub async fn read(conn: &mut PgConnection, tenant: &str) -> Result<Ledger, sqlx::Error> {
        let (watermark, last_full) = sqlx::query_as(
            "SELECT max(activity_read_through), max(started_at) FILTER (WHERE kind = 'full')
             FROM pcsync.sync_runs WHERE tenant = $1 AND status IN ('succeeded', 'partial')",
        )
        .bind(tenant)
        .fetch_one(conn)
        .await?;
        Ok(Ledger {
            watermark,
            last_full,
        })
    }
}

/// Which pass to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassChoice {
    /// Incremental, unless a full pass is due (see [`decide`]).
    Auto,
    Full,
    Incremental,
}

/// The kind of a pass (`sync_runs.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    Full,
    Incremental,
}

impl PassKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::Full => "full",
            PassKind::Incremental => "incremental",
        }
    }
}

/// The pass to run now, and why. A full pass when asked for, when there is no watermark, when
/// the watermark is older than the log can be trusted to reach ([`WATERMARK_MAX_AGE`]), or
/// (for `Auto`) when `full_schedule` fired since the last full pass started.
pub fn decide(
    choice: PassChoice,
    ledger: &Ledger,
    full_schedule: &CronSchedule,
    now: DateTime<Utc>,
) -> (PassKind, &'static str) {
    if choice == PassChoice::Full {
        return (PassKind::Full, "a full pass was asked for");
    }
    let Some(watermark) = ledger.watermark else {
        return (
            PassKind::Full,
            "no pass has read the activity log yet (no watermark)",
        );
    };
    if now - watermark > WATERMARK_MAX_AGE {
        return (
            PassKind::Full,
            "the watermark is older than the activity log keeps (90 days, less 2 days' margin)",
        );
    }
    if choice == PassChoice::Auto {
        let due = match ledger.last_full {
            None => true,
            Some(t) => full_schedule.next_after(t).is_some_and(|n| n <= now),
        };
        if due {
            return (
                PassKind::Full,
                "sync.full_schedule fired since the last full pass",
            );
        }
    }
    (
        PassKind::Incremental,
        "the activity log says which customers changed",
    )
}

/// The ids among `records` that an earlier good pass (succeeded or partial) already read: it
/// fetched their customers after reading them, so they are old news.
pub async fn acted_on(
    conn: &mut PgConnection,
    tenant: &str,
    records: &[ActivityRecord],
) -> Result<HashSet<String>, sqlx::Error> {
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.record_id.as_str()).collect();
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT a.record_id FROM pcsync.activity_log a
         JOIN pcsync.sync_runs r ON r.run_id = a.run_id
         WHERE a.tenant = $2 AND a.record_id = ANY ($1) AND r.status IN ('succeeded', 'partial')",
    )
    .bind(&ids)
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    Ok(old.into_iter().collect())
}

/// Keeps the records (a record read twice is kept once, under the first good pass that read
/// it: a record read by a pass that then failed is taken over by the next one).
pub async fn store(
    conn: &mut PgConnection,
    run_id: Uuid,
    records: &[ActivityRecord],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO pcsync.activity_log (tenant, record_id, customer_id, customer_name, partner_id,
            user_principal_name, application_id, resource_type, operation_type, operation_status,
            operation_at, subscription_ids, resource_old_value, resource_new_value, customized_data,
            original_correlation_id, raw, run_id, read_at)
         SELECT (SELECT tenant FROM pcsync.sync_runs WHERE run_id = $2), r.*, $2, $3
         FROM jsonb_to_recordset($1::jsonb) AS r(record_id text, customer_id uuid,
            customer_name text, partner_id text, user_principal_name text, application_id text,
            resource_type text, operation_type text, operation_status text, operation_at timestamptz,
            subscription_ids text[], resource_old_value jsonb, resource_new_value jsonb,
            customized_data jsonb, original_correlation_id text, raw jsonb)
         ON CONFLICT (tenant, record_id) DO UPDATE SET run_id = EXCLUDED.run_id, read_at = EXCLUDED.read_at
         WHERE NOT EXISTS (SELECT 1 FROM pcsync.sync_runs g
                           WHERE g.run_id = activity_log.run_id AND g.status IN ('succeeded', 'partial'))",
    )
    .bind(sqlx::types::Json(records))
    .bind(run_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Fills `changed_by`, `changed_via`, `operation` and `operation_at` of the pass's subscription
/// events that exactly one activity record since `since` explains: same customer, naming the
/// subscription, succeeded. A record whose new value names the changed field is preferred;
/// when several records fit either way, the event stays unattributed. Returns the events
/// attributed.
pub async fn attribute(
    conn: &mut PgConnection,
    run_id: Uuid,
    since: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut attributed = 0;
    for by_field in [true, false] {
        attributed += sqlx::query(
            "UPDATE pcsync.change_events e
             SET changed_by = a.user_principal_name, changed_via = a.application_id,
                 operation = a.operation_type, operation_at = a.operation_at
             FROM pcsync.activity_log a
             WHERE e.run_id = $1 AND e.entity = 'subscription' AND e.changed_by IS NULL
               AND a.tenant = e.tenant AND a.record_id = (
                   SELECT min(c.record_id) FROM pcsync.activity_log c
                   WHERE c.tenant = e.tenant AND c.customer_id = e.customer_id AND e.entity_id = ANY (c.subscription_ids)
                     AND c.operation_at >= $2
                     AND coalesce(c.operation_status, 'succeeded') = 'succeeded'
                     AND (NOT $3 OR (e.kind = 'changed' AND e.field <> 'raw' AND EXISTS (
                         SELECT 1 FROM jsonb_object_keys(CASE WHEN jsonb_typeof(c.resource_new_value) = 'object'
                             THEN c.resource_new_value ELSE '{}'::jsonb END) AS k
                         WHERE lower(k) = replace(e.field, '_', ''))))
                   HAVING count(*) = 1)",
        )
        .bind(run_id)
        .bind(since)
        .bind(by_field)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(attributed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_pass_when_asked_due_or_the_log_cannot_reach_back() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T02:00:00Z")
            .expect("date")
            .to_utc();
        let weekly =
            CronSchedule::parse("0 2 * * 0", chrono_tz::Tz::UTC).expect("sundays at 02:00");
        let day = Duration::days(1);
        let ledger = |wm: Option<Duration>, full: Option<Duration>| Ledger {
            watermark: wm.map(|d| now - d),
            last_full: full.map(|d| now - d),
        };
        let kind = |choice, l: Ledger| decide(choice, &l, &weekly, now).0;
        // 2026-11-22 is a Sunday: the weekly full pass fired at 02:00.
        assert_eq!(
            kind(PassChoice::Auto, ledger(Some(day), Some(day * 7))),
            PassKind::Full
        );
        let monday = now + day;
        let after_sunday = Ledger {
            watermark: Some(now),
            last_full: Some(now + Duration::seconds(1)),
        };
        assert_eq!(
            decide(PassChoice::Auto, &after_sunday, &weekly, monday).0,
            PassKind::Incremental,
            "the day after the weekly full pass"
        );
        assert_eq!(
            kind(PassChoice::Auto, ledger(None, Some(day))),
            PassKind::Full
        );
        assert_eq!(
            kind(PassChoice::Incremental, ledger(None, None)),
            PassKind::Full
        );
        assert_eq!(
            kind(PassChoice::Incremental, ledger(Some(day * 89), Some(day))),
            PassKind::Full,
            "older than the log can be trusted to reach"
        );
        assert_eq!(
            kind(
                PassChoice::Incremental,
                ledger(Some(day * 87), Some(day * 87))
            ),
            PassKind::Incremental
        );
        assert_eq!(
            kind(PassChoice::Full, ledger(Some(day), Some(day))),
            PassKind::Full
        );
    }

    #[test]
    fn relevant_operations_by_resource_type_tolerant_of_new_ones() {
        for t in [
            "subscription",
            "Order",
            "license",
            "transfer",
            "customer",
            "partner_customer_relationship",
            "subscription_addon",
            "new_commerce_order",
        ] {
            assert!(is_relevant(t), "{t}");
        }
        for t in [
            "customer_user",
            "service_request",
            "partner_user",
            "",
            "unknown",
        ] {
            assert!(!is_relevant(t), "{t}");
        }
    }

    #[test]
    fn records_read_their_subscriptions_and_serialized_resources() {
        let r = ActivityRecord::from_json(
            json!({
                "id": "7f1a", "customerId": "c501c3c4-d776-40ef-9ecf-9cefb59442c1",
                "userPrincipalName": "admin@partner.onmicrosoft.com", "applicationId": "FulfillmentService",
                "resourceType": "subscription", "operationType": "update_subscription",
                "operationDate": "2026-11-21T10:11:12.1234567Z", "operationStatus": "succeeded",
                "resourceOldValue": "{\"Id\":\"sub-1\",\"Quantity\":5}",
                "resourceNewValue": "{\"Id\":\"sub-1\",\"Quantity\":9}",
                "customizedData": [{"key": "SubscriptionId", "value": "sub-1"}],
                "somethingNew": 1
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        )
        .expect("reads");
        assert_eq!(r.subscription_ids, vec!["sub-1".to_string()]);
        assert_eq!(
            r.resource_new_value,
            Some(json!({"Id": "sub-1", "Quantity": 9}))
        );
        assert_eq!(r.application_id.as_deref(), Some("FulfillmentService"));
        assert!(r.raw.get("somethingNew").is_some());

        let order = ActivityRecord::from_json(
            json!({"id": "2", "resourceType": "order", "operationDate": "2026-11-21T10:11:12Z",
                   "resourceNewValue": "not json",
                   "customizedData": [{"key": "OrderId", "value": "o1"}, {"key": "SubscriptionId-0", "value": "s1"},
                                      {"key": "SubscriptionId-1", "value": "s2"}]})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        )
        .expect("reads");
        assert_eq!(
            order.subscription_ids,
            vec!["s1".to_string(), "s2".to_string()]
        );
        assert_eq!(order.resource_new_value, Some(json!("not json")));
        assert!(ActivityRecord::from_json(Map::new()).is_err());
    }
}
