//! How Partner Center's values are read: the kinds of field, their typed values, and the
//! lenient reading the wire format needs (numbers as strings, 7 fractional digits, empty
//! strings as no value). What pcsync keeps a column of is described by the sync
//! (`crate::sync::resource`), field by field, in these terms.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::Value;

/// How a field is read, compared, shown and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string; numbers are taken as their text (ids such as `partnerId` come as either).
    Text,
    /// A whole number, or a string holding one.
    Integer,
    /// `true`/`false`, or those words as a string.
    Boolean,
    /// A calendar date: `2024-06-05` or a timestamp whose UTC date is taken. Stored as `date`,
    /// so every time zone reads the same day.
    Date,
    /// An instant, up to 7 fractional digits; no offset means UTC.
    Timestamp,
    /// Any JSON, kept as `jsonb` (an object or list an analyst may unpack).
    Json,
    /// A list of strings, kept as `text[]`.
    TextList,
}

impl Kind {
    /// The PostgreSQL type of the column.
    pub const fn sql_type(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Integer => "bigint",
            Kind::Boolean => "boolean",
            Kind::Date => "date",
            Kind::Timestamp => "timestamp with time zone",
            Kind::Json => "jsonb",
            Kind::TextList => "text[]",
        }
    }
}

/// One field: its column, where it sits in Partner Center's object, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub column: &'static str,
    /// Keys from the object's top level down, e.g. `["productType", "id"]`.
    pub path: &'static [&'static str],
    pub kind: Kind,
}

/// A field's value, typed by its [`Kind`].
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    Json(Value),
    TextList(Vec<String>),
}

impl FieldValue {
    /// As change events and the log show it: timestamps in ISO 8601 UTC, dates as
    /// `YYYY-MM-DD`, JSON compact with its keys sorted.
    pub fn to_text(&self) -> String {
        match self {
            FieldValue::Text(s) => s.clone(),
            FieldValue::Integer(n) => n.to_string(),
            FieldValue::Boolean(b) => b.to_string(),
            // NaiveDate's Display is ISO 8601 (YYYY-MM-DD), without parsing a format string.
            FieldValue::Date(d) => d.to_string(),
            FieldValue::Timestamp(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            FieldValue::Json(v) => v.to_string(),
            FieldValue::TextList(l) => Value::from(l.clone()).to_string(),
        }
    }
}

/// As the store sends it to PostgreSQL, which casts it to the column's type: dates and
/// timestamps as ISO 8601 text, the rest as their JSON selves.
impl serde::Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Text(s) => serializer.serialize_str(s),
            FieldValue::Integer(n) => serializer.serialize_i64(*n),
            FieldValue::Boolean(b) => serializer.serialize_bool(*b),
            FieldValue::Date(d) => serializer.collect_str(d),
            FieldValue::Timestamp(t) => {
                serializer.collect_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            FieldValue::Json(v) => v.serialize(serializer),
            FieldValue::TextList(l) => l.serialize(serializer),
        }
    }
}

/// Why a value cannot be read as its field's kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field \"{path}\" has the value {shown}, which is not {expected}")]
pub struct WrongType {
    pub path: String,
    pub shown: String,
    pub expected: &'static str,
}

fn wrong(path: &dyn Fn() -> String, value: &Value, expected: &'static str) -> WrongType {
    let mut shown = value.to_string();
    if shown.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|i| shown.is_char_boundary(*i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    WrongType {
        path: path(),
        shown,
        expected,
    }
}

/// ISO 8601 with up to 7 (or 9) fractional digits; no offset means UTC; a bare date is its
/// midnight UTC.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.to_utc());
    }
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|n| n.and_utc())
}

/// Reads `value` (the JSON at the field's path) as the field's kind. Null, and an empty
/// string, are no value; a value of another type is an error, never a silent `None`.
pub fn read(field: &Field, value: &Value) -> Result<Option<FieldValue>, WrongType> {
    read_as(field.kind, value, &|| field.path.join("."))
}

/// [`read`] for a value at `path` (shown in the error only).
pub fn read_as(
    kind: Kind,
    value: &Value,
    path: &dyn Fn() -> String,
) -> Result<Option<FieldValue>, WrongType> {
    if value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty()) {
        return Ok(None);
    }
    let field = path;
    let read = match kind {
        Kind::Text => match value {
            Value::String(s) => Some(FieldValue::Text(s.clone())),
            Value::Number(n) => Some(FieldValue::Text(n.to_string())),
            _ => None,
        }
        .ok_or_else(|| wrong(field, value, "text")),
        Kind::Integer => match value {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 9e15)
                    .map(|x| x as i64)
            }),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .map(FieldValue::Integer)
        .ok_or_else(|| wrong(field, value, "a whole number")),
        Kind::Boolean => match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
        .map(FieldValue::Boolean)
        .ok_or_else(|| wrong(field, value, "true or false")),
        Kind::Date => value
            .as_str()
            .and_then(parse_timestamp)
            .map(|t| FieldValue::Date(t.date_naive()))
            .ok_or_else(|| wrong(field, value, "a date (ISO 8601)")),
        Kind::Timestamp => value
            .as_str()
            .and_then(parse_timestamp)
            // PostgreSQL keeps microseconds: a value read back must equal the one fetched.
            .and_then(|t| {
                chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::microseconds(1)).ok()
            })
            .map(FieldValue::Timestamp)
            .ok_or_else(|| wrong(field, value, "a timestamp (ISO 8601)")),
        Kind::Json => Ok(FieldValue::Json(value.clone())),
        Kind::TextList => value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .map(FieldValue::TextList)
            .ok_or_else(|| wrong(field, value, "a list of strings")),
    }?;
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_reads_its_values_and_refuses_others() {
        let of = |kind| Field {
            column: "x",
            path: &["x"],
            kind,
        };
        let ok = |kind, v: Value| read(&of(kind), &v).expect("reads");
        assert_eq!(
            ok(Kind::Text, json!(4847383)),
            Some(FieldValue::Text("4847383".into()))
        );
        assert_eq!(ok(Kind::Integer, json!("2")), Some(FieldValue::Integer(2)));
        assert_eq!(
            ok(Kind::Boolean, json!("TRUE")),
            Some(FieldValue::Boolean(true))
        );
        assert_eq!(
            ok(Kind::Date, json!("2024-06-05T00:00:00Z")),
            NaiveDate::from_ymd_opt(2024, 6, 5).map(FieldValue::Date)
        );
        assert_eq!(
            ok(Kind::Date, json!("2024-06-05")),
            NaiveDate::from_ymd_opt(2024, 6, 5).map(FieldValue::Date)
        );
        assert_eq!(
            ok(Kind::TextList, json!(["a", "b"])),
            Some(FieldValue::TextList(vec!["a".into(), "b".into()]))
        );
        for kind in [
            Kind::Text,
            Kind::Integer,
            Kind::Boolean,
            Kind::Date,
            Kind::Timestamp,
        ] {
            assert_eq!(ok(kind, json!(null)), None);
            assert_eq!(ok(kind, json!("")), None);
        }
        for (kind, v) in [
            (Kind::Text, json!({"a": 1})),
            (Kind::Text, json!(true)),
            (Kind::Integer, json!("five")),
            (Kind::Integer, json!(2.5)),
            (Kind::Boolean, json!("maybe")),
            (Kind::Date, json!("soon")),
            (Kind::Timestamp, json!(20240101)),
            (Kind::TextList, json!("a")),
        ] {
            let e = read(&of(kind), &v).expect_err("wrong type").to_string();
            assert!(e.starts_with("field \"x\" has the value "), "{e}");
        }
        let t = ok(Kind::Timestamp, json!("2024-06-05T19:26:38.3667635Z"));
        assert_eq!(
            t.map(|t| t.to_text()).as_deref(),
            Some("2024-06-05T19:26:38.366763Z"),
            "microseconds, as PostgreSQL keeps them"
        );
    }
}
