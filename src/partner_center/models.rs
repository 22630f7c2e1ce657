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

/// One page of a collection: its items, its `totalCount` if it has one and, if there is one,
/// the link to the next page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Map<String, Value>>,
    /// `totalCount` as sent: the page's count for seek-paged lists (customers), the
    /// collection's for the others; checked by the pager.
    pub total_count: Option<u64>,
    pub next: Option<NextLink>,
}

/// `links.next`: a relative uri and the headers to send with it, exactly as given.
#[derive(Debug, Clone, PartialEq)]
pub struct NextLink {
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// Why a body is not a collection page, or an object not what pcsync can store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A collection page. `items` must be an array (an empty collection sends `[]`): a body
/// without it proves nothing about what the collection holds.
pub fn parse_page(body: &[u8]) -> Result<Page, PageError> {
    let value: Value = serde_json::from_slice(strip_bom(body))
        .map_err(|e| PageError::Unreadable(format!("invalid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(PageError::Unreadable("expected a JSON object".into()));
    };
    let total_count = match map.get("totalCount") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            return Err(PageError::Unreadable(format!(
                "\"totalCount\" is {other}, not a count"
            )));
        }
    };
    let items = match map.remove("items") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::Object(m) => Ok(m),
                _ => Err(PageError::Unreadable(
                    "an item of the collection is not an object".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Value::Null) => {
            return Err(PageError::Incomplete(format!(
                "the answer has no \"items\" array (totalCount {})",
                total_count.map_or("absent".to_string(), |t| t.to_string())
            )));
        }
        Some(_) => return Err(PageError::Unreadable("\"items\" is not an array".into())),
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
    Ok(Page {
        items,
        total_count,
        next,
    })
}

/// Why a body is not a usable page.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PageError {
    /// Not JSON, or not the shape of a collection.
    #[error("{0}")]
    Unreadable(String),
    /// Well-formed, but not proof of the whole collection.
    #[error("{0}")]
    Incomplete(String),
}

/// A field's value as text: strings (empty = no value) and numbers (ids such as `partnerId`
/// arrive as either). Anything else is the wrong type.
fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ParseError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(wrong_type(key, other, "text")),
    }
}

fn wrong_type(key: &str, value: &Value, expected: &str) -> ParseError {
    let mut shown = value.to_string();
    if shown.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|i| shown.is_char_boundary(*i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    ParseError(format!(
        "field \"{key}\" has the value {shown}, which is not {expected}"
    ))
}

/// A whole number, or a string holding one; an empty string is no value.
fn integer(map: &Map<String, Value>, key: &str) -> Result<Option<i64>, ParseError> {
    let value = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let parsed = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| wrong_type(key, value, "a whole number"))
}

/// `true`/`false`, or those words as a string; an empty string is no value.
fn boolean(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ParseError> {
    let value = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    match value {
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(wrong_type(key, value, "true or false")),
        },
        _ => Err(wrong_type(key, value, "true or false")),
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
/// database must compare equal to the one fetched again. An empty string is no value.
fn timestamp(map: &Map<String, Value>, key: &str) -> Result<Option<DateTime<Utc>>, ParseError> {
    let value = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    match value {
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => parse_timestamp(s)
            .and_then(|t| {
                chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::microseconds(1)).ok()
            })
            .map(Some)
            .ok_or_else(|| wrong_type(key, value, "a date or timestamp (ISO 8601)")),
        _ => Err(wrong_type(key, value, "a date or timestamp (ISO 8601)")),
    }
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
        let raw_id = text(map, "id")?.ok_or_else(|| ParseError("customer without an id".into()))?;
        let id = Uuid::try_parse(&raw_id)
            .map_err(|_| ParseError(format!("customer id {raw_id:?} is not a GUID")))?;
        let in_customer = |e: ParseError| ParseError(format!("customer {id}: {e}"));
        let profile = map
            .get("companyProfile")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(Customer {
            id,
            company_name: text(&profile, "companyName").map_err(in_customer)?,
            domain: text(&profile, "domain").map_err(in_customer)?,
            relationship: text(map, "relationshipToPartner").map_err(in_customer)?,
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
    /// The typed fields of one Subscription object. A field that is absent, null or an
    /// empty string is no value; a value of the wrong type is an error naming the
    /// subscription, the field and the value, never a silent `None`.
    pub fn from_json(map: Map<String, Value>) -> Result<Subscription, ParseError> {
        let id =
            text(&map, "id")?.ok_or_else(|| ParseError("subscription without an id".into()))?;
        let typed = || -> Result<Subscription, ParseError> {
            let product_type = match map.get("productType") {
                None | Some(Value::Null) => None,
                Some(Value::Object(p)) => text(p, "id")?,
                Some(other) => return Err(wrong_type("productType", other, "an object")),
            };
            Ok(Subscription {
                offer_id: text(&map, "offerId")?,
                offer_name: text(&map, "offerName")?,
                friendly_name: text(&map, "friendlyName")?,
                quantity: integer(&map, "quantity")?,
                unit_type: text(&map, "unitType")?,
                status: text(&map, "status")?,
                auto_renew_enabled: boolean(&map, "autoRenewEnabled")?,
                is_trial: boolean(&map, "isTrial")?,
                billing_type: text(&map, "billingType")?,
                billing_cycle: text(&map, "billingCycle")?,
                term_duration: text(&map, "termDuration")?,
                renewal_term_duration: text(&map, "renewalTermDuration")?,
                creation_date: timestamp(&map, "creationDate")?,
                effective_start_date: timestamp(&map, "effectiveStartDate")?,
                commitment_end_date: timestamp(&map, "commitmentEndDate")?,
                cancellation_allowed_until: timestamp(&map, "cancellationAllowedUntilDate")?,
                partner_id: text(&map, "partnerId")?,
                contract_type: text(&map, "contractType")?,
                order_id: text(&map, "orderId")?,
                product_type,
                publisher_name: text(&map, "publisherName")?,
                id: id.clone(),
                raw: Map::new(),
            })
        };
        let mut sub = typed().map_err(|e| ParseError(format!("subscription {id}: {e}")))?;
        sub.raw = map;
        Ok(sub)
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
            text(&map, "id")?.ok_or_else(|| ParseError("managed service without an id".into()))?;
        let in_service = |e: ParseError| ParseError(format!("managed service {id}: {e}"));
        let links = map
            .get("links")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let uri = |name: &str| match links.get(name).and_then(Value::as_object) {
            Some(l) => text(l, "uri").map_err(in_service),
            None => Ok(None),
        };
        Ok(ManagedService {
            name: text(&map, "name").map_err(in_service)?,
            group_name: text(&map, "groupName").map_err(in_service)?,
            admin_service_uri: uri("adminService")?,
            service_health_uri: uri("serviceHealth")?,
            service_ticket_uri: uri("serviceTicket")?,
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
    fn a_page_without_items_is_incomplete_not_empty() {
        for body in [&b"{\"totalCount\": 0}"[..], b"{}", b"{\"items\": null}"] {
            assert!(
                matches!(parse_page(body), Err(PageError::Incomplete(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let page =
            parse_page(b"{\"totalCount\": 4, \"items\": [{\"id\": \"a\"}]}").expect("parses");
        assert_eq!(page.total_count, Some(4), "kept for the pager to check");
        assert!(parse_page(b"{\"totalCount\": \"many\", \"items\": []}").is_err());
    }

    #[test]
    fn values_of_the_wrong_type_are_errors_that_name_field_and_value() {
        let base = json!({"id": "s-1", "offerId": "X"});
        for (field, value, says) in [
            (
                "quantity",
                json!("five"),
                "\"quantity\" has the value \"five\"",
            ),
            ("quantity", json!(2.5), "2.5"),
            ("autoRenewEnabled", json!("maybe"), "\"maybe\""),
            ("autoRenewEnabled", json!(1), "autoRenewEnabled"),
            ("commitmentEndDate", json!("soon"), "\"soon\""),
            ("commitmentEndDate", json!(20240101), "commitmentEndDate"),
            ("offerName", json!({"en": "x"}), "offerName"),
            ("productType", json!("NCE"), "productType"),
        ] {
            let mut m = obj(base.clone());
            m.insert(field.to_string(), value);
            let e = Subscription::from_json(m).expect_err(field).to_string();
            assert!(e.starts_with("subscription s-1: "), "{e}");
            assert!(e.contains(says), "{e}");
        }
        // Absent, null and empty stay no value.
        let s = Subscription::from_json(obj(json!({
            "id": "s-1", "quantity": null, "autoRenewEnabled": "", "commitmentEndDate": "",
            "partnerId": 4847383, "quantityAsText": "five"
        })))
        .expect("parses");
        assert_eq!(
            (s.quantity, s.auto_renew_enabled, s.commitment_end_date),
            (None, None, None)
        );
        assert_eq!(s.partner_id.as_deref(), Some("4847383"));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b"{\"items\": [ {\"id\": "[..],
            b"<html>",
            b"[1,2]",
            b"{\"items\": 3}",
            b"",
            b"{}",
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
