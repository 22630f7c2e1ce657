//! Typed views of Partner Center's objects, read leniently: unknown fields are kept (in `raw`)
//! but never fail a parse, empty strings and nulls become `None`, numbers may come as strings,
//! timestamps carry up to 7 fractional digits. Pure functions, tested without a network.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Responses may begin with a UTF-8 byte-order mark, which JSON parsers refuse.
pub fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(body)
}

/// One page of a collection: its items and, if there is one, the link to the next page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Map<String, Value>>,
    pub next: Option<NextLink>,
}

/// `links.next`: a relative uri and the headers to send with it, exactly as given.
#[derive(Debug, Clone, PartialEq)]
pub struct NextLink {
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// Why a body is not a collection page.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

pub fn parse_page(body: &[u8]) -> Result<Page, ParseError> {
    let value: Value = serde_json::from_slice(strip_bom(body))
        .map_err(|e| ParseError(format!("invalid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ParseError("expected a JSON object".into()));
    };
    let items = match map.remove("items") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::Object(m) => Ok(m),
                _ => Err(ParseError(
                    "an item of the collection is not an object".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        // An empty collection may come without items at all.
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(ParseError("\"items\" is not an array".into())),
    };
    let next = map.get("links").and_then(|l| l.get("next")).and_then(|n| {
        let uri = n.get("uri")?.as_str()?.to_string();
        let headers = n
            .get("headers")
            .and_then(Value::as_array)
            .map(|hs| {
                hs.iter()
                    .filter_map(|h| {
                        Some((
                            h.get("key")?.as_str()?.to_string(),
                            h.get("value")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(NextLink { uri, headers })
    });
    Ok(Page { items, next })
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn integer(map: &Map<String, Value>, key: &str) -> Option<i64> {
    match map.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(map: &Map<String, Value>, key: &str) -> Option<bool> {
    match map.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// ISO 8601 with up to 7 (or 9) fractional digits; no offset means UTC. Unparseable → `None`
/// (the raw object still holds it).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.to_utc());
    }
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|n| n.and_utc())
}

/// Truncated to microseconds: PostgreSQL keeps no more, and a value that came back from the
/// database must compare equal to the one fetched again.
fn timestamp(map: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    map.get(key)?
        .as_str()
        .and_then(parse_timestamp)
        .and_then(|t| {
            chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::microseconds(1)).ok()
        })
}

/// A customer of the customer list.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub id: Uuid,
    pub company_name: Option<String>,
    pub domain: Option<String>,
    pub relationship: Option<String>,
}

impl Customer {
    pub fn from_json(map: &Map<String, Value>) -> Result<Customer, ParseError> {
        let raw_id = text(map, "id").ok_or_else(|| ParseError("customer without an id".into()))?;
        let id = Uuid::try_parse(&raw_id)
            .map_err(|_| ParseError(format!("customer id {raw_id:?} is not a GUID")))?;
        let profile = map
            .get("companyProfile")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(Customer {
            id,
            company_name: text(&profile, "companyName"),
            domain: text(&profile, "domain"),
            relationship: text(map, "relationshipToPartner"),
        })
    }
}

/// A subscription: the business fields typed, the whole object in `raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub offer_id: Option<String>,
    pub offer_name: Option<String>,
    pub friendly_name: Option<String>,
    pub quantity: Option<i64>,
    pub unit_type: Option<String>,
    pub status: Option<String>,
    pub auto_renew_enabled: Option<bool>,
    pub is_trial: Option<bool>,
    pub billing_type: Option<String>,
    pub billing_cycle: Option<String>,
    pub term_duration: Option<String>,
    pub renewal_term_duration: Option<String>,
    pub creation_date: Option<DateTime<Utc>>,
    pub effective_start_date: Option<DateTime<Utc>>,
    pub commitment_end_date: Option<DateTime<Utc>>,
    pub cancellation_allowed_until: Option<DateTime<Utc>>,
    pub partner_id: Option<String>,
    pub contract_type: Option<String>,
    pub order_id: Option<String>,
    pub product_type: Option<String>,
    pub publisher_name: Option<String>,
    pub raw: Map<String, Value>,
}

impl Subscription {
    pub fn from_json(map: Map<String, Value>) -> Result<Subscription, ParseError> {
        let id = text(&map, "id").ok_or_else(|| ParseError("subscription without an id".into()))?;
        let product_type = map
            .get("productType")
            .and_then(Value::as_object)
            .and_then(|p| text(p, "id"));
        Ok(Subscription {
            offer_id: text(&map, "offerId"),
            offer_name: text(&map, "offerName"),
            friendly_name: text(&map, "friendlyName"),
            quantity: integer(&map, "quantity"),
            unit_type: text(&map, "unitType"),
            status: text(&map, "status"),
            auto_renew_enabled: boolean(&map, "autoRenewEnabled"),
            is_trial: boolean(&map, "isTrial"),
            billing_type: text(&map, "billingType"),
            billing_cycle: text(&map, "billingCycle"),
            term_duration: text(&map, "termDuration"),
            renewal_term_duration: text(&map, "renewalTermDuration"),
            creation_date: timestamp(&map, "creationDate"),
            effective_start_date: timestamp(&map, "effectiveStartDate"),
            commitment_end_date: timestamp(&map, "commitmentEndDate"),
            cancellation_allowed_until: timestamp(&map, "cancellationAllowedUntilDate"),
            partner_id: text(&map, "partnerId"),
            contract_type: text(&map, "contractType"),
            order_id: text(&map, "orderId"),
            product_type,
            publisher_name: text(&map, "publisherName"),
            id,
            raw: map,
        })
    }
}

/// A managed service: a service the partner administers for the customer.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedService {
    pub id: String,
    pub name: Option<String>,
    pub group_name: Option<String>,
    pub admin_service_uri: Option<String>,
    pub service_health_uri: Option<String>,
    pub service_ticket_uri: Option<String>,
    pub raw: Map<String, Value>,
}

impl ManagedService {
    pub fn from_json(map: Map<String, Value>) -> Result<ManagedService, ParseError> {
        let id =
            text(&map, "id").ok_or_else(|| ParseError("managed service without an id".into()))?;
        let links = map
            .get("links")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let uri = |name: &str| {
            links
                .get(name)
                .and_then(Value::as_object)
                .and_then(|l| text(l, "uri"))
        };
        Ok(ManagedService {
            name: text(&map, "name"),
            group_name: text(&map, "groupName"),
            admin_service_uri: uri("adminService"),
            service_health_uri: uri("serviceHealth"),
            service_ticket_uri: uri("serviceTicket"),
            id,
            raw: map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn timestamps_with_seven_fractional_digits_and_without_offset() {
        let t = parse_timestamp("2024-06-05T19:26:38.3667635Z").expect("parses");
        assert_eq!(t.nanosecond(), 366_763_500);
        assert_eq!(t.hour(), 19);
        assert!(parse_timestamp("2024-04-10T23:02:26.02Z").is_some());
        assert_eq!(
            parse_timestamp("2024-04-10T00:00:00").map(|t| t.day()),
            Some(10)
        );
        assert!(parse_timestamp("2024-04-10T00:00:00+02:00").is_some());
        assert_eq!(parse_timestamp(""), None);
        assert_eq!(parse_timestamp("soon"), None);
    }

    #[test]
    fn bom_is_stripped_before_parsing() {
        let page = parse_page(b"\xEF\xBB\xBF{\"totalCount\":0,\"items\":[]}").expect("parses");
        assert!(page.items.is_empty());
        assert_eq!(page.next, None);
    }

    #[test]
    fn next_link_and_its_headers_are_kept_as_given() {
        let body = json!({
            "totalCount": 1, "items": [{"id": "x"}],
            "links": {"next": {"uri": "/customers?size=1&seekOperation=Next", "method": "GET",
                "headers": [{"key": "MS-ContinuationToken", "value": "a+b/c=="}]}},
            "attributes": {"objectType": "Collection"}
        });
        let page = parse_page(body.to_string().as_bytes()).expect("parses");
        let next = page.next.expect("next");
        assert_eq!(next.uri, "/customers?size=1&seekOperation=Next");
        assert_eq!(
            next.headers,
            vec![("MS-ContinuationToken".to_string(), "a+b/c==".to_string())]
        );
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b"{\"items\": [ {\"id\": "[..],
            b"<html>",
            b"[1,2]",
            b"{\"items\": 3}",
            b"",
        ] {
            assert!(
                parse_page(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn subscription_fields_are_read_leniently() {
        let s = Subscription::from_json(obj(json!({
            "id": "bbbb1b1b-cc2c-dd3d-ee4e-ffffff5f5f5f",
            "offerId": "CFQ7TTC0LH18:0001:CFQ7TTC0P0WS",
            "quantity": "2",
            "autoRenewEnabled": true,
            "renewalTermDuration": "",
            "termDuration": null,
            "partnerId": 4847383,
            "productType": {"id": "OnlineServicesNCE", "displayName": "OnlineServicesNCE"},
            "creationDate": "2024-06-05T19:26:38.3667635Z",
            "someFieldFromTomorrow": {"nested": [1, 2]}
        })))
        .expect("parses");
        assert_eq!(s.quantity, Some(2));
        assert_eq!(s.renewal_term_duration, None, "empty string is no value");
        assert_eq!(s.term_duration, None);
        assert_eq!(s.partner_id.as_deref(), Some("4847383"));
        assert_eq!(s.product_type.as_deref(), Some("OnlineServicesNCE"));
        assert!(s.creation_date.is_some());
        assert!(s.raw.contains_key("someFieldFromTomorrow"), "kept in raw");
        assert!(Subscription::from_json(obj(json!({"offerId": "x"}))).is_err());
    }

    #[test]
    fn customers_need_a_guid_id() {
        let c = Customer::from_json(&obj(json!({
            "id": "c501c3c4-d776-40ef-9ecf-9cefb59442c1",
            "companyProfile": {"companyName": "Contoso", "domain": "contoso.onmicrosoft.com"},
            "relationshipToPartner": "reseller"
        })))
        .expect("parses");
        assert_eq!(c.company_name.as_deref(), Some("Contoso"));
        assert!(Customer::from_json(&obj(json!({"id": "../../admin"}))).is_err());
    }
}
