//! Writing a customer's fetched objects: read the stored rows, compare, and apply the
//! difference atomically in one statement (never one statement per row) that also keeps the
//! history, the change events and the customer's sync status. Unchanged rows are not written.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::customers::ListedCustomer;
use super::diff::{Entity, Op, Stored, diff};
use crate::partner_center::{ManagedService, Subscription};

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
    raw_same: bool,
}

impl From<SubscriptionRow> for Stored<Subscription> {
    fn from(r: SubscriptionRow) -> Self {
        Stored {
            removed: r.removed,
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

fn upserts<'a, E>(ops: &[Op<'a, E>]) -> Vec<&'a E> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Added(e) | Op::Readded(e, _) | Op::Changed(e, _) | Op::RawChanged(e) => Some(*e),
            Op::Removed(_) => None,
        })
        .collect()
}

fn removals<'o, E>(ops: &'o [Op<'_, E>]) -> Vec<&'o str> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Removed(id) => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

/// Every write of one customer as a single statement: data-modifying CTEs run as one atomic
/// unit without a BEGIN/COMMIT round trip each. The history's no-overlap constraint is checked
/// at the end (migration 4), so closing a version and opening the next may share the statement.
fn write_statement() -> String {
    let cols = SUBSCRIPTION_COLUMNS;
    let old = qualified("s");
    let new = qualified("EXCLUDED");
    let u_cols = qualified("u");
    format!(
        "WITH up AS (
            INSERT INTO pcsync.subscriptions AS s (customer_id, subscription_id, {cols}, raw)
            SELECT $1, u.subscription_id, {u_cols}, u.raw::jsonb FROM UNNEST(
                $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::text[], $10::text[],
                $11::bool[], $12::bool[], $13::text[], $14::text[], $15::text[], $16::text[],
                $17::timestamptz[], $18::timestamptz[], $19::timestamptz[], $20::timestamptz[],
                $21::text[], $22::text[], $23::text[], $24::text[], $25::text[], $26::text[])
                AS u(subscription_id, {cols}, raw)
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
                    WHEN s.removed_at IS NOT NULL OR ({old}) IS DISTINCT FROM ({new})
                    THEN now() ELSE s.changed_at END,
                removed_at = NULL
            RETURNING customer_id, subscription_id, {cols}
        ),
        rm AS (
            UPDATE pcsync.subscriptions SET removed_at = now(), changed_at = now()
            WHERE customer_id = $1 AND subscription_id = ANY($27::text[]) AND removed_at IS NULL
            RETURNING 1
        ),
        closed AS (
            UPDATE pcsync.subscription_history SET valid_to = now()
            WHERE customer_id = $1 AND subscription_id = ANY($28::text[]) AND valid_to IS NULL
            RETURNING 1
        ),
        opened AS (
            INSERT INTO pcsync.subscription_history
                (customer_id, subscription_id, valid_from, run_id, {cols})
            SELECT customer_id, subscription_id, now(), $2, {cols}
            FROM up WHERE subscription_id = ANY($29::text[])
            RETURNING 1
        ),
        ms_up AS (
            INSERT INTO pcsync.managed_services AS m (customer_id, service_id, name, group_name,
                admin_service_uri, service_health_uri, service_ticket_uri, raw)
            SELECT $1, u.id, u.name, u.grp, u.admin, u.health, u.ticket, u.raw::jsonb
            FROM UNNEST($30::text[], $31::text[], $32::text[], $33::text[],
                $34::text[], $35::text[], $36::text[]) AS u(id, name, grp, admin, health, ticket, raw)
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
            UPDATE pcsync.managed_services SET removed_at = now(), changed_at = now()
            WHERE customer_id = $1 AND service_id = ANY($37::text[]) AND removed_at IS NULL
            RETURNING 1
        ),
        ev AS (
            INSERT INTO pcsync.change_events
                (run_id, customer_id, entity, entity_id, kind, field, old_value, new_value)
            SELECT $2, $1, e.* FROM UNNEST($38::text[], $39::text[], $40::text[], $41::text[],
                $42::text[], $43::text[]) AS e
            RETURNING 1
        ),
        cu AS (
            UPDATE pcsync.customers SET last_attempt_at = $3, last_success_at = now(),
                last_status = 'succeeded', last_error = NULL
            WHERE customer_id = $1
            RETURNING 1
        )
        SELECT ((SELECT count(*) FROM up) + (SELECT count(*) FROM rm)
              + (SELECT count(*) FROM ms_up) + (SELECT count(*) FROM ms_rm))::bigint"
    )
}

fn raw_text(raw: &serde_json::Map<String, Value>) -> String {
    serde_json::to_string(raw).unwrap_or_else(|_| "{}".to_string())
}

/// What storing one customer did.
#[derive(Debug, Default, Clone)]
pub struct StoreOutcome {
    pub events: Vec<ChangeEvent>,
    /// Rows of `subscriptions` and `managed_services` inserted or updated.
    pub rows_written: u64,
    /// Nothing changed, so nothing was written, not even the customer's sync status: the
    /// caller records it with [`mark_succeeded`], many customers in one statement.
    pub status_pending: bool,
}

/// Stores one customer's complete fetch. `services` is `None` when managed services were not
/// fetched (App-only): the stored ones are then left as they are.
///
/// Reads what is stored, compares, and writes only what changed, in one statement. Runs
/// outside an explicit transaction: the pass's advisory lock keeps other writers away, and
/// the single write statement is atomic.
pub async fn store_customer(
    pool: &PgPool,
    run_id: Uuid,
    customer: Uuid,
    attempt_started: DateTime<Utc>,
    subscriptions: &[Subscription],
    services: Option<&[ManagedService]>,
) -> Result<StoreOutcome, sqlx::Error> {
    // The fetched objects as JSON text: compared with the stored ones by PostgreSQL (cheaper
    // than reading every stored object back), and written as they are when they changed.
    let sub_raw: HashMap<&str, String> = subscriptions
        .iter()
        .map(|s| (s.id.as_str(), raw_text(&s.raw)))
        .collect();
    let stored_subs: Vec<Stored<Subscription>> = sqlx::query_as::<_, SubscriptionRow>(&format!(
        "SELECT s.subscription_id, {cols}, s.removed_at IS NOT NULL AS removed,
                coalesce(s.raw = f.raw::jsonb, false) AS raw_same
         FROM pcsync.subscriptions s
         LEFT JOIN UNNEST($2::text[], $3::text[]) AS f(id, raw) ON f.id = s.subscription_id
         WHERE s.customer_id = $1",
        cols = qualified("s")
    ))
    .bind(customer)
    .bind(sub_raw.keys().copied().collect::<Vec<_>>())
    .bind(sub_raw.values().map(String::as_str).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(Stored::from)
    .collect();
    let ms_raw: HashMap<&str, String> = services
        .unwrap_or_default()
        .iter()
        .map(|s| (s.id.as_str(), raw_text(&s.raw)))
        .collect();
    let stored_services: Vec<Stored<ManagedService>> = match services {
        Some(_) => sqlx::query_as::<_, ManagedServiceRow>(
            "SELECT m.service_id, m.name, m.group_name, m.admin_service_uri, m.service_health_uri,
                    m.service_ticket_uri, m.removed_at IS NOT NULL AS removed,
                    coalesce(m.raw = f.raw::jsonb, false) AS raw_same
             FROM pcsync.managed_services m
             LEFT JOIN UNNEST($2::text[], $3::text[]) AS f(id, raw) ON f.id = m.service_id
             WHERE m.customer_id = $1",
        )
        .bind(customer)
        .bind(ms_raw.keys().copied().collect::<Vec<_>>())
        .bind(ms_raw.values().map(String::as_str).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(Stored::from)
        .collect(),
        None => Vec::new(),
    };
    let sub_ops = diff(subscriptions, &stored_subs);
    let ms_ops = match services {
        Some(fetched) => diff(fetched, &stored_services),
        None => Vec::new(),
    };
    let mut events = events_of(&sub_ops);
    events.extend(events_of(&ms_ops));
    if sub_ops.is_empty() && ms_ops.is_empty() {
        return Ok(StoreOutcome {
            events,
            rows_written: 0,
            status_pending: true,
        });
    }

    let subs = upserts(&sub_ops);
    let sub_removed = removals(&sub_ops);
    // A version ends when its subscription changes or goes; one begins when it is added,
    // comes back, or changes.
    let closing: Vec<&str> = sub_ops
        .iter()
        .filter_map(|op| match op {
            Op::Changed(s, _) => Some(s.id.as_str()),
            Op::Removed(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let opening: Vec<&str> = sub_ops
        .iter()
        .filter_map(|op| match op {
            Op::Added(s) | Op::Readded(s, _) | Op::Changed(s, _) => Some(s.id.as_str()),
            _ => None,
        })
        .collect();
    let ms = upserts(&ms_ops);
    let ms_removed = removals(&ms_ops);
    let text = |f: fn(&Subscription) -> Option<String>| -> Vec<Option<String>> {
        subs.iter().map(|s| f(s)).collect()
    };
    let times = |f: fn(&Subscription) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
        subs.iter().map(|s| f(s)).collect()
    };
    let ms_text = |f: fn(&ManagedService) -> Option<String>| -> Vec<Option<String>> {
        ms.iter().map(|s| f(s)).collect()
    };
    let written: i64 = sqlx::query_scalar(&write_statement())
        .bind(customer)
        .bind(run_id)
        .bind(attempt_started)
        .bind(subs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>())
        .bind(text(|s| s.offer_id.clone()))
        .bind(text(|s| s.offer_name.clone()))
        .bind(text(|s| s.friendly_name.clone()))
        .bind(subs.iter().map(|s| s.quantity).collect::<Vec<_>>())
        .bind(text(|s| s.unit_type.clone()))
        .bind(text(|s| s.status.clone()))
        .bind(
            subs.iter()
                .map(|s| s.auto_renew_enabled)
                .collect::<Vec<_>>(),
        )
        .bind(subs.iter().map(|s| s.is_trial).collect::<Vec<_>>())
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
        .bind(
            subs.iter()
                .map(|s| sub_raw.get(s.id.as_str()).map(String::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(&sub_removed)
        .bind(&closing)
        .bind(&opening)
        .bind(ms.iter().map(|s| s.id.as_str()).collect::<Vec<_>>())
        .bind(ms_text(|s| s.name.clone()))
        .bind(ms_text(|s| s.group_name.clone()))
        .bind(ms_text(|s| s.admin_service_uri.clone()))
        .bind(ms_text(|s| s.service_health_uri.clone()))
        .bind(ms_text(|s| s.service_ticket_uri.clone()))
        .bind(
            ms.iter()
                .map(|s| ms_raw.get(s.id.as_str()).map(String::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(&ms_removed)
        .bind(events.iter().map(|e| e.entity).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.entity_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.field).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.old.as_deref()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.new.as_deref()).collect::<Vec<_>>())
        .fetch_one(pool)
        .await?;
    Ok(StoreOutcome {
        events,
        rows_written: u64::try_from(written).unwrap_or(0),
        status_pending: false,
    })
}

/// Records many customers' successful syncs in one statement (those whose data needed no
/// write). Returns how many rows it updated.
pub async fn mark_succeeded(
    pool: &PgPool,
    customers: &[(Uuid, DateTime<Utc>)],
) -> Result<u64, sqlx::Error> {
    if customers.is_empty() {
        return Ok(0);
    }
    let result = sqlx::query(
        "UPDATE pcsync.customers c SET last_attempt_at = u.attempt, last_success_at = now(),
            last_status = 'succeeded', last_error = NULL
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, attempt)
         WHERE c.customer_id = u.id",
    )
    .bind(customers.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(customers.iter().map(|c| c.1).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// A customer that could not be synced: its data stays as it was; its status and the error
/// are recorded.
#[allow(clippy::too_many_arguments)]
pub async fn record_customer_failure(
    pool: &PgPool,
    run_id: Uuid,
    customer: Uuid,
    attempt_started: DateTime<Utc>,
    operation: &str,
    http_status: Option<u16>,
    error_code: Option<&str>,
    request_id: Option<&str>,
    message: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE pcsync.customers SET last_attempt_at = $2, last_status = 'failed', last_error = $3
         WHERE customer_id = $1",
    )
    .bind(customer)
    .bind(attempt_started)
    .bind(message)
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
    pool: &PgPool,
    source: &str,
    customers: &[ListedCustomer],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
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
