-- Per-customer state is written only when it changes (a pass with nothing new writes no row);
-- how fresh a customer's data is comes from the run ledger. Reporting views leave out customers
-- that left the customer list or lost their relationship with the partner.

ALTER TABLE pcsync.customers ADD COLUMN failing_since timestamptz;
ALTER TABLE pcsync.customers ADD COLUMN access_lost_at timestamptz;
COMMENT ON COLUMN pcsync.customers.failing_since IS
    'When the customer''s current run of failures began (the first failed attempt after its last success); null unless last_status is failed.';
COMMENT ON COLUMN pcsync.customers.access_lost_at IS
    'When Partner Center began answering 403 with code 20002 (no relationship: the customer removed the partner or its delegated admin rights); null while pcsync has access. Such customers are left out of the reporting views.';
COMMENT ON COLUMN pcsync.customers.last_attempt_at IS
    'When the customer''s last_status last changed (written only on a change, so a pass with nothing new writes no row). For freshness use customer_health.last_confirmed_at.';
COMMENT ON COLUMN pcsync.customers.last_success_at IS
    'When the customer last turned to last_status = succeeded (its first sync, or its recovery after failures); written only on that change. For freshness use customer_health.last_confirmed_at.';

UPDATE pcsync.customers c SET failing_since = c.last_attempt_at WHERE c.last_status = 'failed';
UPDATE pcsync.customers c SET access_lost_at = e.occurred_at
FROM (
    SELECT DISTINCT ON (customer_id) customer_id, error_code, occurred_at
    FROM pcsync.sync_errors WHERE customer_id IS NOT NULL
    ORDER BY customer_id, occurred_at DESC
) e
WHERE e.customer_id = c.customer_id AND c.last_status = 'failed' AND e.error_code = '20002';

-- Lookups people do.
CREATE INDEX subscriptions_subscription_id_idx ON pcsync.subscriptions (subscription_id);
CREATE INDEX subscriptions_partner_id_idx ON pcsync.subscriptions (partner_id);
CREATE INDEX change_events_entity_idx ON pcsync.change_events (customer_id, entity, entity_id, detected_at);
CREATE INDEX subscription_history_valid_from_idx
    ON pcsync.subscription_history (customer_id, subscription_id, valid_from);
CREATE INDEX sync_runs_confirming_idx ON pcsync.sync_runs (finished_at)
    WHERE status IN ('succeeded', 'partial');
CREATE INDEX sync_errors_run_customer_idx ON pcsync.sync_errors (run_id, customer_id);

CREATE VIEW pcsync.customer_health AS
SELECT
    c.customer_id,
    c.company_name,
    c.domain,
    c.mpn_id,
    c.source,
    c.left_list_at IS NULL AS listed,
    c.left_list_at,
    c.last_status AS status,
    confirmed.finished_at AS last_confirmed_at,
    c.failing_since,
    c.last_error,
    last_failure.error_code AS last_error_code,
    last_failure.occurred_at AS last_error_at,
    c.access_lost_at IS NOT NULL AS access_lost,
    c.access_lost_at
FROM pcsync.customers c
LEFT JOIN LATERAL (
    SELECT r.finished_at
    FROM pcsync.sync_runs r
    WHERE r.status IN ('succeeded', 'partial')
      AND r.finished_at >= c.first_seen_at
      AND (c.left_list_at IS NULL OR r.finished_at <= c.left_list_at)
      AND NOT EXISTS (
          SELECT 1 FROM pcsync.sync_errors e
          WHERE e.run_id = r.run_id AND e.customer_id = c.customer_id)
    ORDER BY r.finished_at DESC
    LIMIT 1
) confirmed ON true
LEFT JOIN LATERAL (
    SELECT e.error_code, e.occurred_at
    FROM pcsync.sync_errors e
    WHERE e.customer_id = c.customer_id
    ORDER BY e.occurred_at DESC
    LIMIT 1
) last_failure ON c.last_status = 'failed';
COMMENT ON VIEW pcsync.customer_health IS
    'One row per customer: is it still listed, when was its data last confirmed by a pass, is it failing and since when, with what error, and did the partner lose access (403 20002). The place to find customers that need attention.';
COMMENT ON COLUMN pcsync.customer_health.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.customer_health.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.customer_health.domain IS 'The customer''s primary domain, when known.';
COMMENT ON COLUMN pcsync.customer_health.mpn_id IS 'The Partner ID whose subscriptions are fetched; null for all partners.';
COMMENT ON COLUMN pcsync.customer_health.source IS 'Where the customer came from: file or api.';
COMMENT ON COLUMN pcsync.customer_health.listed IS 'True while the customer is in the customer list.';
COMMENT ON COLUMN pcsync.customer_health.left_list_at IS 'When the customer left the customer list; null while listed.';
COMMENT ON COLUMN pcsync.customer_health.status IS 'never (not synced yet), succeeded or failed: the outcome of its last attempt.';
COMMENT ON COLUMN pcsync.customer_health.last_confirmed_at IS
    'When the last pass that synced this customer without error finished (from sync_runs and sync_errors): its data is as fresh as this. Null if no pass has yet.';
COMMENT ON COLUMN pcsync.customer_health.failing_since IS 'When its current run of failures began; null unless failing.';
COMMENT ON COLUMN pcsync.customer_health.last_error IS 'Why its last attempt failed; null unless failing.';
COMMENT ON COLUMN pcsync.customer_health.last_error_code IS 'Partner Center''s error code of the last failure (20002: no relationship), when failing.';
COMMENT ON COLUMN pcsync.customer_health.last_error_at IS 'When the last failure happened, when failing.';
COMMENT ON COLUMN pcsync.customer_health.access_lost IS 'True when Partner Center answers 403 20002: the customer removed the partner or its delegated admin rights.';
COMMENT ON COLUMN pcsync.customer_health.access_lost_at IS 'Since when access is lost; null while pcsync has access.';

-- Current views: only customers still listed and still reachable, and data_as_of from the ledger.
CREATE OR REPLACE VIEW pcsync.current_subscriptions AS
SELECT
    s.customer_id,
    c.company_name,
    c.domain,
    s.subscription_id,
    s.offer_id,
    s.offer_name,
    s.friendly_name,
    s.quantity,
    s.unit_type,
    s.status,
    s.auto_renew_enabled,
    s.is_trial,
    s.billing_type,
    s.billing_cycle,
    s.term_duration,
    s.renewal_term_duration,
    s.creation_date,
    s.effective_start_date,
    s.commitment_end_date,
    s.cancellation_allowed_until,
    s.partner_id,
    s.product_type,
    s.publisher_name,
    s.first_seen_at,
    s.changed_at,
    h.last_confirmed_at AS data_as_of
FROM pcsync.subscriptions s
JOIN pcsync.customer_health h USING (customer_id)
JOIN pcsync.customers c USING (customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL;
COMMENT ON VIEW pcsync.current_subscriptions IS
    'Subscriptions Partner Center returned at the last complete sync of their customer, with the customer''s name. Leaves out removed and untracked subscriptions, and customers that left the customer list or lost their relationship with the partner (see customer_health). The starting point for most reports.';
COMMENT ON COLUMN pcsync.current_subscriptions.data_as_of IS
    'When the customer''s data was last confirmed by a pass (customer_health.last_confirmed_at): the row is as fresh as this.';

CREATE OR REPLACE VIEW pcsync.license_totals AS
SELECT
    s.customer_id,
    c.company_name,
    s.offer_id,
    s.offer_name,
    s.status,
    count(*)::integer AS subscriptions,
    coalesce(sum(s.quantity), 0)::bigint AS licenses
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
  AND s.status IS DISTINCT FROM 'deleted'
GROUP BY s.customer_id, c.company_name, s.offer_id, s.offer_name, s.status;
COMMENT ON VIEW pcsync.license_totals IS
    'Present, tracked, not deleted subscriptions and licenses per customer, offer and status: what a customer has, in one row per product. Leaves out customers that left the customer list or lost their relationship with the partner.';
