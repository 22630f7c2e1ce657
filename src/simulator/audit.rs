//! The simulated activity log (`GET /v1/auditrecords`): one record per operation a partner
//! user or app made, in Partner Center's shape (PascalCase old and new values serialized as JSON
//! strings, `customizedData` key/value pairs, 7-digit fractions). Changes made by "the system"
//! (renewals, expiries) leave no record, as in reality.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Mutation, SIM_CLIENT_ID};

/// Who made a change in the simulated Partner Center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A partner user through an app: the activity log gets a record.
    Partner { user: String, application: String },
    /// Microsoft's side (renewal, expiry, suspension for non-payment): no record.
    System,
}

impl Actor {
    /// The partner admin the simulator's own changes are made by.
    pub fn partner_admin() -> Actor {
        Actor::Partner {
            user: "admin@simulated-partner.onmicrosoft.com".into(),
            application: SIM_CLIENT_ID.into(),
        }
    }
}

/// The record's operation for one mutation: (resourceType, operationType).
fn operation(m: &Mutation) -> (&'static str, &'static str) {
    match (m.entity.as_str(), m.kind.as_str()) {
        ("subscription", "added") => ("order", "create_order"),
        ("subscription", "removed") => ("subscription", "cancel_subscription"),
        ("subscription", _) => ("subscription", "update_subscription"),
        ("managed_service", _) => ("customer", "update_customer_service"),
        ("customer", "relationship_removed") => (
            "partner_customer_relationship",
            "remove_partner_customer_relationship",
        ),
        ("customer", "relationship_restored") => (
            "partner_customer_relationship",
            "create_partner_customer_relationship",
        ),
        ("customer", _) => ("customer", "add_customer"),
        _ => ("unknown", "unknown_operation"),
    }
}

/// `quantity` → `Quantity`, as the log's serialized resources spell keys.
fn pascal(field: &str) -> String {
    let mut c = field.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The activity record of one partner-made mutation.
pub fn record(
    m: &Mutation,
    actor: &Actor,
    number: u64,
    at: DateTime<Utc>,
    customer_name: &str,
    partner_id: &str,
) -> Option<Value> {
    let Actor::Partner { user, application } = actor else {
        return None;
    };
    let (resource_type, operation_type) = operation(m);
    let resource = |value: Option<&Value>| -> String {
        let mut obj = Map::new();
        obj.insert("Id".into(), json!(m.entity_id));
        if let (Some(field), Some(v)) = (&m.field, value) {
            obj.insert(pascal(field), v.clone());
        }
        if m.kind == "removed" && value.is_some() {
            obj.insert("Status".into(), json!("deleted"));
        }
        Value::Object(obj).to_string()
    };
    let mut custom = Vec::new();
    match (m.entity.as_str(), m.kind.as_str()) {
        ("subscription", "added") => {
            custom.push(json!({"key": "OrderId", "value": format!("{:012x}", number)}));
            custom.push(json!({"key": "SubscriptionId-0", "value": m.entity_id}));
        }
        ("subscription", _) => custom.push(json!({"key": "SubscriptionId", "value": m.entity_id})),
        ("managed_service", _) => custom.push(json!({"key": "ServiceId", "value": m.entity_id})),
        _ => {}
    }
    Some(json!({
        "id": format!("sim-{number:08x}"),
        "partnerId": partner_id,
        "customerId": m.customer_id.to_string(),
        "customerName": customer_name,
        "userPrincipalName": user,
        "applicationId": application,
        "resourceType": resource_type,
        "resourceOldValue": if m.kind == "added" { Value::Null } else { json!(resource(m.old.as_ref())) },
        "resourceNewValue": json!(resource(m.new.as_ref().or(Some(&Value::Null)))),
        "customizedData": custom,
        "operationType": operation_type,
        "operationDate": format!(
            "{}.{:07}Z",
            at.format("%Y-%m-%dT%H:%M:%S"),
            at.timestamp_subsec_nanos() / 100
        ),
        "operationStatus": "succeeded",
        "originalCorrelationId": Uuid::new_v4().to_string(),
        "attributes": {"objectType": "AuditRecord"}
    }))
}

/// The day an `operationDate` falls on.
pub fn day_of(record: &Value) -> Option<NaiveDate> {
    let text = record.get("operationDate")?.as_str()?;
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutation(entity: &str, kind: &str, field: Option<&str>) -> Mutation {
        Mutation {
            customer_id: Uuid::from_u128(1),
            entity: entity.into(),
            entity_id: "sub-1".into(),
            kind: kind.into(),
            field: field.map(str::to_string),
            old: field.map(|_| json!(5)),
            new: field.map(|_| json!(9)),
        }
    }

    #[test]
    fn partner_changes_get_records_in_partner_centers_shape_and_system_ones_none() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T01:02:03.123456Z")
            .expect("date")
            .to_utc();
        let m = mutation("subscription", "changed", Some("quantity"));
        let r = record(&m, &Actor::partner_admin(), 7, at, "Contoso", "4847383").expect("record");
        assert_eq!(r["resourceType"], "subscription");
        assert_eq!(r["operationType"], "update_subscription");
        assert_eq!(r["operationDate"], "2026-11-22T01:02:03.1234560Z");
        assert_eq!(r["customizedData"][0]["value"], "sub-1");
        let new: Value =
            serde_json::from_str(r["resourceNewValue"].as_str().expect("a JSON string"))
                .expect("json");
        assert_eq!(new, json!({"Id": "sub-1", "Quantity": 9}));
        assert_eq!(day_of(&r), NaiveDate::from_ymd_opt(2026, 11, 22));
        assert!(record(&m, &Actor::System, 8, at, "Contoso", "4847383").is_none());
        let added = record(
            &mutation("subscription", "added", None),
            &Actor::partner_admin(),
            9,
            at,
            "Contoso",
            "4847383",
        )
        .expect("record");
        assert_eq!(added["operationType"], "create_order");
        assert_eq!(added["customizedData"][1]["key"], "SubscriptionId-0");
    }
}
