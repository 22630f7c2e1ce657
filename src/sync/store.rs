//! Writing a customer's fetched objects: read the stored rows, compare, and apply the
//! difference atomically in one statement (never one statement per row) that also keeps the
//! history, the change events and the customer's sync status. Unchanged rows are not written.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use uuid::Uuid;

use super::customers::ListedCustomer;
use super::diff::{Entity, Op, Scope, Stored, diff};
use crate::partner_center::{Complete, ManagedService, Subscription};

/// One change, as written to `change_events` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub entity: &'static str,
    pub entity_id: String,
    pub kind: &'static str,
    pub field: Option<&'static str>,
    pub old: Option<String>,
    pub new: Option<String>,
}

fn events_of<E: Entity>(ops: &[Op<'_, E>]) -> Vec<ChangeEvent> {
    let mut events = Vec::new();
    for op in ops {
        let event = |id: &str, kind: &'static str| ChangeEvent {
            entity: E::KIND,
            entity_id: id.to_string(),
            kind,
            field: None,
            old: None,
            new: None,
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
            Op::RawChanged(_) => {}
        }
    }
    events
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    subscription_id: String,
    offer_id: Option<String>,
    offer_name: Option<String>,
    friendly_name: Option<String>,
    quantity: Option<i64>,
    unit_type: Option<String>,
    status: Option<String>,
    auto_renew_enabled: Option<bool>,
    is_trial: Option<bool>,
    billing_type: Option<String>,
    billing_cycle: Option<String>,
    term_duration: Option<String>,
    renewal_term_duration: Option<String>,
    creation_date: Option<DateTime<Utc>>,
    effective_start_date: Option<DateTime<Utc>>,
    commitment_end_date: Option<DateTime<Utc>>,
    cancellation_allowed_until: Option<DateTime<Utc>>,
    partner_id: Option<String>,
    contract_type: Option<String>,
    order_id: Option<String>,
    product_type: Option<String>,
    publisher_name: Option<String>,
    removed: bool,
    untracked: bool,
    raw_same: bool,
}

impl From<SubscriptionRow> for Stored<Subscription> {
    fn from(r: SubscriptionRow) -> Self {
        Stored {
            removed: r.removed,
            untracked: r.untracked,
            raw_same: Some(r.raw_same),
            entity: Subscription {
                id: r.subscription_id,
                offer_id: r.offer_id,
                offer_name: r.offer_name,
                friendly_name: r.friendly_name,
                quantity: r.quantity,
                unit_type: r.unit_type,
                status: r.status,
                auto_renew_enabled: r.auto_renew_enabled,
                is_trial: r.is_trial,
                billing_type: r.billing_type,
                billing_cycle: r.billing_cycle,
                term_duration: r.term_duration,
                renewal_term_duration: r.renewal_term_duration,
                creation_date: r.creation_date,
                effective_start_date: r.effective_start_date,
                commitment_end_date: r.commitment_end_date,
                cancellation_allowed_until: r.cancellation_allowed_until,
                partner_id: r.partner_id,
                contract_type: r.contract_type,
                order_id: r.order_id,
                product_type: r.product_type,
                publisher_name: r.publisher_name,
                raw: serde_json::Map::new(),
            },
        }
    }
}

#[derive(sqlx::FromRow)]
struct ManagedServiceRow {
    service_id: String,
    name: Option<String>,
    group_name: Option<String>,
    admin_service_uri: Option<String>,
    service_health_uri: Option<String>,
    service_ticket_uri: Option<String>,
    removed: bool,
    raw_same: bool,
}

impl From<ManagedServiceRow> for Stored<ManagedService> {
    fn from(r: ManagedServiceRow) -> Self {
        Stored {
            removed: r.removed,
            untracked: false,
            raw_same: Some(r.raw_same),
            entity: ManagedService {
                id: r.service_id,
                name: r.name,
                group_name: r.group_name,
                admin_service_uri: r.admin_service_uri,
                service_health_uri: r.service_health_uri,
                service_ticket_uri: r.service_ticket_uri,
                raw: serde_json::Map::new(),
            },
        }
    }
}

const SUBSCRIPTION_COLUMNS: &str = "offer_id, offer_name, friendly_name, quantity, unit_type, status, \
    auto_renew_enabled, is_trial, billing_type, billing_cycle, term_duration, renewal_term_duration, \
    creation_date, effective_start_date, commitment_end_date, cancellation_allowed_until, partner_id, \
    contract_type, order_id, product_type, publisher_name";

/// The business columns, each prefixed with `table.`.
fn qualified(table: &str) -> String {
    SUBSCRIPTION_COLUMNS
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every write of a batch of customers as a single statement: data-modifying CTEs run as one
/// atomic unit, so each customer of the batch is written whole or not at all. The history's
/// no-overlap constraint is checked at the end (migration 4), so closing a version and opening
/// the next may share the statement.
fn write_statement() -> String {
    let cols = SUBSCRIPTION_COLUMNS;
    let old = qualified("s");
    let new = qualified("EXCLUDED");
    let u_cols = qualified("u");
    format!(
        "WITH up AS (
            INSERT INTO pcsync.subscriptions AS s (customer_id, subscription_id, {cols}, raw)
            SELECT u.customer_id, u.subscription_id, {u_cols}, u.raw::jsonb FROM UNNEST(
                $1::uuid[], $2::text[],
                $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::text[],
                $9::bool[], $10::bool[], $11::text[], $12::text[], $13::text[], $14::text[],
                $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[],
                $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[])
                AS u(customer_id, subscription_id, {cols}, raw)
            ON CONFLICT (customer_id, subscription_id) DO UPDATE SET
                offer_id = EXCLUDED.offer_id, offer_name = EXCLUDED.offer_name,
                friendly_name = EXCLUDED.friendly_name, quantity = EXCLUDED.quantity,
                unit_type = EXCLUDED.unit_type, status = EXCLUDED.status,
                auto_renew_enabled = EXCLUDED.auto_renew_enabled, is_trial = EXCLUDED.is_trial,
                billing_type = EXCLUDED.billing_type, billing_cycle = EXCLUDED.billing_cycle,
                term_duration = EXCLUDED.term_duration,
                renewal_term_duration = EXCLUDED.renewal_term_duration,
                creation_date = EXCLUDED.creation_date,
                effective_start_date = EXCLUDED.effective_start_date,
                commitment_end_date = EXCLUDED.commitment_end_date,
                cancellation_allowed_until = EXCLUDED.cancellation_allowed_until,
                partner_id = EXCLUDED.partner_id, contract_type = EXCLUDED.contract_type,
                order_id = EXCLUDED.order_id, product_type = EXCLUDED.product_type,
                publisher_name = EXCLUDED.publisher_name, raw = EXCLUDED.raw,
                changed_at = CASE
                    WHEN s.removed_at IS NOT NULL OR s.untracked_at IS NOT NULL
                      OR ({old}) IS DISTINCT FROM ({new})
                    THEN now() ELSE s.changed_at END,
                removed_at = NULL,
                untracked_at = NULL
            RETURNING customer_id, subscription_id, {cols}
        ),
        rm AS (
            UPDATE pcsync.subscriptions s SET removed_at = now(), untracked_at = NULL,
                changed_at = now()
            FROM UNNEST($25::uuid[], $26::text[]) AS r(customer_id, id)
            WHERE s.customer_id = r.customer_id AND s.subscription_id = r.id AND s.removed_at IS NULL
            RETURNING 1
        ),
        untr AS (
            UPDATE pcsync.subscriptions s SET untracked_at = now(), changed_at = now()
            FROM UNNEST($51::uuid[], $52::text[]) AS r(customer_id, id)
            WHERE s.customer_id = r.customer_id AND s.subscription_id = r.id
              AND s.removed_at IS NULL AND s.untracked_at IS NULL
            RETURNING 1
        ),
        closed AS (
            UPDATE pcsync.subscription_history h SET valid_to = now()
            FROM UNNEST($27::uuid[], $28::text[]) AS c(customer_id, id)
            WHERE h.customer_id = c.customer_id AND h.subscription_id = c.id AND h.valid_to IS NULL
            RETURNING 1
        ),
        opened AS (
            INSERT INTO pcsync.subscription_history
                (customer_id, subscription_id, valid_from, run_id, {cols})
            SELECT up.customer_id, up.subscription_id, now(), $45, {up_cols}
            FROM up JOIN UNNEST($29::uuid[], $30::text[]) AS o(customer_id, id)
              ON o.customer_id = up.customer_id AND o.id = up.subscription_id
            RETURNING 1
        ),
        ms_up AS (
            INSERT INTO pcsync.managed_services AS m (customer_id, service_id, name, group_name,
                admin_service_uri, service_health_uri, service_ticket_uri, raw)
            SELECT u.customer_id, u.id, u.name, u.grp, u.admin, u.health, u.ticket, u.raw::jsonb
            FROM UNNEST($31::uuid[], $32::text[], $33::text[], $34::text[], $35::text[],
                $36::text[], $37::text[], $38::text[])
                AS u(customer_id, id, name, grp, admin, health, ticket, raw)
            ON CONFLICT (customer_id, service_id) DO UPDATE SET
                name = EXCLUDED.name, group_name = EXCLUDED.group_name,
                admin_service_uri = EXCLUDED.admin_service_uri,
                service_health_uri = EXCLUDED.service_health_uri,
                service_ticket_uri = EXCLUDED.service_ticket_uri, raw = EXCLUDED.raw,
                changed_at = CASE
                    WHEN m.removed_at IS NOT NULL
                      OR (m.name, m.group_name, m.admin_service_uri, m.service_health_uri, m.service_ticket_uri)
                         IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.group_name, EXCLUDED.admin_service_uri,
                         EXCLUDED.service_health_uri, EXCLUDED.service_ticket_uri)
                    THEN now() ELSE m.changed_at END,
                removed_at = NULL
            RETURNING 1
        ),
        ms_rm AS (
            UPDATE pcsync.managed_services m SET removed_at = now(), changed_at = now()
            FROM UNNEST($39::uuid[], $40::text[]) AS r(customer_id, id)
            WHERE m.customer_id = r.customer_id AND m.service_id = r.id AND m.removed_at IS NULL
            RETURNING 1
        ),
        ev AS (
            INSERT INTO pcsync.change_events
                (run_id, customer_id, entity, entity_id, kind, field, old_value, new_value)
            SELECT $45, e.* FROM UNNEST($41::uuid[], $42::text[], $43::text[], $44::text[],
                $46::text[], $47::text[], $48::text[]) AS e
            RETURNING 1
        ),
        cu AS (
            -- Only a change of state is written: a customer that was fine stays untouched.
            UPDATE pcsync.customers c SET last_attempt_at = a.attempt, last_success_at = now(),
                last_status = 'succeeded', last_error = NULL, failing_since = NULL,
                access_lost_at = NULL
            FROM UNNEST($49::uuid[], $50::timestamptz[]) AS a(customer_id, attempt)
            WHERE c.customer_id = a.customer_id AND c.last_status <> 'succeeded'
            RETURNING 1
        )
        SELECT ((SELECT count(*) FROM up) + (SELECT count(*) FROM rm) + (SELECT count(*) FROM untr)
              + (SELECT count(*) FROM ms_up) + (SELECT count(*) FROM ms_rm))::bigint",
        up_cols = qualified("up"),
    )
}

fn raw_text(raw: &serde_json::Map<String, Value>) -> String {
    serde_json::to_string(raw).unwrap_or_else(|_| "{}".to_string())
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
}

/// What storing one customer did.
#[derive(Debug, Default, Clone)]
pub struct StoreOutcome {
    pub customer: Uuid,
    pub events: Vec<ChangeEvent>,
    /// Rows of `subscriptions` and `managed_services` inserted or updated for this customer.
    pub rows_written: u64,
}

/// Stored rows of many customers, by customer.
type StoredBy<E> = HashMap<Uuid, Vec<Stored<E>>>;

/// A stored row with the customer it belongs to.
#[derive(sqlx::FromRow)]
struct OfCustomer<T> {
    customer_id: Uuid,
    #[sqlx(flatten)]
    row: T,
}

/// The batch's arrays for the write statement, customer by customer.
#[derive(Default)]
struct Writes<'a> {
    subs: Vec<(Uuid, &'a Subscription, &'a str)>,
    sub_removed: Vec<(Uuid, String)>,
    sub_untracked: Vec<(Uuid, String)>,
    closing: Vec<(Uuid, String)>,
    opening: Vec<(Uuid, String)>,
    services: Vec<(Uuid, &'a ManagedService, &'a str)>,
    service_removed: Vec<(Uuid, String)>,
    events: Vec<(Uuid, ChangeEvent)>,
}

/// Stores a batch of customers' complete fetches: reads what is stored for all of them (two
/// queries), compares each customer, and writes every change with every customer's sync status
/// in one atomic statement. PostgreSQL compares the raw JSON, so stored objects are never read
/// back whole. Runs without an explicit transaction: the pass's advisory lock keeps other
/// writers away, and the single write statement is atomic.
pub async fn store_batch(
    conn: &mut PgConnection,
    run_id: Uuid,
    batch: &[CustomerSnapshot],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    // The fetched objects as JSON text: compared with the stored ones by PostgreSQL, and
    // written as they are when they changed.
    let sub_raw: Vec<Vec<String>> = batch
        .iter()
        .map(|f| f.subscriptions.iter().map(|s| raw_text(&s.raw)).collect())
        .collect();
    let ms_raw: Vec<Vec<String>> = batch
        .iter()
        .map(|f| {
            f.services
                .iter()
                .flatten()
                .map(|s| raw_text(&s.raw))
                .collect()
        })
        .collect();
    let mut f_cust = Vec::new();
    let mut f_id = Vec::new();
    let mut f_raw = Vec::new();
    for (f, raws) in batch.iter().zip(&sub_raw) {
        for (s, raw) in f.subscriptions.iter().zip(raws) {
            f_cust.push(f.customer);
            f_id.push(s.id.as_str());
            f_raw.push(raw.as_str());
        }
    }
    let customers: Vec<Uuid> = batch.iter().map(|f| f.customer).collect();
    let mut stored_subs: StoredBy<Subscription> = HashMap::new();
    for r in sqlx::query_as::<_, OfCustomer<SubscriptionRow>>(&format!(
        "SELECT s.customer_id, s.subscription_id, {cols}, s.removed_at IS NOT NULL AS removed,
                s.untracked_at IS NOT NULL AS untracked,
                coalesce(s.raw = f.raw::jsonb, false) AS raw_same
         FROM pcsync.subscriptions s
         LEFT JOIN UNNEST($2::uuid[], $3::text[], $4::text[]) AS f(customer_id, id, raw)
           ON f.customer_id = s.customer_id AND f.id = s.subscription_id
         WHERE s.customer_id = ANY($1)",
        cols = qualified("s")
    ))
    .bind(&customers)
    .bind(&f_cust)
    .bind(&f_id)
    .bind(&f_raw)
    .fetch_all(&mut *conn)
    .await?
    {
        stored_subs
            .entry(r.customer_id)
            .or_default()
            .push(Stored::from(r.row));
    }
    let with_services: Vec<Uuid> = batch
        .iter()
        .filter(|f| f.services.is_some())
        .map(|f| f.customer)
        .collect();
    let mut stored_services: StoredBy<ManagedService> = HashMap::new();
    if !with_services.is_empty() {
        let (mut m_cust, mut m_id, mut m_raw) = (Vec::new(), Vec::new(), Vec::new());
        for (f, raws) in batch.iter().zip(&ms_raw) {
            for (s, raw) in f.services.iter().flatten().zip(raws) {
                m_cust.push(f.customer);
                m_id.push(s.id.as_str());
                m_raw.push(raw.as_str());
            }
        }
        for r in sqlx::query_as::<_, OfCustomer<ManagedServiceRow>>(
            "SELECT m.customer_id, m.service_id, m.name, m.group_name, m.admin_service_uri,
                    m.service_health_uri, m.service_ticket_uri, m.removed_at IS NOT NULL AS removed,
                    coalesce(m.raw = f.raw::jsonb, false) AS raw_same
             FROM pcsync.managed_services m
             LEFT JOIN UNNEST($2::uuid[], $3::text[], $4::text[]) AS f(customer_id, id, raw)
               ON f.customer_id = m.customer_id AND f.id = m.service_id
             WHERE m.customer_id = ANY($1)",
        )
        .bind(&with_services)
        .bind(&m_cust)
        .bind(&m_id)
        .bind(&m_raw)
        .fetch_all(&mut *conn)
        .await?
        {
            stored_services
                .entry(r.customer_id)
                .or_default()
                .push(Stored::from(r.row));
        }
    }

    let mut writes = Writes::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, f) in batch.iter().enumerate() {
        let no_subs = Vec::new();
        let no_services = Vec::new();
        let stored = stored_subs.get(&f.customer).unwrap_or(&no_subs);
        let sub_ops = diff(&f.subscriptions, &f.scope, stored);
        let ms_ops = match &f.services {
            Some(fetched) => diff(
                fetched,
                &Scope::AllPartners,
                stored_services.get(&f.customer).unwrap_or(&no_services),
            ),
            None => Vec::new(),
        };
        let raw_of = |id: &str| {
            f.subscriptions
                .iter()
                .position(|s| s.id == id)
                .map(|p| sub_raw[i][p].as_str())
                .unwrap_or("{}")
        };
        let mut rows = 0;
        for op in &sub_ops {
            match op {
                Op::Added(s) | Op::Readded(s, _) | Op::Tracked(s, _) => {
                    writes.subs.push((f.customer, s, raw_of(&s.id)));
                    writes.opening.push((f.customer, s.id.clone()));
                    rows += 1;
                }
                Op::Changed(s, _) => {
                    writes.subs.push((f.customer, s, raw_of(&s.id)));
                    writes.closing.push((f.customer, s.id.clone()));
                    writes.opening.push((f.customer, s.id.clone()));
                    rows += 1;
                }
                Op::RawChanged(s) => {
                    writes.subs.push((f.customer, s, raw_of(&s.id)));
                    rows += 1;
                }
                Op::Removed(id) => {
                    writes.sub_removed.push((f.customer, id.clone()));
                    writes.closing.push((f.customer, id.clone()));
                    rows += 1;
                }
                Op::Untracked(id) => {
                    writes.sub_untracked.push((f.customer, id.clone()));
                    writes.closing.push((f.customer, id.clone()));
                    rows += 1;
                }
            }
        }
        let services = f.services.as_deref().unwrap_or_default();
        for op in &ms_ops {
            match op {
                Op::Added(m)
                | Op::Readded(m, _)
                | Op::Tracked(m, _)
                | Op::Changed(m, _)
                | Op::RawChanged(m) => {
                    let raw = services
                        .iter()
                        .position(|x| x.id == m.id)
                        .map(|p| ms_raw[i][p].as_str())
                        .unwrap_or("{}");
                    writes.services.push((f.customer, m, raw));
                    rows += 1;
                }
                Op::Removed(id) | Op::Untracked(id) => {
                    writes.service_removed.push((f.customer, id.clone()));
                    rows += 1;
                }
            }
        }
        let mut events = events_of(&sub_ops);
        events.extend(events_of(&ms_ops));
        writes
            .events
            .extend(events.iter().map(|e| (f.customer, e.clone())));
        outcomes.push(StoreOutcome {
            customer: f.customer,
            events,
            rows_written: rows,
        });
    }
    execute_writes(conn, run_id, batch, &writes).await?;
    Ok(outcomes)
}

async fn execute_writes(
    conn: &mut PgConnection,
    run_id: Uuid,
    batch: &[CustomerSnapshot],
    w: &Writes<'_>,
) -> Result<(), sqlx::Error> {
    let subs = &w.subs;
    let text = |f: fn(&Subscription) -> Option<String>| -> Vec<Option<String>> {
        subs.iter().map(|(_, s, _)| f(s)).collect()
    };
    let times = |f: fn(&Subscription) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
        subs.iter().map(|(_, s, _)| f(s)).collect()
    };
    let ms = &w.services;
    let ms_text = |f: fn(&ManagedService) -> Option<String>| -> Vec<Option<String>> {
        ms.iter().map(|(_, s, _)| f(s)).collect()
    };
    fn pairs(v: &[(Uuid, String)]) -> (Vec<Uuid>, Vec<&str>) {
        (
            v.iter().map(|p| p.0).collect(),
            v.iter().map(|p| p.1.as_str()).collect(),
        )
    }
    let (rm_c, rm_s) = pairs(&w.sub_removed);
    let (cl_c, cl_s) = pairs(&w.closing);
    let (op_c, op_s) = pairs(&w.opening);
    let (msr_c, msr_s) = pairs(&w.service_removed);
    let (un_c, un_s) = pairs(&w.sub_untracked);
    let ev = &w.events;
    sqlx::query_scalar::<_, i64>(&write_statement())
        .bind(subs.iter().map(|(c, _, _)| *c).collect::<Vec<_>>())
        .bind(
            subs.iter()
                .map(|(_, s, _)| s.id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(text(|s| s.offer_id.clone()))
        .bind(text(|s| s.offer_name.clone()))
        .bind(text(|s| s.friendly_name.clone()))
        .bind(subs.iter().map(|(_, s, _)| s.quantity).collect::<Vec<_>>())
        .bind(text(|s| s.unit_type.clone()))
        .bind(text(|s| s.status.clone()))
        .bind(
            subs.iter()
                .map(|(_, s, _)| s.auto_renew_enabled)
                .collect::<Vec<_>>(),
        )
        .bind(subs.iter().map(|(_, s, _)| s.is_trial).collect::<Vec<_>>())
        .bind(text(|s| s.billing_type.clone()))
        .bind(text(|s| s.billing_cycle.clone()))
        .bind(text(|s| s.term_duration.clone()))
        .bind(text(|s| s.renewal_term_duration.clone()))
        .bind(times(|s| s.creation_date))
        .bind(times(|s| s.effective_start_date))
        .bind(times(|s| s.commitment_end_date))
        .bind(times(|s| s.cancellation_allowed_until))
        .bind(text(|s| s.partner_id.clone()))
        .bind(text(|s| s.contract_type.clone()))
        .bind(text(|s| s.order_id.clone()))
        .bind(text(|s| s.product_type.clone()))
        .bind(text(|s| s.publisher_name.clone()))
        .bind(subs.iter().map(|(_, _, raw)| *raw).collect::<Vec<_>>())
        .bind(rm_c)
        .bind(rm_s)
        .bind(cl_c)
        .bind(cl_s)
        .bind(op_c)
        .bind(op_s)
        .bind(ms.iter().map(|(c, _, _)| *c).collect::<Vec<_>>())
        .bind(ms.iter().map(|(_, s, _)| s.id.as_str()).collect::<Vec<_>>())
        .bind(ms_text(|s| s.name.clone()))
        .bind(ms_text(|s| s.group_name.clone()))
        .bind(ms_text(|s| s.admin_service_uri.clone()))
        .bind(ms_text(|s| s.service_health_uri.clone()))
        .bind(ms_text(|s| s.service_ticket_uri.clone()))
        .bind(ms.iter().map(|(_, _, raw)| *raw).collect::<Vec<_>>())
        .bind(msr_c)
        .bind(msr_s)
        .bind(ev.iter().map(|(c, _)| *c).collect::<Vec<_>>())
        .bind(ev.iter().map(|(_, e)| e.entity).collect::<Vec<_>>())
        .bind(
            ev.iter()
                .map(|(_, e)| e.entity_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(ev.iter().map(|(_, e)| e.kind).collect::<Vec<_>>())
        .bind(run_id)
        .bind(ev.iter().map(|(_, e)| e.field).collect::<Vec<_>>())
        .bind(ev.iter().map(|(_, e)| e.old.as_deref()).collect::<Vec<_>>())
        .bind(ev.iter().map(|(_, e)| e.new.as_deref()).collect::<Vec<_>>())
        .bind(batch.iter().map(|f| f.customer).collect::<Vec<_>>())
        .bind(batch.iter().map(|f| f.attempt_started).collect::<Vec<_>>())
        .bind(un_c)
        .bind(un_s)
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// A customer that could not be synced: its data stays as it was; its status and the error
/// are recorded.
#[allow(clippy::too_many_arguments)]
pub async fn record_customer_failure(
    conn: &mut PgConnection,
    run_id: Uuid,
    customer: Uuid,
    attempt_started: DateTime<Utc>,
    operation: &str,
    http_status: Option<u16>,
    error_code: Option<&str>,
    request_id: Option<&str>,
    message: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    // 403 with code 20002: the customer removed the partner (or its admin rights).
    let access_lost = http_status == Some(403) && error_code == Some("20002");
    sqlx::query(
        "UPDATE pcsync.customers SET last_attempt_at = $2, last_status = 'failed', last_error = $3,
            failing_since = CASE WHEN last_status = 'failed' THEN failing_since ELSE $2 END,
            access_lost_at = CASE WHEN $4 THEN coalesce(access_lost_at, $2) END
         WHERE customer_id = $1",
    )
    .bind(customer)
    .bind(attempt_started)
    .bind(message)
    .bind(access_lost)
    .execute(&mut *tx)
    .await?;
    record_error(
        &mut tx,
        run_id,
        Some(customer),
        operation,
        http_status,
        error_code,
        request_id,
        message,
    )
    .await?;
    tx.commit().await
}

/// A row of `sync_errors`.
#[allow(clippy::too_many_arguments)]
pub async fn record_error(
    conn: &mut sqlx::PgConnection,
    run_id: Uuid,
    customer: Option<Uuid>,
    operation: &str,
    http_status: Option<u16>,
    error_code: Option<&str>,
    request_id: Option<&str>,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pcsync.sync_errors (run_id, customer_id, operation, http_status, error_code, request_id, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(run_id)
    .bind(customer)
    .bind(operation)
    .bind(http_status.map(i32::from))
    .bind(error_code)
    .bind(request_id)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// Upserts the listed customers (rewriting a row only when something in it changed) and marks
/// those no longer listed. Never deletes.
pub async fn upsert_customers(
    conn: &mut PgConnection,
    source: &str,
    customers: &[ListedCustomer],
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO pcsync.customers AS c (customer_id, mpn_id, company_name, domain, relationship, source)
         SELECT u.*, $6 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u
         ON CONFLICT (customer_id) DO UPDATE SET
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
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE pcsync.customers c SET left_list_at = now()
         WHERE c.left_list_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM UNNEST($1::uuid[]) AS l(id) WHERE l.id = c.customer_id)",
    )
    .bind(customers.iter().map(|c| c.id).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The customer's tracked, present subscriptions as (id, partner): what one answer could
/// remove, for the second-look check before a mass removal.
pub async fn tracked_subscriptions(
    pool: &sqlx::PgPool,
    customer: Uuid,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT subscription_id, partner_id FROM pcsync.subscriptions
         WHERE customer_id = $1 AND removed_at IS NULL AND untracked_at IS NULL",
    )
    .bind(customer)
    .fetch_all(pool)
    .await
}
