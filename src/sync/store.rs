//! Writing a customer's fetched objects: one transaction per customer that reads the stored
//! rows, applies the diff in batches (never one statement per row), keeps the history and the
//! change events, and updates the customer's sync status. Unchanged rows are not written.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
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

/// What storing one customer did.
#[derive(Debug, Default, Clone)]
pub struct StoreOutcome {
    pub events: Vec<ChangeEvent>,
    /// Rows of `subscriptions` and `managed_services` inserted or updated.
    pub rows_written: u64,
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
    raw: Value,
    removed: bool,
}

fn object(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

impl From<SubscriptionRow> for Stored<Subscription> {
    fn from(r: SubscriptionRow) -> Self {
        Stored {
            removed: r.removed,
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
                raw: object(r.raw),
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
    raw: Value,
    removed: bool,
}

impl From<ManagedServiceRow> for Stored<ManagedService> {
    fn from(r: ManagedServiceRow) -> Self {
        Stored {
            removed: r.removed,
            entity: ManagedService {
                id: r.service_id,
                name: r.name,
                group_name: r.group_name,
                admin_service_uri: r.admin_service_uri,
                service_health_uri: r.service_health_uri,
                service_ticket_uri: r.service_ticket_uri,
                raw: object(r.raw),
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

async fn write_subscriptions(
    tx: &mut Transaction<'_, Postgres>,
    run_id: Uuid,
    customer: Uuid,
    ops: &[Op<'_, Subscription>],
) -> Result<u64, sqlx::Error> {
    let upserts: Vec<&Subscription> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Added(s) | Op::Readded(s, _) | Op::Changed(s, _) | Op::RawChanged(s) => Some(*s),
            Op::Removed(_) => None,
        })
        .collect();
    let removed: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Removed(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // A version ends when its subscription changes or goes; one begins when it is added,
    // comes back, or changes.
    let closing: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Changed(s, _) => Some(s.id.as_str()),
            Op::Removed(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let opening: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Added(s) | Op::Readded(s, _) | Op::Changed(s, _) => Some(s.id.as_str()),
            _ => None,
        })
        .collect();
    let mut written = 0;
    if !upserts.is_empty() {
        let col = |f: fn(&Subscription) -> Option<String>| -> Vec<Option<String>> {
            upserts.iter().map(|s| f(s)).collect()
        };
        let times = |f: fn(&Subscription) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
            upserts.iter().map(|s| f(s)).collect()
        };
        let sql = format!(
            "INSERT INTO pcsync.subscriptions AS s (customer_id, subscription_id, {SUBSCRIPTION_COLUMNS}, raw)
             SELECT $1, u.* FROM UNNEST(
                $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::text[],
                $9::bool[], $10::bool[], $11::text[], $12::text[], $13::text[], $14::text[],
                $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[],
                $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::jsonb[]) AS u
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
                    WHEN s.removed_at IS NOT NULL
                      OR ({old}) IS DISTINCT FROM ({new})
                    THEN now() ELSE s.changed_at END,
                removed_at = NULL",
            old = qualified("s"),
            new = qualified("EXCLUDED"),
        );
        let result = sqlx::query(&sql)
            .bind(customer)
            .bind(upserts.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
            .bind(col(|s| s.offer_id.clone()))
            .bind(col(|s| s.offer_name.clone()))
            .bind(col(|s| s.friendly_name.clone()))
            .bind(upserts.iter().map(|s| s.quantity).collect::<Vec<_>>())
            .bind(col(|s| s.unit_type.clone()))
            .bind(col(|s| s.status.clone()))
            .bind(
                upserts
                    .iter()
                    .map(|s| s.auto_renew_enabled)
                    .collect::<Vec<_>>(),
            )
            .bind(upserts.iter().map(|s| s.is_trial).collect::<Vec<_>>())
            .bind(col(|s| s.billing_type.clone()))
            .bind(col(|s| s.billing_cycle.clone()))
            .bind(col(|s| s.term_duration.clone()))
            .bind(col(|s| s.renewal_term_duration.clone()))
            .bind(times(|s| s.creation_date))
            .bind(times(|s| s.effective_start_date))
            .bind(times(|s| s.commitment_end_date))
            .bind(times(|s| s.cancellation_allowed_until))
            .bind(col(|s| s.partner_id.clone()))
            .bind(col(|s| s.contract_type.clone()))
            .bind(col(|s| s.order_id.clone()))
            .bind(col(|s| s.product_type.clone()))
            .bind(col(|s| s.publisher_name.clone()))
            .bind(
                upserts
                    .iter()
                    .map(|s| Value::Object(s.raw.clone()))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut **tx)
            .await?;
        written += result.rows_affected();
    }
    if !removed.is_empty() {
        let result = sqlx::query(
            "UPDATE pcsync.subscriptions SET removed_at = now(), changed_at = now()
             WHERE customer_id = $1 AND subscription_id = ANY($2) AND removed_at IS NULL",
        )
        .bind(customer)
        .bind(&removed)
        .execute(&mut **tx)
        .await?;
        written += result.rows_affected();
    }
    if !closing.is_empty() {
        sqlx::query(
            "UPDATE pcsync.subscription_history SET valid_to = now()
             WHERE customer_id = $1 AND subscription_id = ANY($2) AND valid_to IS NULL",
        )
        .bind(customer)
        .bind(&closing)
        .execute(&mut **tx)
        .await?;
    }
    if !opening.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO pcsync.subscription_history
                (customer_id, subscription_id, valid_from, run_id, {SUBSCRIPTION_COLUMNS})
             SELECT customer_id, subscription_id, now(), $3, {SUBSCRIPTION_COLUMNS}
             FROM pcsync.subscriptions WHERE customer_id = $1 AND subscription_id = ANY($2)"
        ))
        .bind(customer)
        .bind(&opening)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(written)
}

async fn write_managed_services(
    tx: &mut Transaction<'_, Postgres>,
    customer: Uuid,
    ops: &[Op<'_, ManagedService>],
) -> Result<u64, sqlx::Error> {
    let upserts: Vec<&ManagedService> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Added(s) | Op::Readded(s, _) | Op::Changed(s, _) | Op::RawChanged(s) => Some(*s),
            Op::Removed(_) => None,
        })
        .collect();
    let removed: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Removed(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let mut written = 0;
    if !upserts.is_empty() {
        let col = |f: fn(&ManagedService) -> Option<String>| -> Vec<Option<String>> {
            upserts.iter().map(|s| f(s)).collect()
        };
        let result = sqlx::query(
            "INSERT INTO pcsync.managed_services AS m (customer_id, service_id, name, group_name,
                admin_service_uri, service_health_uri, service_ticket_uri, raw)
             SELECT $1, u.* FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::jsonb[]) AS u
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
                removed_at = NULL",
        )
        .bind(customer)
        .bind(upserts.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
        .bind(col(|s| s.name.clone()))
        .bind(col(|s| s.group_name.clone()))
        .bind(col(|s| s.admin_service_uri.clone()))
        .bind(col(|s| s.service_health_uri.clone()))
        .bind(col(|s| s.service_ticket_uri.clone()))
        .bind(
            upserts
                .iter()
                .map(|s| Value::Object(s.raw.clone()))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
        written += result.rows_affected();
    }
    if !removed.is_empty() {
        let result = sqlx::query(
            "UPDATE pcsync.managed_services SET removed_at = now(), changed_at = now()
             WHERE customer_id = $1 AND service_id = ANY($2) AND removed_at IS NULL",
        )
        .bind(customer)
        .bind(&removed)
        .execute(&mut **tx)
        .await?;
        written += result.rows_affected();
    }
    Ok(written)
}

async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    run_id: Uuid,
    customer: Uuid,
    events: &[ChangeEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO pcsync.change_events (run_id, customer_id, entity, entity_id, kind, field, old_value, new_value)
         SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS u",
    )
    .bind(run_id)
    .bind(customer)
    .bind(events.iter().map(|e| e.entity).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.entity_id.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.field).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.old.as_deref()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.new.as_deref()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores one customer's complete fetch. `services` is `None` when managed services were not
/// fetched (App-only): the stored ones are then left as they are.
pub async fn store_customer(
    pool: &PgPool,
    run_id: Uuid,
    customer: Uuid,
    attempt_started: DateTime<Utc>,
    subscriptions: &[Subscription],
    services: Option<&[ManagedService]>,
) -> Result<StoreOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let stored_subs: Vec<Stored<Subscription>> = sqlx::query_as::<_, SubscriptionRow>(&format!(
        "SELECT subscription_id, {SUBSCRIPTION_COLUMNS}, raw, removed_at IS NOT NULL AS removed
         FROM pcsync.subscriptions WHERE customer_id = $1 FOR UPDATE"
    ))
    .bind(customer)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(Stored::from)
    .collect();
    let sub_ops = diff(subscriptions, &stored_subs);
    let mut outcome = StoreOutcome {
        events: events_of(&sub_ops),
        rows_written: 0,
    };
    outcome.rows_written += write_subscriptions(&mut tx, run_id, customer, &sub_ops).await?;
    if let Some(services) = services {
        let stored_services: Vec<Stored<ManagedService>> = sqlx::query_as::<_, ManagedServiceRow>(
            "SELECT service_id, name, group_name, admin_service_uri, service_health_uri,
                        service_ticket_uri, raw, removed_at IS NOT NULL AS removed
                 FROM pcsync.managed_services WHERE customer_id = $1 FOR UPDATE",
        )
        .bind(customer)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(Stored::from)
        .collect();
        let ms_ops = diff(services, &stored_services);
        outcome.events.extend(events_of(&ms_ops));
        outcome.rows_written += write_managed_services(&mut tx, customer, &ms_ops).await?;
    }
    insert_events(&mut tx, run_id, customer, &outcome.events).await?;
    sqlx::query(
        "UPDATE pcsync.customers SET last_attempt_at = $2, last_success_at = now(),
            last_status = 'succeeded', last_error = NULL
         WHERE customer_id = $1",
    )
    .bind(customer)
    .bind(attempt_started)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome)
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
