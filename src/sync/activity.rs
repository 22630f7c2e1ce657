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
use uuid::Uuid;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
