//! Which customers a pass fetches, and why.
//!
//! A full pass fetches every listed customer. An incremental pass fetches a customer for the
//! first of these reasons that holds (each customer once, counted under that reason in
//! `sync_runs`):
//! 1. **named**: an activity record that no earlier good pass acted on names it;
//! 2. **due**: one of its subscriptions came due on a date: Partner Center changes it then
//!    without an activity record (see [`due_customers`]);
//! 3. **new**: it was never synced;
//! 4. **retried**: its last attempt failed (access not lost).
//!
//! When the customer list is incomplete, the customers it left out are taken from the stored
//! list for these reasons (also in a full pass): nobody the log names or whose date is due is
//! skipped because one page of the list failed.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::PassKind;
use super::customers::ListedCustomer;

/// Why an incremental pass fetches a customer, in the order reasons are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    Named,
    Due,
    New,
    Retried,
}

/// Customers fetched per reason (incremental passes, and customers a full pass took from the
/// stored list because the list left them out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchCounts {
    pub named: u64,
    pub due: u64,
    pub new: u64,
    pub retried: u64,
}

impl FetchCounts {
    fn count(&mut self, reason: FetchReason) {
        match reason {
            FetchReason::Named => self.named += 1,
            FetchReason::Due => self.due += 1,
            FetchReason::New => self.new += 1,
            FetchReason::Retried => self.retried += 1,
        }
    }
}

/// A customer to fetch, and why (`None`: a full pass fetches every listed customer).
#[derive(Debug, Clone)]
pub struct Planned {
    pub customer: ListedCustomer,
    pub reason: Option<FetchReason>,
}

impl Planned {
    /// Whether the fetch needs the customer's managed services: a customer fetched only
    /// because a subscription's date came due needs its subscriptions alone (Partner Center
    /// changes nothing else on a date).
    pub fn needs_managed_services(&self) -> bool {
        self.reason != Some(FetchReason::Due)
    }
}

/// What the ledger says about the customers, for the selection.
#[derive(Debug, Default)]
pub struct Signals {
    /// Named by activity records no earlier good pass acted on.
    pub named: HashSet<Uuid>,
    /// With a subscription that came due (see [`due_customers`]).
    pub due: HashSet<Uuid>,
    /// Never synced.
    pub never: HashSet<Uuid>,
    /// Last attempt failed, access not lost.
    pub failing: HashSet<Uuid>,
}

impl Signals {
    fn reason(&self, id: &Uuid) -> Option<FetchReason> {
        if self.named.contains(id) {
            Some(FetchReason::Named)
        } else if self.due.contains(id) {
            Some(FetchReason::Due)
        } else if self.never.contains(id) {
            Some(FetchReason::New)
        } else if self.failing.contains(id) {
            Some(FetchReason::Retried)
        } else {
            None
        }
    }
}

/// The customers to fetch. `listed` is what the customer list named; `left_out` the stored,
/// still-listed customers an incomplete list did not name (empty for a complete list).
pub fn select(
    kind: PassKind,
    listed: Vec<ListedCustomer>,
    left_out: Vec<ListedCustomer>,
    signals: &Signals,
) -> (Vec<Planned>, FetchCounts) {
    let mut counts = FetchCounts::default();
    let mut planned = Vec::new();
    let (everyone, with_a_reason) = match kind {
        PassKind::Full => (listed, Vec::new()),
        PassKind::Incremental => (Vec::new(), listed),
    };
    planned.extend(everyone.into_iter().map(|customer| Planned {
        customer,
        reason: None,
    }));
    for customer in with_a_reason.into_iter().chain(left_out) {
        if let Some(reason) = signals.reason(&customer.id) {
            counts.count(reason);
            planned.push(Planned {
                customer,
                reason: Some(reason),
            });
        }
    }
    (planned, counts)
}

/// How long after a due moment a customer is still fetched for it: Microsoft's renewal queue
/// takes up to 24 h; bad data (a date Partner Center never moves) must not make every pass
/// fetch the same customers for ever.
pub const DUE_FOR: chrono::Duration = chrono::Duration::days(3);

/// A recheck may come this much early: a pass that started a few seconds late last time must
/// not push the next recheck a whole schedule interval on.
const RECHECK_SLACK: Duration = Duration::from_secs(60);

/// Customers with a subscription (not removed, `active` or `suspended`) that Partner Center has
/// changed by `now` without a record ([`DUE_FOR`] at most): from 00:00 UTC the day after its
/// `commitment_end_date`, `custom_term_end_date` or `billing_cycle_end_date`, and from each
/// refund window's close. Such a customer is due when no good pass has fetched it since the
/// moment, and for date ends (not refund windows) again once `recheck` passed since the last
/// fetch, until the date moves or the status changes.
pub async fn due_customers(
    conn: &mut PgConnection,
    tenant: &str,
    now: DateTime<Utc>,
    recheck: Duration,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let recheck = chrono::Duration::from_std(recheck.saturating_sub(RECHECK_SLACK))
        .unwrap_or(chrono::Duration::hours(6));
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH due AS (
            SELECT s.customer_id,
                   max(m.due_at) FILTER (WHERE m.rechecked) AS date_due,
                   max(m.due_at) FILTER (WHERE NOT m.rechecked) AS refund_due,
                   min(m.due_at) AS first_due
            FROM pcsync.subscriptions s
            JOIN pcsync.customers c ON c.tenant = s.tenant AND c.customer_id = s.customer_id
            CROSS JOIN LATERAL pcsync.subscription_due_moments(s.commitment_end_date,
                s.custom_term_end_date, s.billing_cycle_end_date,
                CASE WHEN s.refundable_quantity > 0 THEN s.refundable_quantity_details END) m
            WHERE s.tenant = $4 AND s.removed_at IS NULL AND s.untracked_at IS NULL
              AND s.status IN ('active', 'suspended')
              AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
              AND m.due_at <= $1 AND m.due_at > $1 - $3::interval
            GROUP BY s.customer_id
        )
        SELECT due.customer_id
        FROM due
        LEFT JOIN LATERAL (
            SELECT max(r.started_at) AS at
            FROM pcsync.sync_runs r
            WHERE r.tenant = $4 AND r.started_at >= due.first_due AND r.started_at <= $1
              AND ((r.confirmed_customers IS NULL AND r.kind = 'full'
                    AND r.status IN ('succeeded', 'partial')
                    AND NOT EXISTS (SELECT 1 FROM pcsync.sync_errors e
                                    WHERE e.run_id = r.run_id AND e.customer_id = due.customer_id))
                OR (r.status IN ('succeeded', 'partial', 'interrupted')
                    AND due.customer_id = ANY (r.confirmed_customers)))
        ) fetched ON true
        WHERE fetched.at IS NULL
           OR (due.date_due IS NOT NULL AND (fetched.at < due.date_due OR fetched.at <= $1 - $2::interval))
           OR (due.refund_due IS NOT NULL AND fetched.at < due.refund_due)",
    )
    .bind(now)
    .bind(recheck)
    .bind(DUE_FOR)
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Customers never synced, and those whose last attempt failed (access not lost).
pub async fn pending(
    conn: &mut PgConnection,
    tenant: &str,
) -> Result<(HashSet<Uuid>, HashSet<Uuid>), sqlx::Error> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT customer_id, last_status FROM pcsync.customers
         WHERE tenant = $1 AND left_list_at IS NULL
           AND (last_status = 'never' OR (last_status = 'failed' AND access_lost_at IS NULL))",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    let mut never = HashSet::new();
    let mut failing = HashSet::new();
    for (id, status) in rows {
        if status == "never" {
            never.insert(id);
        } else {
            failing.insert(id);
        }
    }
    Ok((never, failing))
}

/// A stored customer row: id, mpn id, company name, domain, relationship.
type StoredCustomer = (
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The stored, still-listed customers that `named` does not contain: what an incomplete list
/// left out.
pub async fn stored_left_out(
    conn: &mut PgConnection,
    tenant: &str,
    named: &[ListedCustomer],
) -> Result<Vec<ListedCustomer>, sqlx::Error> {
    let ids: Vec<Uuid> = named.iter().map(|c| c.id).collect();
    let rows: Vec<StoredCustomer> = sqlx::query_as(
        "SELECT customer_id, mpn_id, company_name, domain, relationship FROM pcsync.customers
         WHERE tenant = $2 AND left_list_at IS NULL AND NOT (customer_id = ANY ($1))",
    )
    .bind(&ids)
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, mpn_id, name, domain, relationship)| ListedCustomer {
            id,
            mpn_id,
            name,
            domain,
            relationship,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(n: u128) -> ListedCustomer {
        ListedCustomer {
            id: Uuid::from_u128(n),
            mpn_id: None,
            name: None,
            domain: None,
            relationship: None,
        }
    }

    #[test]
    fn each_customer_once_under_its_first_reason() {
        let ids = |v: &[u128]| {
            v.iter()
                .map(|n| Uuid::from_u128(*n))
                .collect::<HashSet<_>>()
        };
        let signals = Signals {
            named: ids(&[1, 2]),
            due: ids(&[2, 3, 9]),
            never: ids(&[3, 4]),
            failing: ids(&[4, 5]),
        };
        let listed: Vec<_> = (1..=6).map(customer).collect();
        let (planned, counts) = select(PassKind::Incremental, listed.clone(), vec![], &signals);
        assert_eq!(
            counts,
            FetchCounts {
                named: 2,
                due: 1,
                new: 1,
                retried: 1
            }
        );
        assert_eq!(planned.len(), 5, "customer 6 has no reason");
        assert!(
            !planned.iter().any(|p| p.customer.id == Uuid::from_u128(9)),
            "9 is not listed"
        );
        let due_only = planned
            .iter()
            .find(|p| p.customer.id == Uuid::from_u128(3))
            .expect("3");
        assert_eq!(due_only.reason, Some(FetchReason::Due));
        assert!(!due_only.needs_managed_services());

        // A full pass takes every listed customer, and from what an incomplete list left
        // out those with a reason.
        let (planned, counts) = select(
            PassKind::Full,
            listed,
            vec![customer(9), customer(10)],
            &signals,
        );
        assert_eq!(planned.len(), 7);
        assert_eq!(counts.due, 1);
        assert!(planned.iter().take(6).all(|p| p.reason.is_none()));
    }
}
