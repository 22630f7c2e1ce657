//! Typed views of Partner Center's objects: unknown fields are kept (in `raw`) but never fail a
//! parse, empty strings and nulls are no value, numbers may come as strings, timestamps carry
//! up to 7 fractional digits, and a value of the wrong type is an error that names it.
//! The resources the sync stores are described and read by the sync (`crate::sync::resource`);
//! here are the page envelope and the customer list. Pure functions, tested without a network.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::fields;
pub use super::fields::parse_timestamp;

/// Responses may begin with a UTF-8 byte-order mark, which JSON parsers refuse.
pub fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(body)
}

/// One page of a collection: its items (each object's JSON text, as sent), its `totalCount`
/// if it has one and, if there is one, the link to the next page.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Box<RawValue>>,
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

/// The collection's envelope; the items stay unparsed text.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "totalCount", default)]
    total_count: Option<Value>,
    #[serde(borrow, default)]
    items: Option<&'a RawValue>,
    #[serde(default)]
    links: Option<Value>,
}

/// A collection page. `items` must be an array (an empty collection sends `[]`): a body
/// without it proves nothing about what the collection holds.
pub fn parse_page(body: &[u8]) -> Result<Page, PageError> {
    let body = std::str::from_utf8(strip_bom(body))
        .map_err(|e| PageError::Unreadable(format!("invalid JSON: not UTF-8 ({e})")))?;
    if !body.trim_start().starts_with('{') {
        return Err(PageError::Unreadable("expected a JSON object".into()));
    }
    let envelope: Envelope<'_> = serde_json::from_str(body)
        .map_err(|e| PageError::Unreadable(format!("invalid JSON: {e}")))?;
    let total_count = match envelope.total_count {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        // Numbers arrive as strings at times (`"totalCount": "04"` in a published body).
        Some(Value::String(t)) if t.trim().parse::<u64>().is_ok() => t.trim().parse().ok(),
        Some(other) => {
            return Err(PageError::Unreadable(format!(
                "\"totalCount\" is {other}, not a count"
            )));
        }
    };
    let items = match envelope.items.filter(|i| i.get() != "null") {
        None => {
            return Err(PageError::Incomplete(format!(
                "the answer has no \"items\" array (totalCount {})",
                total_count.map_or("absent".to_string(), |t| t.to_string())
            )));
        }
        Some(raw) => serde_json::from_str::<Vec<Box<RawValue>>>(raw.get())
            .map_err(|_| PageError::Unreadable("\"items\" is not an array".into()))?,
    };
    if items.iter().any(|i| !i.get().starts_with('{')) {
        return Err(PageError::Unreadable(
            "an item of the collection is not an object".into(),
        ));
    }
    let next = envelope
        .links
        .as_ref()
        .and_then(|l| l.get("next"))
        .and_then(|n| {
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

/// An item's JSON text as an object.
pub fn object_of(raw: &RawValue) -> Result<Map<String, Value>, ParseError> {
    serde_json::from_str(raw.get())
        .map_err(|e| ParseError(format!("an item is not an object: {e}")))
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

/// A text value at `path` in `map` (see [`fields::Kind::Text`]): strings (empty = no value)
/// and numbers; anything else is the wrong type.
fn text(map: &Map<String, Value>, path: &[&str]) -> Result<Option<String>, ParseError> {
    let mut at = match path.first().and_then(|k| map.get(*k)) {
        Some(v) => v,
        None => return Ok(None),
    };
    for step in &path[1..] {
        at = match at.get(*step) {
            Some(v) => v,
            None => return Ok(None),
        };
    }
    match fields::read_as(fields::Kind::Text, at, &|| path.join(".")) {
        Ok(Some(fields::FieldValue::Text(s))) => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(e) => Err(ParseError(e.to_string())),
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
    /// The item's id, when it reads as a GUID (for naming an item that does not read whole).
    pub fn id_of(map: &Map<String, Value>) -> Option<Uuid> {
        map.get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::try_parse(s.trim()).ok())
    }

    pub fn from_json(map: &Map<String, Value>) -> Result<Customer, ParseError> {
        let raw_id =
            text(map, &["id"])?.ok_or_else(|| ParseError("customer without an id".into()))?;
        let id = Uuid::try_parse(&raw_id)
            .map_err(|_| ParseError(format!("customer id {raw_id:?} is not a GUID")))?;
        let in_customer = |e: ParseError| ParseError(format!("customer {id}: {e}"));
        Ok(Customer {
            id,
            company_name: text(map, &["companyProfile", "companyName"]).map_err(in_customer)?,
            domain: text(map, &["companyProfile", "domain"]).map_err(in_customer)?,
            relationship: text(map, &["relationshipToPartner"]).map_err(in_customer)?,
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
        assert!(page.next.is_none());
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
        let quoted = parse_page(b"{\"totalCount\": \"04\", \"items\": []}").expect("parses");
        assert_eq!(quoted.total_count, Some(4), "a count written as a string");
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
