//! Writing a customer's fetched objects: read the stored rows, compare, and apply the
//! difference atomically in one statement (never one statement per row) that also keeps the
//! history, the change events and the customer's sync status. Unchanged rows are not written.
//!
//! A batch goes to PostgreSQL as one JSON document with a part per resource, read by name with
//! `jsonb_to_recordset`; every resource's reads and writes are generated from its description
//! ([`super::resource`]): no value is matched to its column by position, and subscriptions,
//! managed services and subscribed SKUs take the same path.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use uuid::Uuid;

use super::customers::ListedCustomer;
use super::diff::{Entity, JsonChange, Op, Scope, Stored, diff, json_changes, needs_second_look};
use super::resource::{
    Described, ManagedService, ManagedServices, Record, RecordDoc, Resource, SubscribedSku,
    SubscribedSkus, Subscription, Subscriptions,
};
use crate::partner_center::Complete;
use crate::partner_center::fields::{FieldValue, Kind};

/// One change, as written to `change_events` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub entity: &'static str,
    pub entity_id: String,
    pub kind: &'static str,
    pub field: Option<&'static str>,
    pub old: Option<String>,
    pub new: Option<String>,
    /// For a change only inside the raw JSON (`field = 'raw'`): the paths that changed.
    pub paths: Option<Vec<String>>,
}

/// The events of one customer's operations on one kind of object. `old_raw` gives the stored
/// JSON of a row whose raw JSON alone changed, for its `raw` event.
fn events_of<E: Entity>(ops: &[Op<'_, E>], old_raw: &HashMap<String, Value>) -> Vec<ChangeEvent> {
    let mut events = Vec::new();
    for op in ops {
        let event = |id: &str, kind: &'static str| ChangeEvent {
            entity: E::KIND,
            entity_id: id.to_string(),
            kind,
            field: None,
            old: None,
            new: None,
            paths: None,
        };
        match op {
            Op::Added(e) | Op::Readded(e, _) => events.push(event(e.id(), "added")),
            Op::Changed(e, changes) => {
                for c in changes {
                    events.push(ChangeEvent {
                        field: Some(c.field),
                        old: c.old.clone(),
                        new: c.new.clone(),
                        ..event(e.id(), "changed")
                    });
                }
            }
            Op::Removed(id) => events.push(event(id, "removed")),
            Op::Untracked(id) => events.push(event(id, "untracked")),
            Op::Tracked(e, _) => events.push(event(e.id(), "tracked")),
            Op::RawChanged(e) => {
                let Some(old) = old_raw.get(e.id()) else {
                    continue;
                };
                let changes = json_changes(old, &e.raw_json());
                if changes.is_empty() {
                    continue;
                }
                // {path: value} on each side; an absent key shows as null.
                let side = |pick: fn(&JsonChange) -> &Option<Value>| {
                    let map: serde_json::Map<String, Value> = changes
                        .iter()
                        .map(|c| (c.path.clone(), pick(c).clone().unwrap_or(Value::Null)))
                        .collect();
                    Value::Object(map).to_string()
                };
                events.push(ChangeEvent {
                    field: Some("raw"),
                    old: Some(side(|c| &c.old)),
                    new: Some(side(|c| &c.new)),
                    paths: Some(changes.iter().map(|c| c.path.clone()).collect()),
                    ..event(e.id(), "changed")
                });
            }
        }
    }
    events
}

/// A stored column, read as its field's kind.
fn decode(row: &PgRow, column: &str, kind: Kind) -> Result<Option<FieldValue>, sqlx::Error> {
    Ok(match kind {
        Kind::Text => row
            .try_get::<Option<String>, _>(column)?
            .map(FieldValue::Text),
        Kind::Integer => row
            .try_get::<Option<i64>, _>(column)?
            .map(FieldValue::Integer),
        Kind::Boolean => row
            .try_get::<Option<bool>, _>(column)?
            .map(FieldValue::Boolean),
        Kind::Date => row
            .try_get::<Option<chrono::NaiveDate>, _>(column)?
            .map(FieldValue::Date),
        Kind::Timestamp => row
            .try_get::<Option<DateTime<Utc>>, _>(column)?
            .map(FieldValue::Timestamp),
        Kind::Json => row
            .try_get::<Option<Value>, _>(column)?
            .map(FieldValue::Json),
        Kind::TextList => row
            .try_get::<Option<Vec<String>>, _>(column)?
            .map(FieldValue::TextList),
    })
}

/// A stored row, its customer, and its JSON when it differs from the fetched one.
struct StoredRow<E> {
    customer: Uuid,
    stored: Stored<E>,
    old_raw: Option<Value>,
}

fn stored_record<R: Described>(row: &PgRow) -> Result<StoredRow<Record<R>>, sqlx::Error> {
    let removed: bool = row.try_get("removed")?;
    let untracked: bool = row.try_get("untracked")?;
    let raw_same: bool = row.try_get("raw_same")?;
    // A present row whose JSON is what was fetched gives no operation: its columns are not
    // needed (most rows of most passes).
    let values = if raw_same && !removed && !untracked {
        Vec::new()
    } else {
        R::RESOURCE
            .fields
            .iter()
            .map(|f| decode(row, f.column, f.kind))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(StoredRow {
        customer: row.try_get("customer_id")?,
        old_raw: row.try_get("old_raw")?,
        stored: Stored {
            removed,
            untracked,
            raw_same: Some(raw_same),
            entity: Record::stored(row.try_get("id")?, values),
        },
    })
}

/// The stored rows of a described resource for the customers of `batch` whose fetch holds it
/// (`pick`), by customer; PostgreSQL compares the raw JSON, so unchanged rows are not read
/// back whole.
async fn read_stored<R: Described>(
    conn: &mut PgConnection,
    tenant: &str,
    batch: &[CustomerSnapshot],
    pick: impl Fn(&CustomerSnapshot) -> Option<&Complete<Record<R>>>,
) -> Result<HashMap<Uuid, Vec<StoredRow<Record<R>>>>, sqlx::Error> {
    let with: Vec<Uuid> = batch
        .iter()
        .filter(|f| pick(f).is_some())
        .map(|f| f.customer)
        .collect();
    let mut stored: HashMap<Uuid, Vec<StoredRow<Record<R>>>> = HashMap::new();
    if with.is_empty() {
        return Ok(stored);
    }
    let fetched: Vec<FetchedRecord<'_>> = batch
        .iter()
        .flat_map(|f| {
            pick(f).into_iter().flatten().map(|r| FetchedRecord {
                customer_id: f.customer,
                id: &r.id,
                raw: &r.raw,
            })
        })
        .collect();
    let rows = sqlx::query(&R::RESOURCE.stored_rows_sql())
        .bind(&with)
        .bind(sqlx::types::Json(&fetched))
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await?;
    for row in &rows {
        let r = stored_record::<R>(row)?;
        stored.entry(r.customer).or_default().push(r);
    }
    Ok(stored)
}

/// A described resource's part of the batch document: rows to upsert, keys removed or
/// untracked, and (with a history) versions to close and open.
#[derive(Serialize)]
#[serde(bound = "R: Described")]
struct Part<'a, R> {
    up: Vec<RecordDoc<'a, R>>,
    removed: Vec<Key>,
    untracked: Vec<Key>,
    closing: Vec<Key>,
    opening: Vec<Key>,
}

impl<R> Default for Part<'_, R> {
    fn default() -> Self {
        Part {
            up: Vec::new(),
            removed: Vec::new(),
            untracked: Vec::new(),
            closing: Vec::new(),
            opening: Vec::new(),
        }
    }
}

impl<'a, R: Described> Part<'a, R> {
    /// Adds one customer's operations; returns the rows they write.
    fn add(&mut self, customer: Uuid, ops: &[Op<'a, Record<R>>]) -> u64 {
        let key = |id: &str| Key {
            customer_id: customer,
            id: id.to_string(),
        };
        let history = R::RESOURCE.history.is_some();
        for op in ops {
            match op {
                Op::Added(r) | Op::Readded(r, _) | Op::Tracked(r, _) => {
                    self.up.push(RecordDoc {
                        customer_id: customer,
                        record: r,
                    });
                    if history {
                        self.opening.push(key(&r.id));
                    }
                }
                Op::Changed(r, _) => {
                    self.up.push(RecordDoc {
                        customer_id: customer,
                        record: r,
                    });
                    if history {
                        self.closing.push(key(&r.id));
                        self.opening.push(key(&r.id));
                    }
                }
                Op::RawChanged(r) => self.up.push(RecordDoc {
                    customer_id: customer,
                    record: r,
                }),
                Op::Removed(id) => {
                    self.removed.push(key(id));
                    if history {
                        self.closing.push(key(id));
                    }
                }
                Op::Untracked(id) => {
                    self.untracked.push(key(id));
                    if history {
                        self.closing.push(key(id));
                    }
                }
            }
        }
        ops.len() as u64
    }
}

/// Every write of a batch of customers as a single statement over one JSON document ($1; the
/// run id is $2): data-modifying CTEs run as one atomic unit, so each customer of the batch is
/// written whole or not at all. The history's no-overlap constraint is checked at the end
/// (migration 4), so closing a version and opening the next may share the statement.
fn write_statement() -> String {
    let resources: [&Resource; 3] = [
        Subscriptions::RESOURCE,
        ManagedServices::RESOURCE,
        SubscribedSkus::RESOURCE,
    ];
    let parts = resources
        .iter()
        .map(|r| r.write_ctes())
        .collect::<Vec<_>>()
        .join(",\n        ");
    let written = resources
        .iter()
        .flat_map(|r| r.written_ctes())
        .map(|cte| format!("(SELECT count(*) FROM {cte})"))
        .collect::<Vec<_>>()
        .join(" + ");
    format!(
        "WITH {parts},
        ev AS (
            INSERT INTO pcsync.change_events
                (tenant, run_id, customer_id, entity, entity_id, kind, field, old_value, new_value,
                 json_paths, detected_at)
            SELECT $4, $2, e.customer_id, e.entity, e.entity_id, e.kind, e.field, e.old, e.new, e.paths, $3
            FROM jsonb_to_recordset($1::jsonb -> 'events')
                AS e(customer_id uuid, entity text, entity_id text, kind text, field text,
                     old text, new text, paths text[])
            RETURNING 1
        ),
        cu AS (
            -- Only a change of state is written: a customer that was fine stays untouched.
            UPDATE pcsync.customers c SET last_attempt_at = a.attempt, last_success_at = $3::timestamptz,
                last_status = 'succeeded', last_error = NULL, failing_since = NULL,
                access_lost_at = NULL
            FROM jsonb_to_recordset($1::jsonb -> 'customers') AS a(customer_id uuid, attempt timestamptz)
            WHERE c.tenant = $4 AND c.customer_id = a.customer_id AND c.last_status <> 'succeeded'
            RETURNING 1
        )
        SELECT ({written})::bigint"
    )
}

/// One customer's complete fetch, ready to store. Its lists are [`Complete`]: only the
/// pager's check can make one, so nothing of unknown completeness reaches the diff.
#[derive(Debug, Clone)]
pub struct CustomerSnapshot {
    pub customer: Uuid,
    pub attempt_started: DateTime<Utc>,
    /// Which stored subscriptions the fetch speaks for (its `?mpn_id=` filter).
    pub scope: Scope,
    pub subscriptions: Complete<Subscription>,
    /// `None` when managed services were not fetched (App-only): the stored ones are then
    /// left as they are.
    pub services: Option<Complete<ManagedService>>,
    /// `None` when subscribed SKUs were not fetched (App-only, `sync.license_usage = false`, a
    /// customer fetched only for a due date): the stored ones are then left as they are.
    pub skus: Option<Complete<SubscribedSku>>,
    /// For a second look before a mass removal: the subscriptions the first answer would
    /// have removed. This answer is stored only if it removes exactly these.
    pub first_look: Option<BTreeSet<String>>,
}

/// What became of one customer of a batch.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Written (or nothing to write).
    Stored(StoreOutcome),
    /// This answer would remove more than half of the customer's tracked subscriptions (and
    /// at least 2): nothing was written; ask again and store only if the answers agree.
    SecondLookNeeded {
        customer: Uuid,
        removals: BTreeSet<String>,
    },
    /// The second answer disagreed with the first: nothing was written.
    NotConfirmed { customer: Uuid, message: String },
}

/// What storing one customer did.
#[derive(Debug, Default, Clone)]
pub struct StoreOutcome {
    pub customer: Uuid,
    pub events: Vec<ChangeEvent>,
    /// Rows of `subscriptions` and `managed_services` inserted or updated for this customer.
    pub rows_written: u64,
}

/// A row named by customer and id.
#[derive(Serialize)]
struct Key {
    customer_id: Uuid,
    id: String,
}

#[derive(Serialize)]
struct EventRecord<'a> {
    customer_id: Uuid,
    entity: &'a str,
    entity_id: &'a str,
    kind: &'a str,
    field: Option<&'a str>,
    old: Option<&'a str>,
    new: Option<&'a str>,
    paths: Option<&'a [String]>,
}

#[derive(Serialize)]
struct Attempt {
    customer_id: Uuid,
    attempt: DateTime<Utc>,
}

/// Everything one batch writes: a part per resource, named after its table, then the events
/// and the customers' attempts; sent as one JSON document.
#[derive(Serialize, Default)]
struct BatchDocument<'a> {
    subscriptions: Part<'a, Subscriptions>,
    managed_services: Part<'a, ManagedServices>,
    subscribed_skus: Part<'a, SubscribedSkus>,
    events: Vec<EventRecord<'a>>,
    customers: Vec<Attempt>,
}

/// The fetched objects of a batch, for the reads that compare them with the stored ones.
#[derive(Serialize)]
struct FetchedRecord<'a> {
    customer_id: Uuid,
    id: &'a str,
    raw: &'a RawValue,
}

/// The stored rows for the diff, and the stored JSON of those whose JSON changed, by id.
fn split<E: Entity>(rows: Vec<StoredRow<E>>) -> (Vec<Stored<E>>, HashMap<String, Value>) {
    let mut old_raw = HashMap::new();
    let stored = rows
        .into_iter()
        .map(|r| {
            if let Some(raw) = r.old_raw {
                old_raw.insert(r.stored.entity.id().to_string(), raw);
            }
            r.stored
        })
        .collect();
    (stored, old_raw)
}

/// Stores a batch of customers' complete fetches: reads what is stored for all of them (two
/// queries), compares each customer, and writes every change with every customer's sync status
/// in one atomic statement. PostgreSQL compares the raw JSON, so stored objects are read back
/// only when they changed. Runs on the pass's lock connection: its single write statement is
/// atomic, and the lock keeps other writers away.
pub async fn store_batch(
    conn: &mut PgConnection,
    tenant: &str,
    run_id: Uuid,
    now: DateTime<Utc>,
    batch: &[CustomerSnapshot],
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut stored_subs =
        read_stored::<Subscriptions>(conn, tenant, batch, |f| Some(&f.subscriptions)).await?;
    let mut stored_services =
        read_stored::<ManagedServices>(conn, tenant, batch, |f| f.services.as_ref()).await?;
    let mut stored_skus =
        read_stored::<SubscribedSkus>(conn, tenant, batch, |f| f.skus.as_ref()).await?;

    let mut doc = BatchDocument::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut verdicts = Vec::new();
    for f in batch {
        let subs = split(stored_subs.remove(&f.customer).unwrap_or_default());
        let services = split(stored_services.remove(&f.customer).unwrap_or_default());
        let skus = split(stored_skus.remove(&f.customer).unwrap_or_default());
        let sub_ops = diff(&f.subscriptions, &f.scope, &subs.0);
        let removals: BTreeSet<String> = sub_ops
            .iter()
            .filter_map(|op| match op {
                Op::Removed(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let tracked = subs.0.iter().filter(|s| !s.removed && !s.untracked).count();
        match &f.first_look {
            None if needs_second_look(removals.len(), tracked) => {
                verdicts.push(Outcome::SecondLookNeeded {
                    customer: f.customer,
                    removals,
                });
                continue;
            }
            Some(first) if *first != removals => {
                verdicts.push(Outcome::NotConfirmed {
                    customer: f.customer,
                    message: format!(
                        "a second look disagreed with the first answer: the first would have removed {} of {tracked} tracked subscriptions, the second {}; nothing was changed, the next pass will look again",
                        first.len(),
                        removals.len()
                    ),
                });
                continue;
            }
            _ => {}
        }
        let ms_ops = match &f.services {
            Some(fetched) => diff(fetched, &Scope::AllPartners, &services.0),
            None => Vec::new(),
        };
        let sku_ops = match &f.skus {
            Some(fetched) => diff(fetched, &Scope::AllPartners, &skus.0),
            None => Vec::new(),
        };
        let rows = doc.subscriptions.add(f.customer, &sub_ops)
            + doc.managed_services.add(f.customer, &ms_ops)
            + doc.subscribed_skus.add(f.customer, &sku_ops);
        let mut events = events_of(&sub_ops, &subs.1);
        events.extend(events_of(&ms_ops, &services.1));
        events.extend(events_of(&sku_ops, &skus.1));
        outcomes.push(StoreOutcome {
            customer: f.customer,
            events,
            rows_written: rows,
        });
        doc.customers.push(Attempt {
            customer_id: f.customer,
            attempt: f.attempt_started,
        });
    }
    for o in &outcomes {
        for e in &o.events {
            doc.events.push(EventRecord {
                customer_id: o.customer,
                entity: e.entity,
                entity_id: &e.entity_id,
                kind: e.kind,
                field: e.field,
                old: e.old.as_deref(),
                new: e.new.as_deref(),
                paths: e.paths.as_deref(),
            });
        }
    }
    sqlx::query_scalar::<_, i64>(&write_statement())
        .bind(sqlx::types::Json(&doc))
        .bind(run_id)
        .bind(now)
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await?;
    verdicts.extend(outcomes.into_iter().map(Outcome::Stored));
    Ok(verdicts)
}

/// A row of `sync_errors`: what failed, where, and what Partner Center said.
#[derive(Debug, Clone, Copy)]
pub struct ErrorRow<'a> {
    pub run_id: Uuid,
    pub customer: Option<Uuid>,
    /// `get_subscriptions`, `store`, `read_customer_list`, ...
    pub operation: &'a str,
    pub http_status: Option<u16>,
    pub error_code: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub message: &'a str,
    /// When it happened, on the pass's clock.
    pub at: DateTime<Utc>,
}

impl<'a> ErrorRow<'a> {
    /// An error without an HTTP answer.
    pub fn plain(
        run_id: Uuid,
        customer: Option<Uuid>,
        operation: &'a str,
        message: &'a str,
        at: DateTime<Utc>,
    ) -> ErrorRow<'a> {
        ErrorRow {
            run_id,
            customer,
            operation,
            http_status: None,
            error_code: None,
            request_id: None,
            message,
            at,
        }
    }
}

/// A customer that could not be synced: its data stays as it was; its status and the error
/// are recorded. The attempt's start is `attempt_started`; `row.customer` must be set.
pub async fn record_customer_failure(
    conn: &mut PgConnection,
    attempt_started: DateTime<Utc>,
    row: ErrorRow<'_>,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    // 403 with code 20002: the customer removed the partner (or its admin rights).
    let access_lost = row.http_status == Some(403) && row.error_code == Some("20002");
    sqlx::query(
        "UPDATE pcsync.customers SET last_attempt_at = $2, last_status = 'failed', last_error = $3,
            failing_since = CASE WHEN last_status = 'failed' THEN failing_since ELSE $2 END,
            access_lost_at = CASE WHEN $4 THEN coalesce(access_lost_at, $2) END
         WHERE tenant = (SELECT tenant FROM pcsync.sync_runs WHERE run_id = $5) AND customer_id = $1",
    )
    .bind(row.customer)
    .bind(attempt_started)
    .bind(row.message)
    .bind(access_lost)
    .bind(row.run_id)
    .execute(&mut *tx)
    .await?;
    record_error(&mut tx, row).await?;
    tx.commit().await
}

/// Writes a row of `sync_errors`.
pub async fn record_error(conn: &mut PgConnection, row: ErrorRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pcsync.sync_errors (tenant, run_id, customer_id, operation, http_status, error_code, request_id, message, occurred_at)
         SELECT r.tenant, $1, $2, $3, $4, $5, $6, $7, $8 FROM pcsync.sync_runs r WHERE r.run_id = $1",
    )
    .bind(row.run_id)
    .bind(row.customer)
    .bind(row.operation)
    .bind(row.http_status.map(i32::from))
    .bind(row.error_code)
    .bind(row.request_id)
    .bind(row.message)
    .bind(row.at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Upserts the listed customers, rewriting a row only when something in it changed; a
/// customer listed again is no longer marked as having left. Never deletes, never marks a
/// departure: only [`mark_departures`], given a complete list, does that.
pub async fn upsert_customers(
    conn: &mut PgConnection,
    tenant: &str,
    source: &str,
    customers: &[ListedCustomer],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pcsync.customers AS c (tenant, customer_id, mpn_id, company_name, domain, relationship, source, first_seen_at)
         SELECT $8, u.*, $6, $7 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u
         ON CONFLICT (tenant, customer_id) DO UPDATE SET
            mpn_id = EXCLUDED.mpn_id,
            company_name = COALESCE(EXCLUDED.company_name, c.company_name),
            domain = COALESCE(EXCLUDED.domain, c.domain),
            relationship = COALESCE(EXCLUDED.relationship, c.relationship),
            source = EXCLUDED.source,
            left_list_at = NULL
         WHERE (c.mpn_id, c.company_name, c.domain, c.relationship, c.source, c.left_list_at)
            IS DISTINCT FROM (EXCLUDED.mpn_id, COALESCE(EXCLUDED.company_name, c.company_name),
               COALESCE(EXCLUDED.domain, c.domain), COALESCE(EXCLUDED.relationship, c.relationship),
               EXCLUDED.source, NULL::timestamptz)",
    )
    .bind(customers.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(customers.iter().map(|c| c.mpn_id.clone()).collect::<Vec<_>>())
    .bind(customers.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
    .bind(customers.iter().map(|c| c.domain.clone()).collect::<Vec<_>>())
    .bind(customers.iter().map(|c| c.relationship.clone()).collect::<Vec<_>>())
    .bind(source)
    .bind(now)
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks every stored customer that a complete list leaves out as having left it (at `now`).
/// Only a [`Complete`] list can say who left: an answer of unknown completeness never does.
pub async fn mark_departures(
    conn: &mut PgConnection,
    tenant: &str,
    list: &Complete<Uuid>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        // EXCEPT (a hashed or sorted set difference) whatever the statistics say: an anti join
        // the planner takes for a nested loop (a table not analyzed since an upgrade) compares
        // every customer with every listed one, 100 million times for 10,000.
        "UPDATE pcsync.customers c SET left_list_at = $2
         FROM (SELECT customer_id FROM pcsync.customers WHERE tenant = $3 AND left_list_at IS NULL
               EXCEPT SELECT unnest($1::uuid[])) AS gone
         WHERE c.tenant = $3 AND c.customer_id = gone.customer_id",
    )
    .bind(list.iter().copied().collect::<Vec<_>>())
    .bind(now)
    .bind(tenant)
    .execute(conn)
    .await?
    .rows_affected())
}
