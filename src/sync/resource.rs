//! One description per resource: what pcsync keeps a row of, read from Partner Center. A
//! [`Resource`] names the change-event entity, the table and its key, and the fields (JSON
//! path, column, kind); a [`Record`] is one object read by that description. Parse, diff
//! (through [`Entity`]), the stored-row read and the batch statement's parts are generated from
//! the description, so adding a resource means its description, its migration and its tests.
//!
//! Subscriptions, managed services and subscribed SKUs are described here. What only
//! subscriptions have is said in their description too: a partner column (`?mpn_id=` speaks
//! only for that partner's rows; the others become untracked, not removed). The second look
//! before a mass removal is the store's rule for the first resource of a customer.
//!
//! An object is read straight from the answer's bytes: the top-level values a field needs are
//! parsed alone (a nested path parses its top-level parent once), and the object's text is
//! kept as it came, with no JSON tree built for the whole.

use std::collections::HashMap;
use std::marker::PhantomData;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
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
    /// The column of the partner that sold it, for a resource fetched per partner
    /// (`?mpn_id=`): a stored row of another partner is then untracked (`untracked_at`), not
    /// removed. The table has an `untracked_at` column.
    pub partner: Option<&'static str>,
}

/// A type that stands for one [`Resource`].
pub trait Described: 'static {
    const RESOURCE: &'static Resource;
}

const fn field(column: &'static str, path: &'static [&'static str], kind: Kind) -> Field {
    Field { column, path, kind }
}

/// A subscription: what the customer bought, its term, its billing and its next term.
pub const SUBSCRIPTIONS: Resource = Resource {
    entity: "subscription",
    table: "subscriptions",
    key: "subscription_id",
    id_path: &["id"],
    history: Some("subscription_history"),
    undiffed: &[],
    fields: SUBSCRIPTION_FIELDS,
    noun: "subscription",
    partner: Some("partner_id"),
};

const NEXT_TERM: &str = "scheduledNextTermInstructions";

/// Every Subscription field with a column, in column order.
pub const SUBSCRIPTION_FIELDS: &[Field] = &[
    field("offer_id", &["offerId"], Kind::Text),
    field("offer_name", &["offerName"], Kind::Text),
    field("friendly_name", &["friendlyName"], Kind::Text),
    field("quantity", &["quantity"], Kind::Integer),
    field("unit_type", &["unitType"], Kind::Text),
    field("status", &["status"], Kind::Text),
    field("auto_renew_enabled", &["autoRenewEnabled"], Kind::Boolean),
    field("is_trial", &["isTrial"], Kind::Boolean),
    field("billing_type", &["billingType"], Kind::Text),
    field("billing_cycle", &["billingCycle"], Kind::Text),
    field("term_duration", &["termDuration"], Kind::Text),
    field(
        "renewal_term_duration",
        &["renewalTermDuration"],
        Kind::Text,
    ),
    field("creation_date", &["creationDate"], Kind::Timestamp),
    field("effective_start_date", &["effectiveStartDate"], Kind::Date),
    field("commitment_end_date", &["commitmentEndDate"], Kind::Date),
    field(
        "cancellation_allowed_until",
        &["cancellationAllowedUntilDate"],
        Kind::Timestamp,
    ),
    field("partner_id", &["partnerId"], Kind::Text),
    field("contract_type", &["contractType"], Kind::Text),
    field("order_id", &["orderId"], Kind::Text),
    field("product_type", &["productType", "id"], Kind::Text),
    field("publisher_name", &["publisherName"], Kind::Text),
    field(
        "billing_cycle_end_date",
        &["billingCycleEndDate"],
        Kind::Date,
    ),
    field(
        "commitment_end_date_time",
        &["commitmentEndDateTime"],
        Kind::Timestamp,
    ),
    field(
        "refundable_quantity",
        &["refundableQuantity", "totalQuantity"],
        Kind::Integer,
    ),
    field(
        "refundable_quantity_details",
        &["refundableQuantity", "details"],
        Kind::Json,
    ),
    field("attention_needed", &["attentionNeeded"], Kind::Boolean),
    field("action_taken", &["actionTaken"], Kind::Boolean),
    field(
        "has_purchasable_addons",
        &["hasPurchasableAddons"],
        Kind::Boolean,
    ),
    field(
        "is_microsoft_product",
        &["isMicrosoftProduct"],
        Kind::Boolean,
    ),
    field("scheduled_next_term", &[NEXT_TERM], Kind::Json),
    field(
        "next_term_product_id",
        &[NEXT_TERM, "product", "productId"],
        Kind::Text,
    ),
    field(
        "next_term_sku_id",
        &[NEXT_TERM, "product", "skuId"],
        Kind::Text,
    ),
    field(
        "next_term_availability_id",
        &[NEXT_TERM, "product", "availabilityId"],
        Kind::Text,
    ),
    field(
        "next_term_billing_cycle",
        &[NEXT_TERM, "product", "billingCycle"],
        Kind::Text,
    ),
    field(
        "next_term_duration",
        &[NEXT_TERM, "product", "termDuration"],
        Kind::Text,
    ),
    field(
        "next_term_quantity",
        &[NEXT_TERM, "quantity"],
        Kind::Integer,
    ),
    field(
        "parent_subscription_id",
        &["parentSubscriptionId"],
        Kind::Text,
    ),
    field("entitlement_id", &["entitlementId"], Kind::Text),
    field("promotion_id", &["promotionId"], Kind::Text),
    field("custom_term_end_date", &["customTermEndDate"], Kind::Date),
    field("suspension_reasons", &["suspensionReasons"], Kind::TextList),
];

/// Stands for [`SUBSCRIPTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscriptions {}

impl Described for Subscriptions {
    const RESOURCE: &'static Resource = &SUBSCRIPTIONS;
}

/// A subscription as read.
pub type Subscription = Record<Subscriptions>;

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
    partner: None,
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
    partner: None,
};

/// Stands for [`SUBSCRIBED_SKUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribedSkus {}

impl Described for SubscribedSkus {
    const RESOURCE: &'static Resource = &SUBSCRIBED_SKUS;
}

/// A subscribed SKU as read.
pub type SubscribedSku = Record<SubscribedSkus>;

/// One object of a resource: its id, its fields typed in the description's order, and the
/// object's text as Partner Center sent it.
pub struct Record<R> {
    pub id: String,
    values: Vec<Option<FieldValue>>,
    pub raw: Box<RawValue>,
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
        self.id == other.id && self.values == other.values && self.raw.get() == other.raw.get()
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

/// The value at `path`: the top-level key's text parsed alone, or for deeper paths the (small)
/// value under the top-level key, parsed once per object and kept in `nested`.
fn read_at<'a>(
    top: &'a HashMap<String, &RawValue>,
    nested: &mut HashMap<&'a str, Value>,
    path: &[&str],
    kind: Kind,
) -> Result<Option<FieldValue>, fields::WrongType> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(None);
    };
    let Some((key, raw)) = top.get_key_value(*first) else {
        return Ok(None);
    };
    let parse = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null);
    let shown = || path.join(".");
    if rest.is_empty() {
        return fields::read_as(kind, &parse(raw), &shown);
    }
    let parent = nested.entry(key.as_str()).or_insert_with(|| parse(raw));
    let mut at: &Value = parent;
    for (depth, step) in rest.iter().enumerate() {
        at = match at {
            Value::Null => return Ok(None),
            Value::Object(m) => match m.get(*step) {
                Some(v) => v,
                None => return Ok(None),
            },
            other => {
                return Err(fields::WrongType {
                    path: path[..=depth].join("."),
                    shown: other.to_string(),
                    expected: "an object",
                });
            }
        };
    }
    fields::read_as(kind, at, &shown)
}

impl<R: Described> Record<R> {
    /// Reads one object from its JSON text by the description. An absent, null or empty field
    /// has no value; a value of the wrong type is an error naming the object, the field and
    /// the value, never a silent `None`.
    pub fn from_raw(raw: Box<RawValue>) -> Result<Record<R>, ParseError> {
        let r = R::RESOURCE;
        let (id, values) = {
            // Keys as owned text: a key written with an escape cannot be borrowed.
            let top: HashMap<String, &RawValue> = serde_json::from_str(raw.get())
                .map_err(|e| ParseError(format!("a {} is not a JSON object: {e}", r.noun)))?;
            let mut nested = HashMap::new();
            let id = match read_at(&top, &mut nested, r.id_path, Kind::Text) {
                Ok(Some(FieldValue::Text(s))) => s,
                _ => return Err(ParseError(format!("{} without an id", r.noun))),
            };
            let values = r
                .fields
                .iter()
                .map(|f| read_at(&top, &mut nested, f.path, f.kind))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ParseError(format!("{} {id}: {e}", r.noun)))?;
            (id, values)
        };
        Ok(Record {
            id,
            values,
            raw,
            resource: PhantomData,
        })
    }

    /// From an object already parsed (tests, the simulator's data).
    pub fn from_json(map: Map<String, Value>) -> Result<Record<R>, ParseError> {
        let raw = serde_json::value::to_raw_value(&map).map_err(|e| ParseError(e.to_string()))?;
        Record::from_raw(raw)
    }

    /// A stored row: its id and its columns' values (no JSON: not needed to compare). With no
    /// values, it stands for a row the database found unchanged.
    pub fn stored(id: String, values: Vec<Option<FieldValue>>) -> Record<R> {
        Record {
            id,
            values,
            raw: empty_object(),
            resource: PhantomData,
        }
    }

    /// The fields, in the description's order.
    pub fn values(&self) -> &[Option<FieldValue>] {
        &self.values
    }

    /// The value of the field with this column.
    pub fn get(&self, column: &str) -> Option<&FieldValue> {
        R::RESOURCE
            .fields
            .iter()
            .position(|f| f.column == column)
            .and_then(|i| self.values.get(i))
            .and_then(Option::as_ref)
    }

    /// A text field by its column.
    pub fn text(&self, column: &str) -> Option<&str> {
        match self.get(column) {
            Some(FieldValue::Text(s)) => Some(s),
            _ => None,
        }
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).unwrap_or_else(|_| unreachable!("valid JSON"))
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
        serde_json::from_str(self.raw.get()).unwrap_or(Value::Null)
    }

    fn partner(&self) -> Option<&str> {
        R::RESOURCE.partner.and_then(|column| self.text(column))
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
    /// `$2` (`[{customer_id, id, raw}]`), of the tenant `$3`: `removed`, `untracked`, `raw_same`, and `old_raw`
    /// when it differs.
    pub fn stored_rows_sql(&self) -> String {
        format!(
            "SELECT t.customer_id, t.{key} AS id, {cols}, t.removed_at IS NOT NULL AS removed,
                    {untracked} AS untracked,
                    coalesce(t.raw = f.raw, false) AS raw_same,
                    CASE WHEN f.raw IS NOT NULL AND t.raw <> f.raw THEN t.raw END AS old_raw
             FROM pcsync.{table} t
             LEFT JOIN jsonb_to_recordset($2::jsonb) AS f(customer_id uuid, id text, raw jsonb)
               ON f.customer_id = t.customer_id AND f.id = t.{key}
             WHERE t.tenant = $3 AND t.customer_id = ANY($1)",
            key = self.key,
            cols = self.columns(Some("t")),
            table = self.table,
            untracked = if self.partner.is_some() {
                "t.untracked_at IS NOT NULL"
            } else {
                "false"
            },
        )
    }

    /// The names of the batch statement's parts that count written rows.
    pub fn written_ctes(&self) -> Vec<String> {
        let t = self.table;
        let mut names = vec![format!("{t}_up"), format!("{t}_rm")];
        if self.partner.is_some() {
            names.push(format!("{t}_untr"));
        }
        names
    }

    /// The batch statement's parts for this resource, reading the document's part named after
    /// the table (`$1 -> 'subscriptions' -> 'up'`, ...), all of the tenant `$4`: `{table}_up` upserts the records
    /// (rewriting `changed_at` only on a change), `{table}_rm` marks the `removed` keys
    /// removed, `{table}_untr` (with a partner column) the `untracked` keys untracked. `$3` is
    /// the batch's time.
    pub fn write_ctes(&self) -> String {
        let cols = self.columns(None);
        let set = self
            .fields
            .iter()
            .map(|f| format!("{0} = EXCLUDED.{0}", f.column))
            .collect::<Vec<_>>()
            .join(", ");
        let tracked = self.partner.is_some();
        let (was_untracked, clear_untracked) = if tracked {
            (" OR t.untracked_at IS NOT NULL", ", untracked_at = NULL")
        } else {
            ("", "")
        };
        let mut sql = format!(
            "{t}_up AS (
            INSERT INTO pcsync.{t} AS t (tenant, customer_id, {key}, {cols}, raw, first_seen_at, changed_at)
            SELECT $4, u.customer_id, u.id, {u_cols}, u.raw, $3, $3
            FROM jsonb_to_recordset($1::jsonb -> '{t}' -> 'up')
                AS u(customer_id uuid, id text, {record}, raw jsonb)
            ON CONFLICT (tenant, customer_id, {key}) DO UPDATE SET {set}, raw = EXCLUDED.raw,
                changed_at = CASE
                    WHEN t.removed_at IS NOT NULL{was_untracked} OR ({old}) IS DISTINCT FROM ({new})
                    THEN $3::timestamptz ELSE t.changed_at END,
                removed_at = NULL{clear_untracked}
            RETURNING t.customer_id, t.{key} AS id, {t_cols}
        ),
        {t}_rm AS (
            UPDATE pcsync.{t} t SET removed_at = $3::timestamptz, changed_at = $3::timestamptz{clear_untracked}
            FROM jsonb_to_recordset($1::jsonb -> '{t}' -> 'removed') AS r(customer_id uuid, id text)
            WHERE t.tenant = $4 AND t.customer_id = r.customer_id AND t.{key} = r.id
              AND t.removed_at IS NULL
            RETURNING 1
        )",
            t = self.table,
            key = self.key,
            u_cols = self.columns(Some("u")),
            record = self.record_definition(),
            old = self.columns(Some("t")),
            t_cols = self.columns(Some("t")),
            new = self.columns(Some("EXCLUDED")),
        );
        if tracked {
            sql += &format!(
                ",
        {t}_untr AS (
            UPDATE pcsync.{t} t SET untracked_at = $3::timestamptz, changed_at = $3::timestamptz
            FROM jsonb_to_recordset($1::jsonb -> '{t}' -> 'untracked') AS r(customer_id uuid, id text)
            WHERE t.tenant = $4 AND t.customer_id = r.customer_id AND t.{key} = r.id
              AND t.removed_at IS NULL AND t.untracked_at IS NULL
            RETURNING 1
        )",
                t = self.table,
                key = self.key,
            );
        }
        sql + &self.history_ctes()
    }

    /// With a history table: `{table}_closed` ends the current version of the `closing`
    /// keys, `{table}_opened` opens one for the `opening` keys from the upserted rows (`$2` is
    /// the run). The no-overlap rule is checked at the end of the transaction, so one
    /// statement may close and open.
    fn history_ctes(&self) -> String {
        let Some(history) = self.history else {
            return String::new();
        };
        format!(
            ",
        {t}_closed AS (
            UPDATE pcsync.{history} h SET valid_to = $3::timestamptz
            FROM jsonb_to_recordset($1::jsonb -> '{t}' -> 'closing') AS c(customer_id uuid, id text)
            WHERE h.tenant = $4 AND h.customer_id = c.customer_id AND h.{key} = c.id
              AND h.valid_to IS NULL
            RETURNING 1
        ),
        {t}_opened AS (
            INSERT INTO pcsync.{history} (tenant, customer_id, {key}, valid_from, run_id, {cols})
            SELECT $4, up.customer_id, up.id, $3, $2, {up_cols}
            FROM {t}_up up
            JOIN jsonb_to_recordset($1::jsonb -> '{t}' -> 'opening') AS o(customer_id uuid, id text)
              ON o.customer_id = up.customer_id AND o.id = up.id
            RETURNING 1
        )",
            t = self.table,
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
            (
                s.get("quantity"),
                s.get("auto_renew_enabled"),
                s.get("commitment_end_date")
            ),
            (None, None, None)
        );
        assert_eq!(s.text("partner_id"), Some("4847383"));
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
        assert_eq!(s.get("quantity"), Some(&FieldValue::Integer(2)));
        assert_eq!(
            s.get("renewal_term_duration"),
            None,
            "empty string is no value"
        );
        assert_eq!(s.get("term_duration"), None);
        assert_eq!(s.text("partner_id"), Some("4847383"));
        assert_eq!(s.text("product_type"), Some("OnlineServicesNCE"));
        assert!(s.get("creation_date").is_some());
        assert!(s.raw.get().contains("someFieldFromTomorrow"), "kept in raw");
        assert!(Subscription::from_json(obj(json!({"offerId": "x"}))).is_err());
    }

    #[test]
    fn columns_are_unique_and_snake_case() {
        for resource in [&SUBSCRIPTIONS, &MANAGED_SERVICES, &SUBSCRIBED_SKUS] {
            let mut seen = std::collections::HashSet::new();
            for field in resource.fields {
                assert!(seen.insert(field.column), "{} twice", field.column);
                assert!(
                    field
                        .column
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{}",
                    field.column
                );
                assert!(!field.path.is_empty());
            }
            if let Some(p) = resource.partner {
                assert!(resource.fields.iter().any(|f| f.column == p), "{p}");
            }
        }
    }

    #[test]
    fn a_key_written_with_an_escape_is_read() {
        let raw = RawValue::from_string(r#"{"\u0069d": "s-1", "quantity": 3}"#.to_string())
            .expect("json");
        let s = Subscription::from_raw(raw).expect("reads");
        assert_eq!(
            (s.id.as_str(), s.get("quantity")),
            ("s-1", Some(&FieldValue::Integer(3)))
        );
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
            s.raw.get().contains("somethingNew"),
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
