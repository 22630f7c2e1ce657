//! One description per resource: what pcsync keeps a row of, read from Partner Center. A
//! [`Resource`] names the change-event entity, the table and its key, and the fields (JSON
//! path, column, kind); a [`Record`] is one object read by that description. Parse, diff
//! (through [`Entity`]), the stored-row read and the batch statement's parts are generated from
//! the description, so adding a resource means its description, its migration and its tests.
//!
//! Managed services and subscribed SKUs are described here. Subscriptions keep their own path
//! for now (a partner filter, untracked rows, the second look); they move onto this one next.

use std::marker::PhantomData;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use super::diff::{Entity, FieldChange};
use crate::partner_center::fields::{self, Field, FieldValue, Kind};
use crate::partner_center::models::ParseError;

/// What pcsync keeps a row of, and where.
#[derive(Debug)]
pub struct Resource {
    /// `change_events.entity`.
    pub entity: &'static str,
    /// The table in schema `pcsync`.
    pub table: &'static str,
    /// The table's key column beside `customer_id`.
    pub key: &'static str,
    /// Where the object's id sits (`["id"]`, `["productSku", "id"]`).
    pub id_path: &'static [&'static str],
    /// The history table (one version per change of a field), if the resource keeps one.
    pub history: Option<&'static str>,
    /// Columns stored but not compared: a change of them alone is no event (a value derived
    /// from others, such as `available_units`).
    pub undiffed: &'static [&'static str],
    /// Its business fields, each a column.
    pub fields: &'static [Field],
    /// How messages name one ("managed service").
    pub noun: &'static str,
}

/// A type that stands for one [`Resource`].
pub trait Described: 'static {
    const RESOURCE: &'static Resource;
}

const fn field(column: &'static str, path: &'static [&'static str], kind: Kind) -> Field {
    Field { column, path, kind }
}

/// A managed service: a service the partner administers for the customer, with its portal links.
pub const MANAGED_SERVICES: Resource = Resource {
    entity: "managed_service",
    table: "managed_services",
    key: "service_id",
    id_path: &["id"],
    history: None,
    undiffed: &[],
    fields: &[
        field("name", &["name"], Kind::Text),
        field("group_name", &["groupName"], Kind::Text),
        field(
            "admin_service_uri",
            &["links", "adminService", "uri"],
            Kind::Text,
        ),
        field(
            "service_health_uri",
            &["links", "serviceHealth", "uri"],
            Kind::Text,
        ),
        field(
            "service_ticket_uri",
            &["links", "serviceTicket", "uri"],
            Kind::Text,
        ),
    ],
    noun: "managed service",
};

/// Stands for [`MANAGED_SERVICES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedServices {}

impl Described for ManagedServices {
    const RESOURCE: &'static Resource = &MANAGED_SERVICES;
}

/// A managed service as read.
pub type ManagedService = Record<ManagedServices>;

/// A subscribed SKU: licences of one SKU in the customer's tenant, and how many are assigned.
pub const SUBSCRIBED_SKUS: Resource = Resource {
    entity: "subscribed_sku",
    table: "subscribed_skus",
    key: "sku_id",
    id_path: &["productSku", "id"],
    history: Some("subscribed_sku_history"),
    undiffed: &["available_units"],
    fields: &[
        field("sku_name", &["productSku", "name"], Kind::Text),
        field(
            "sku_part_number",
            &["productSku", "skuPartNumber"],
            Kind::Text,
        ),
        field("target_type", &["productSku", "targetType"], Kind::Text),
        field(
            "license_group_id",
            &["productSku", "licenseGroupId"],
            Kind::Text,
        ),
        field("capability_status", &["capabilityStatus"], Kind::Text),
        field("total_units", &["totalUnits"], Kind::Integer),
        field("active_units", &["activeUnits"], Kind::Integer),
        field("consumed_units", &["consumedUnits"], Kind::Integer),
        field("suspended_units", &["suspendedUnits"], Kind::Integer),
        field("warning_units", &["warningUnits"], Kind::Integer),
        field("available_units", &["availableUnits"], Kind::Integer),
        field("service_plans", &["servicePlans"], Kind::Json),
    ],
    noun: "subscribed SKU",
};

/// Stands for [`SUBSCRIBED_SKUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribedSkus {}

impl Described for SubscribedSkus {
    const RESOURCE: &'static Resource = &SUBSCRIBED_SKUS;
}

/// A subscribed SKU as read.
pub type SubscribedSku = Record<SubscribedSkus>;

/// One object of a resource: its id, its fields typed in the description's order, its whole
/// JSON.
pub struct Record<R> {
    pub id: String,
    values: Vec<Option<FieldValue>>,
    pub raw: Map<String, Value>,
    resource: PhantomData<fn() -> R>,
}

impl<R> Clone for Record<R> {
    fn clone(&self) -> Self {
        Record {
            id: self.id.clone(),
            values: self.values.clone(),
            raw: self.raw.clone(),
            resource: PhantomData,
        }
    }
}

impl<R> PartialEq for Record<R> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.values == other.values && self.raw == other.raw
    }
}

impl<R: Described> std::fmt::Debug for Record<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(R::RESOURCE.noun)
            .field("id", &self.id)
            .field("values", &self.values)
            .finish()
    }
}

/// The value at `path`, if every step is there.
fn at<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = map.get(*path.first()?)?;
    for step in &path[1..] {
        v = v.get(*step)?;
    }
    Some(v)
}

impl<R: Described> Record<R> {
    /// Reads one object by the description. An absent, null or empty field has no value; a
    /// value of the wrong type is an error naming the object, the field and the value.
    pub fn from_json(map: Map<String, Value>) -> Result<Record<R>, ParseError> {
        let r = R::RESOURCE;
        let id = match at(&map, r.id_path) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(ParseError(format!("{} without an id", r.noun))),
        };
        let values = r
            .fields
            .iter()
            .map(|f| match at(&map, f.path) {
                None => Ok(None),
                Some(v) => fields::read(f, v),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ParseError(format!("{} {id}: {e}", r.noun)))?;
        Ok(Record {
            id,
            values,
            raw: map,
            resource: PhantomData,
        })
    }

    /// A stored row: its id and its columns' values (no JSON: not needed to compare).
    pub fn stored(id: String, values: Vec<Option<FieldValue>>) -> Record<R> {
        Record {
            id,
            values,
            raw: Map::new(),
            resource: PhantomData,
        }
    }

    /// The fields, in the description's order.
    pub fn values(&self) -> &[Option<FieldValue>] {
        &self.values
    }

    /// A text field by its column.
    pub fn text(&self, column: &str) -> Option<&str> {
        R::RESOURCE
            .fields
            .iter()
            .position(|f| f.column == column)
            .and_then(|i| match self.values.get(i) {
                Some(Some(FieldValue::Text(s))) => Some(s.as_str()),
                _ => None,
            })
    }
}

impl<R: Described> Entity for Record<R> {
    const KIND: &'static str = R::RESOURCE.entity;
    const FIELDS: &'static [Field] = R::RESOURCE.fields;

    fn id(&self) -> &str {
        &self.id
    }

    fn values(&self) -> Vec<Option<String>> {
        self.values
            .iter()
            .map(|v| v.as_ref().map(FieldValue::to_text))
            .collect()
    }

    fn raw_json(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// Compares typed values; only those that differ are rendered as text.
    fn changed_fields(&self, new: &Self) -> Vec<FieldChange> {
        let text = |v: &Option<FieldValue>| v.as_ref().map(FieldValue::to_text);
        self.values
            .iter()
            .zip(&new.values)
            .zip(R::RESOURCE.fields)
            .filter(|((o, n), f)| o != n && !R::RESOURCE.undiffed.contains(&f.column))
            .map(|((old, new), field)| FieldChange {
                field: field.column,
                old: text(old),
                new: text(new),
            })
            .collect()
    }
}

/// A record for the batch document: `customer_id`, `id`, a value per column, `raw`.
pub struct RecordDoc<'a, R> {
    pub customer_id: uuid::Uuid,
    pub record: &'a Record<R>,
}

impl<R: Described> Serialize for RecordDoc<'_, R> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = R::RESOURCE.fields;
        let mut map = serializer.serialize_map(Some(fields.len() + 3))?;
        map.serialize_entry("customer_id", &self.customer_id)?;
        map.serialize_entry("id", &self.record.id)?;
        for (f, v) in fields.iter().zip(&self.record.values) {
            map.serialize_entry(f.column, v)?;
        }
        map.serialize_entry("raw", &self.record.raw)?;
        map.end()
    }
}

impl Resource {
    /// `col, col, ...`, each prefixed with `alias.` when one is given.
    pub fn columns(&self, alias: Option<&str>) -> String {
        self.fields
            .iter()
            .map(|f| match alias {
                Some(a) => format!("{a}.{}", f.column),
                None => f.column.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `col type, ...` for `jsonb_to_recordset`'s record definition.
    pub fn record_definition(&self) -> String {
        self.fields
            .iter()
            .map(|f| format!("{} {}", f.column, f.kind.sql_type()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The stored rows of the customers `$1`, compared by PostgreSQL with the fetched JSON
    /// `$2` (`[{customer_id, id, raw}]`): `removed`, `raw_same`, and `old_raw` when it differs.
    pub fn stored_rows_sql(&self) -> String {
        format!(
            "SELECT t.customer_id, t.{key} AS id, {cols}, t.removed_at IS NOT NULL AS removed,
                    coalesce(t.raw = f.raw, false) AS raw_same,
                    CASE WHEN f.raw IS NOT NULL AND t.raw <> f.raw THEN t.raw END AS old_raw
             FROM pcsync.{table} t
             LEFT JOIN jsonb_to_recordset($2::jsonb) AS f(customer_id uuid, id text, raw jsonb)
               ON f.customer_id = t.customer_id AND f.id = t.{key}
             WHERE t.customer_id = ANY($1)",
            key = self.key,
            cols = self.columns(Some("t")),
            table = self.table,
        )
    }

    /// The batch statement's parts for this resource: `{part}_up` upserts the document's
    /// `{part}` records (rewriting `changed_at` only on a change), `{part}_rm` marks the
    /// `{part}_removed` keys removed. `$3` is the batch's time.
    pub fn write_ctes(&self, part: &str) -> String {
        let cols = self.columns(None);
        let set = self
            .fields
            .iter()
            .map(|f| format!("{0} = EXCLUDED.{0}", f.column))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{part}_up AS (
            INSERT INTO pcsync.{table} AS t (customer_id, {key}, {cols}, raw, first_seen_at, changed_at)
            SELECT u.customer_id, u.id, {u_cols}, u.raw, $3, $3
            FROM jsonb_to_recordset($1::jsonb -> '{part}')
                AS u(customer_id uuid, id text, {record}, raw jsonb)
            ON CONFLICT (customer_id, {key}) DO UPDATE SET {set}, raw = EXCLUDED.raw,
                changed_at = CASE
                    WHEN t.removed_at IS NOT NULL OR ({old}) IS DISTINCT FROM ({new})
                    THEN $3::timestamptz ELSE t.changed_at END,
                removed_at = NULL
            RETURNING t.customer_id, t.{key} AS id, {t_cols}
        ),
        {part}_rm AS (
            UPDATE pcsync.{table} t SET removed_at = $3::timestamptz, changed_at = $3::timestamptz
            FROM jsonb_to_recordset($1::jsonb -> '{part}_removed') AS r(customer_id uuid, id text)
            WHERE t.customer_id = r.customer_id AND t.{key} = r.id AND t.removed_at IS NULL
            RETURNING 1
        )",
            table = self.table,
            key = self.key,
            u_cols = self.columns(Some("u")),
            record = self.record_definition(),
            old = self.columns(Some("t")),
            t_cols = self.columns(Some("t")),
            new = self.columns(Some("EXCLUDED")),
        ) + &self.history_ctes(part)
    }

    /// With a history table: `{part}_closed` ends the current version of the
    /// `{part}_closing` keys, `{part}_opened` opens one for the `{part}_opening` keys from the
    /// upserted rows (`$2` is the run). The no-overlap rule is checked at the end of the
    /// transaction, so one statement may close and open.
    fn history_ctes(&self, part: &str) -> String {
        let Some(history) = self.history else {
            return String::new();
        };
        format!(
            ",
        {part}_closed AS (
            UPDATE pcsync.{history} h SET valid_to = $3::timestamptz
            FROM jsonb_to_recordset($1::jsonb -> '{part}_closing') AS c(customer_id uuid, id text)
            WHERE h.customer_id = c.customer_id AND h.{key} = c.id AND h.valid_to IS NULL
            RETURNING 1
        ),
        {part}_opened AS (
            INSERT INTO pcsync.{history} (customer_id, {key}, valid_from, run_id, {cols})
            SELECT up.customer_id, up.id, $3, $2, {up_cols}
            FROM {part}_up up
            JOIN jsonb_to_recordset($1::jsonb -> '{part}_opening') AS o(customer_id uuid, id text)
              ON o.customer_id = up.customer_id AND o.id = up.id
            RETURNING 1
        )",
            key = self.key,
            cols = self.columns(None),
            up_cols = self.columns(Some("up")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_managed_service_reads_by_its_description() {
        let s = ManagedService::from_json(obj(json!({
            "id": "Exchange", "name": "Exchange", "groupName": "Office",
            "links": {"adminService": {"uri": "https://a"}, "serviceHealth": {"uri": "https://h"}},
            "somethingNew": 1
        })))
        .expect("reads");
        assert_eq!(s.id, "Exchange");
        assert_eq!(s.text("group_name"), Some("Office"));
        assert_eq!(s.text("service_ticket_uri"), None, "absent: no value");
        assert!(
            s.raw.contains_key("somethingNew"),
            "the whole object is kept"
        );
        let e = ManagedService::from_json(obj(json!({"id": "X", "name": {"a": 1}})))
            .expect_err("an object where text belongs");
        assert!(e.0.contains("managed service X"), "{}", e.0);
        assert!(ManagedService::from_json(obj(json!({"name": "n"}))).is_err());
        assert_eq!(<ManagedService as Entity>::KIND, "managed_service");
    }

    #[test]
    fn a_subscribed_sku_reads_by_its_description_and_available_units_is_no_event() {
        let sku = |consumed: i64, available: i64| {
            SubscribedSku::from_json(obj(json!({
                "availableUnits": available, "activeUnits": "5", "consumedUnits": consumed,
                "suspendedUnits": 0, "totalUnits": 5, "warningUnits": 0,
                "productSku": {"id": "efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "name": "EMS E3",
                               "skuPartNumber": "EMS", "targetType": "User", "licenseGroupId": "group1"},
                "servicePlans": [], "capabilityStatus": "Enabled"
            })))
            .expect("reads")
        };
        let (before, after) = (sku(1, 4), sku(3, 2));
        assert_eq!(before.id, "efccb6f7-5641-4e0e-bd10-b4976e1bf68e");
        assert_eq!(before.text("sku_part_number"), Some("EMS"));
        let changes = before.changed_fields(&after);
        assert_eq!(
            changes,
            vec![FieldChange {
                field: "consumed_units",
                old: Some("1".into()),
                new: Some("3".into())
            }],
            "one event: consumed; available moves with it"
        );
        assert!(SubscribedSku::from_json(obj(json!({"productSku": {}}))).is_err());
    }
}
