-- Several partner tenants, second step (issue 20): every view carries the tenant and joins on
-- (tenant, customer_id), so a customer of two partner tenants is two rows, never merged.
--
-- Views are replaced in place with `tenant` as their last column (a view keeps its columns,
-- comments and grants; nothing built on it breaks). license_counts_at returns the tenant too:
-- its result type changes, so it and the three views over it are dropped and created again,
-- with their comments kept.
--
-- Tenant-wide licence usage (a customer's subscribed SKUs are its own tenant's, the same
-- whichever partner tenant reads them) is counted once across partner tenants:
-- license_usage.usage_counted, and renewal_decisions.unassigned_counted across tenants.

-- The comments of what is dropped, to put back.
CREATE TEMP TABLE kept_comments ON COMMIT DROP AS
SELECT n.nspname AS schema, c.relname AS view, a.attname AS col, d.description
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_description d ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
WHERE (n.nspname, c.relname) IN (('pcsync', 'license_counts_monthly'),
    ('pcsync_bi', 'license_counts_month_end'), ('pcsync_bi', 'license_counts_quarter_end'));
CREATE TEMP TABLE kept_function_comment ON COMMIT DROP AS
SELECT obj_description('pcsync.license_counts_at(timestamptz)'::regprocedure, 'pg_proc') AS description;

DROP FUNCTION pcsync.license_counts_at(timestamptz) CASCADE;


CREATE FUNCTION pcsync.license_counts_at(at timestamptz)
RETURNS TABLE (
    customer_id uuid,
    company_name text,
    offer_id text,
    offer_name text,
    product_id text,
    status text,
    subscriptions integer,
    licenses bigint,
    tenant text
)
LANGUAGE sql STABLE
AS $$
    SELECT h.customer_id, c.company_name, h.offer_id, h.offer_name, h.product_id, h.status,
           count(*)::integer, coalesce(sum(h.quantity), 0)::bigint, h.tenant
    FROM pcsync.subscription_history h
    JOIN pcsync.customers c ON c.tenant = h.tenant AND c.customer_id = h.customer_id
    WHERE h.valid_from <= at AND (h.valid_to IS NULL OR h.valid_to > at)
      AND h.status IS DISTINCT FROM 'deleted'
    GROUP BY h.tenant, h.customer_id, c.company_name, h.offer_id, h.offer_name, h.product_id, h.status
$$;

DO $$
BEGIN
    EXECUTE format('COMMENT ON FUNCTION pcsync.license_counts_at(timestamptz) IS %L',
        (SELECT description || ' One row per partner tenant (tenant) as well: a customer of two is counted under each.' FROM kept_function_comment));
END
$$;

-- Views in the order they build on each other.

CREATE OR REPLACE VIEW pcsync.customer_health AS
SELECT
    c.customer_id,
    c.company_name,
    c.domain,
    c.mpn_id,
    c.source,
    c.left_list_at IS NULL AS listed,
    c.left_list_at,
    c.last_status AS status,
    CASE WHEN c.last_status = 'never' THEN NULL
         ELSE greatest(full_pass.finished_at, incremental.finished_at) END AS last_confirmed_at,
    c.failing_since,
    c.last_error,
    last_failure.error_code AS last_error_code,
    last_failure.occurred_at AS last_error_at,
    c.access_lost_at IS NOT NULL AS access_lost,
    c.access_lost_at,
    c.tenant
FROM pcsync.customers c
LEFT JOIN LATERAL (
    SELECT r.finished_at
    FROM pcsync.sync_runs r
    WHERE r.tenant = c.tenant AND r.kind = 'full' AND r.confirmed_customers IS NULL
      AND r.status IN ('succeeded', 'partial')
      AND r.finished_at >= c.first_seen_at
      AND (c.left_list_at IS NULL OR r.started_at < c.left_list_at)
      AND NOT EXISTS (
          SELECT 1 FROM pcsync.sync_errors e
          WHERE e.run_id = r.run_id AND e.tenant = c.tenant AND e.customer_id = c.customer_id)
    ORDER BY r.started_at DESC
    LIMIT 1
) full_pass ON true
LEFT JOIN LATERAL (
    SELECT r.finished_at
    FROM pcsync.sync_runs r
    WHERE r.tenant = c.tenant AND r.confirmed_customers IS NOT NULL
      AND r.status IN ('succeeded', 'partial', 'interrupted')
      AND r.started_at >= coalesce(full_pass.finished_at, '-infinity')
      AND c.customer_id = ANY (r.confirmed_customers)
    ORDER BY r.started_at DESC
    LIMIT 1
) incremental ON true
LEFT JOIN LATERAL (
    SELECT e.error_code, e.occurred_at
    FROM pcsync.sync_errors e
    WHERE e.tenant = c.tenant AND e.customer_id = c.customer_id
    ORDER BY e.occurred_at DESC
    LIMIT 1
) last_failure ON c.last_status = 'failed';

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
    h.last_confirmed_at AS data_as_of,
    s.product_id,
    s.sku_id,
    s.availability_id,
    s.contract_type,
    s.order_id,
    s.billing_cycle_end_date,
    s.commitment_end_date_time,
    s.refundable_quantity,
    s.refundable_quantity_details,
    s.attention_needed,
    s.action_taken,
    s.has_purchasable_addons,
    s.is_microsoft_product,
    s.scheduled_next_term,
    s.next_term_product_id,
    s.next_term_sku_id,
    s.next_term_availability_id,
    s.next_term_billing_cycle,
    s.next_term_duration,
    s.next_term_quantity,
    s.parent_subscription_id,
    s.entitlement_id,
    s.promotion_id,
    s.custom_term_end_date,
    s.suspension_reasons,
    s.tenant
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (tenant, customer_id)
JOIN pcsync.customer_health h USING (tenant, customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL;

CREATE OR REPLACE VIEW pcsync.license_totals AS
SELECT
    s.customer_id,
    c.company_name,
    s.offer_id,
    s.offer_name,
    s.status,
    count(*)::integer AS subscriptions,
    coalesce(sum(s.quantity), 0)::bigint AS licenses,
    s.tenant
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (tenant, customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
  AND s.status IS DISTINCT FROM 'deleted'
GROUP BY s.tenant, s.customer_id, c.company_name, s.offer_id, s.offer_name, s.status;

CREATE OR REPLACE VIEW pcsync.license_counts_monthly AS
SELECT
    m.month::date AS month,
    least(m.month + interval '1 month', pcsync.clock_now()) AS as_of,
    l.customer_id,
    l.company_name,
    l.offer_id,
    l.offer_name,
    l.product_id,
    l.status,
    l.subscriptions,
    l.licenses,
    l.tenant
FROM generate_series(
        date_trunc('month', (SELECT min(valid_from) FROM pcsync.subscription_history)),
        date_trunc('month', pcsync.clock_now()),
        interval '1 month') AS m(month)
CROSS JOIN LATERAL pcsync.license_counts_at(least(m.month + interval '1 month', pcsync.clock_now())) l;

CREATE OR REPLACE VIEW pcsync.upcoming_renewals AS
SELECT
    s.customer_id,
    c.company_name,
    s.subscription_id,
    s.offer_id,
    s.offer_name,
    s.friendly_name,
    s.product_id,
    s.status,
    s.quantity,
    s.term_duration,
    s.billing_cycle,
    s.commitment_end_date AS ends_on,
    s.commitment_end_date - pcsync.clock_now()::date AS days_left,
    CASE
        WHEN s.commitment_end_date - pcsync.clock_now()::date <= 30 THEN '0-30'
        WHEN s.commitment_end_date - pcsync.clock_now()::date <= 60 THEN '31-60'
        WHEN s.commitment_end_date - pcsync.clock_now()::date <= 90 THEN '61-90'
        ELSE 'later'
    END AS window_days,
    coalesce(s.auto_renew_enabled, false) AS auto_renews,
    s.renewal_term_duration,
    s.next_term_product_id,
    s.next_term_sku_id,
    s.next_term_availability_id,
    s.next_term_billing_cycle,
    s.next_term_duration,
    s.next_term_quantity,
    CASE WHEN coalesce(s.auto_renew_enabled, false)
         THEN coalesce(s.next_term_quantity, s.quantity) ELSE 0 END AS licenses_after_renewal,
    s.tenant
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (tenant, customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
  AND s.commitment_end_date >= pcsync.clock_now()::date
  AND s.status IS DISTINCT FROM 'deleted' AND s.status IS DISTINCT FROM 'expired';

CREATE OR REPLACE VIEW pcsync.recent_changes AS
SELECT
    e.event_id,
    e.detected_at,
    e.run_id,
    e.customer_id,
    c.company_name,
    e.entity,
    e.entity_id,
    coalesce(s.offer_name, m.name, k.sku_name) AS object_name,
    e.kind,
    e.field,
    e.old_value,
    e.new_value,
    e.changed_by,
    e.changed_via,
    e.operation,
    e.operation_at,
    e.tenant
FROM pcsync.change_events e
JOIN pcsync.customers c USING (tenant, customer_id)
LEFT JOIN pcsync.subscriptions s
    ON e.entity = 'subscription' AND s.tenant = e.tenant AND s.customer_id = e.customer_id AND s.subscription_id = e.entity_id
LEFT JOIN pcsync.managed_services m
    ON e.entity = 'managed_service' AND m.tenant = e.tenant AND m.customer_id = e.customer_id AND m.service_id = e.entity_id
LEFT JOIN pcsync.subscribed_skus k
    ON e.entity = 'subscribed_sku' AND k.tenant = e.tenant AND k.customer_id = e.customer_id AND k.sku_id = e.entity_id;

CREATE OR REPLACE VIEW pcsync.cancellation_windows AS
SELECT
    s.customer_id,
    c.company_name,
    s.subscription_id,
    s.offer_id,
    s.offer_name,
    s.friendly_name,
    s.quantity AS licenses,
    w.refundable_quantity,
    w.allowed_until,
    round((extract(epoch FROM w.allowed_until - pcsync.clock_now()) / 3600)::numeric, 1)
        AS hours_left,
    s.tenant
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (tenant, customer_id)
CROSS JOIN LATERAL (
    SELECT pcsync.to_instant(d ->> 'allowedUntilDateTime') AS allowed_until,
           CASE WHEN jsonb_typeof(d -> 'quantity') = 'number' THEN (d ->> 'quantity')::numeric::bigint
                WHEN d ->> 'quantity' ~ '^[0-9]{1,18}$' THEN (d ->> 'quantity')::bigint END
               AS refundable_quantity
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(s.refundable_quantity_details) = 'array'
                                   THEN s.refundable_quantity_details ELSE '[]'::jsonb END) AS d
    WHERE jsonb_typeof(d) = 'object'
) w
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
  AND s.status IN ('active', 'suspended')
  AND w.allowed_until > pcsync.clock_now()
  -- No window without an entry: said so the planner, whose statistics know how many
  -- subscriptions have entries, estimates the rows (it takes 100 per array otherwise).
  AND s.refundable_quantity_details IS NOT NULL AND s.refundable_quantity_details <> '[]'::jsonb;

CREATE OR REPLACE VIEW pcsync.license_usage AS
SELECT
    k.customer_id,
    c.company_name,
    k.sku_id,
    k.sku_name,
    k.sku_part_number,
    k.total_units,
    k.active_units,
    k.consumed_units,
    k.suspended_units,
    k.warning_units,
    greatest(coalesce(k.active_units, 0) - coalesce(k.consumed_units, 0), 0) AS unassigned,
    greatest(coalesce(k.consumed_units, 0) - coalesce(k.active_units, 0), 0) AS over_assigned,
    CASE WHEN coalesce(k.active_units, 0) > 0
         THEN round(k.consumed_units::numeric / k.active_units, 3) END AS share_in_use,
    k.capability_status,
    m.offer_id,
    m.offer_name,
    coalesce(m.match_basis, 'unmatched') AS match_basis,
    k.tenant,
    -- A customer's SKUs are its own tenant's: the same whichever partner tenant reads them.
    row_number() OVER (PARTITION BY k.customer_id, k.sku_id ORDER BY k.tenant) = 1 AS usage_counted
FROM pcsync.subscribed_skus k
JOIN pcsync.customers c USING (tenant, customer_id)
LEFT JOIN LATERAL (
    SELECT s.offer_id, s.offer_name, b.basis AS match_basis
    FROM pcsync.subscriptions s
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN EXISTS (SELECT 1 FROM pcsync.sku_offers o
                         WHERE o.sku_part_number = k.sku_part_number
                           AND (o.offer_id = s.offer_id OR o.offer_id = s.product_id)) THEN 1
            WHEN s.product_id IS NOT NULL AND k.sku_part_number = s.product_id || '/' || s.sku_id THEN 2
            WHEN k.sku_name IS NOT NULL AND k.sku_name = s.offer_name THEN 3
        END AS rank,
        CASE
            WHEN EXISTS (SELECT 1 FROM pcsync.sku_offers o
                         WHERE o.sku_part_number = k.sku_part_number
                           AND (o.offer_id = s.offer_id OR o.offer_id = s.product_id)) THEN 'sku_offers'
            WHEN s.product_id IS NOT NULL AND k.sku_part_number = s.product_id || '/' || s.sku_id THEN 'part_number'
            WHEN k.sku_name IS NOT NULL AND k.sku_name = s.offer_name THEN 'product_name'
        END AS basis
    ) b
    WHERE s.tenant = k.tenant AND s.customer_id = k.customer_id AND s.removed_at IS NULL AND s.untracked_at IS NULL
      AND b.rank IS NOT NULL
    ORDER BY b.rank, s.offer_id
    LIMIT 1
) m ON true
WHERE k.removed_at IS NULL AND c.left_list_at IS NULL AND c.access_lost_at IS NULL;

CREATE OR REPLACE VIEW pcsync.unassigned_seats AS
SELECT
    u.customer_id,
    u.company_name,
    u.sku_id,
    u.sku_name,
    u.sku_part_number,
    u.active_units,
    u.consumed_units,
    u.unassigned,
    st.spare_seats,
    u.unassigned - st.spare_seats AS unassigned_beyond_spare,
    u.offer_id,
    u.offer_name,
    u.match_basis,
    u.tenant,
    u.usage_counted
FROM pcsync.license_usage u
CROSS JOIN pcsync.usage_settings st
WHERE u.unassigned > st.spare_seats
  AND NOT EXISTS (SELECT 1 FROM pcsync.usage_exclusions x WHERE u.sku_part_number LIKE x.pattern);

CREATE OR REPLACE VIEW pcsync.renewal_decisions AS
SELECT
    s.customer_id,
    c.company_name,
    s.subscription_id,
    s.offer_id,
    s.offer_name,
    s.friendly_name,
    s.product_id,
    s.sku_id,
    s.status,
    s.term_duration,
    s.billing_cycle,
    s.commitment_end_date AS ends_on,
    s.commitment_end_date - pcsync.clock_now()::date AS days_left,
    d.decision,
    s.quantity AS licenses,
    CASE WHEN d.decision = 'ends' THEN 0 ELSE coalesce(s.next_term_quantity, s.quantity) END
        AS licenses_next_term,
    s.next_term_product_id,
    s.next_term_sku_id,
    s.next_term_duration,
    s.next_term_billing_cycle,
    s.next_term_quantity,
    s.refundable_quantity,
    u.sku_part_number,
    u.unassigned AS unassigned_seats,
    (u.sku_id IS NOT NULL AND row_number() OVER (
        PARTITION BY s.customer_id, u.sku_id
        ORDER BY s.tenant, s.commitment_end_date, s.subscription_id) = 1)
        AS unassigned_counted,
    s.tenant
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (tenant, customer_id)
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN NOT coalesce(s.auto_renew_enabled, false) THEN 'ends'
        WHEN (s.next_term_product_id IS NOT NULL AND s.next_term_product_id IS DISTINCT FROM s.product_id)
          OR (s.next_term_sku_id IS NOT NULL AND s.next_term_sku_id IS DISTINCT FROM s.sku_id)
          OR (nullif(s.next_term_duration, '') IS NOT NULL
              AND upper(s.next_term_duration) IS DISTINCT FROM upper(s.term_duration))
          OR (nullif(s.next_term_billing_cycle, '') IS NOT NULL
              AND lower(s.next_term_billing_cycle) IS DISTINCT FROM lower(s.billing_cycle))
          OR (s.next_term_quantity IS NOT NULL AND s.next_term_quantity IS DISTINCT FROM s.quantity)
        THEN 'renews with changes'
        ELSE 'renews'
    END AS decision
) d
LEFT JOIN pcsync.license_usage u ON u.tenant = s.tenant AND u.customer_id = s.customer_id AND u.offer_id = s.offer_id
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
  AND s.status IN ('active', 'suspended')
  AND pcsync.term_months(s.term_duration) > 1
  AND s.commitment_end_date >= pcsync.clock_now()::date
  AND s.commitment_end_date <= pcsync.clock_now()::date + 90;

-- pcsync_bi: the tenant as a column of every view.

CREATE OR REPLACE VIEW pcsync_bi.cancellation_windows AS
SELECT
    w.allowed_until,
    w.customer_id::text AS customer_id,
    w.company_name,
    w.subscription_id,
    w.offer_id,
    w.offer_name,
    w.friendly_name,
    w.licenses,
    w.refundable_quantity,
    w.hours_left,
    w.tenant
FROM pcsync.cancellation_windows w;

CREATE OR REPLACE VIEW pcsync_bi.current_subscriptions AS
SELECT
    s.commitment_end_date,
    s.customer_id::text AS customer_id,
    s.company_name,
    s.domain,
    s.subscription_id,
    s.offer_id,
    s.offer_name,
    s.friendly_name,
    s.product_id,
    s.sku_id,
    s.availability_id,
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
    s.commitment_end_date_time,
    s.billing_cycle_end_date,
    s.custom_term_end_date,
    s.cancellation_allowed_until,
    s.refundable_quantity,
    s.partner_id,
    s.contract_type,
    s.order_id,
    s.product_type,
    s.publisher_name,
    s.attention_needed,
    s.action_taken,
    s.has_purchasable_addons,
    s.is_microsoft_product,
    s.next_term_product_id,
    s.next_term_sku_id,
    s.next_term_availability_id,
    s.next_term_billing_cycle,
    s.next_term_duration,
    s.next_term_quantity,
    s.parent_subscription_id,
    s.entitlement_id,
    s.promotion_id,
    array_to_string(s.suspension_reasons, ', ') AS suspension_reasons,
    s.first_seen_at,
    s.changed_at,
    s.data_as_of,
    s.tenant
FROM pcsync.current_subscriptions s;

CREATE OR REPLACE VIEW pcsync_bi.customer_health AS
SELECT
    h.last_confirmed_at,
    h.customer_id::text AS customer_id,
    h.company_name,
    h.domain,
    h.mpn_id,
    h.source,
    h.listed,
    h.status,
    h.failing_since,
    h.last_error,
    h.last_error_code,
    h.last_error_at,
    h.access_lost,
    h.access_lost_at,
    h.left_list_at,
    h.tenant
FROM pcsync.customer_health h;

CREATE OR REPLACE VIEW pcsync_bi.license_totals AS
SELECT
    pcsync.clock_now() AS as_of,
    t.customer_id::text AS customer_id,
    t.company_name,
    t.offer_id,
    t.offer_name,
    t.status,
    t.subscriptions,
    t.licenses,
    t.tenant
FROM pcsync.license_totals t;

CREATE OR REPLACE VIEW pcsync_bi.license_usage AS
SELECT
    pcsync.clock_now() AS as_of,
    u.customer_id::text AS customer_id,
    u.company_name,
    u.sku_id,
    u.sku_name,
    u.sku_part_number,
    u.total_units,
    u.active_units,
    u.consumed_units,
    u.suspended_units,
    u.warning_units,
    u.unassigned,
    u.over_assigned,
    u.share_in_use,
    u.capability_status,
    u.offer_id,
    u.offer_name,
    u.match_basis,
    u.tenant,
    u.usage_counted
FROM pcsync.license_usage u;

CREATE OR REPLACE VIEW pcsync_bi.unassigned_seats AS
SELECT
    pcsync.clock_now() AS as_of,
    u.customer_id::text AS customer_id,
    u.company_name,
    u.sku_id,
    u.sku_name,
    u.sku_part_number,
    u.active_units,
    u.consumed_units,
    u.unassigned,
    u.spare_seats,
    u.unassigned_beyond_spare,
    u.offer_id,
    u.offer_name,
    u.match_basis,
    u.tenant,
    u.usage_counted
FROM pcsync.unassigned_seats u;

CREATE OR REPLACE VIEW pcsync_bi.renewal_decisions AS
SELECT
    d.ends_on,
    d.customer_id::text AS customer_id,
    d.company_name,
    d.subscription_id,
    d.offer_id,
    d.offer_name,
    d.friendly_name,
    d.product_id,
    d.sku_id,
    d.status,
    d.term_duration,
    d.billing_cycle,
    d.days_left,
    d.decision,
    d.licenses,
    d.licenses_next_term,
    d.next_term_product_id,
    d.next_term_sku_id,
    d.next_term_duration,
    d.next_term_billing_cycle,
    d.next_term_quantity,
    d.refundable_quantity,
    d.sku_part_number,
    d.unassigned_seats,
    d.unassigned_counted,
    CASE WHEN d.unassigned_counted THEN d.unassigned_seats ELSE 0 END AS unassigned_seats_to_sum,
    d.tenant
FROM pcsync.renewal_decisions d;

CREATE OR REPLACE VIEW pcsync_bi.sync_runs AS
SELECT
    r.started_at,
    r.finished_at,
    extract(epoch FROM r.finished_at - r.started_at)::double precision AS duration_seconds,
    r.run_id::text AS run_id,
    r.status,
    r.trigger,
    r.kind,
    r.customers_total,
    r.customers_succeeded,
    r.customers_failed,
    r.customers_named,
    r.customers_due,
    r.customers_new,
    r.customers_retried,
    cardinality(r.confirmed_customers) AS customers_confirmed,
    r.customer_list_complete,
    r.api_requests,
    r.throttled_responses,
    r.retries,
    r.second_looks,
    r.changes_detected,
    r.activity_records,
    r.activity_read_through,
    r.error,
    r.tenant
FROM pcsync.sync_runs r;

CREATE OR REPLACE VIEW pcsync_bi.upcoming_renewals AS
SELECT
    r.ends_on,
    r.customer_id::text AS customer_id,
    r.company_name,
    r.subscription_id,
    r.offer_id,
    r.offer_name,
    r.friendly_name,
    r.product_id,
    r.status,
    r.quantity,
    r.term_duration,
    r.billing_cycle,
    r.days_left,
    r.window_days,
    r.auto_renews,
    r.renewal_term_duration,
    r.next_term_product_id,
    r.next_term_sku_id,
    r.next_term_availability_id,
    r.next_term_billing_cycle,
    r.next_term_duration,
    r.next_term_quantity,
    r.licenses_after_renewal,
    r.tenant
FROM pcsync.upcoming_renewals r;

CREATE OR REPLACE VIEW pcsync_bi.recent_changes AS
SELECT
    r.detected_at,
    r.event_id,
    r.run_id::text AS run_id,
    r.customer_id::text AS customer_id,
    r.company_name,
    r.entity,
    r.entity_id,
    r.object_name,
    r.kind,
    r.field,
    r.old_value,
    r.new_value,
    r.changed_by,
    r.changed_via,
    r.operation,
    r.operation_at,
    r.run_id = (SELECT f.run_id FROM pcsync.sync_runs f WHERE f.tenant = r.tenant
                 ORDER BY f.started_at LIMIT 1)
        AND r.kind = 'added' AS first_load,
        r.tenant
FROM pcsync.recent_changes r;

CREATE OR REPLACE VIEW pcsync_bi.license_counts_daily AS
WITH now_ AS (
    SELECT pcsync.clock_now() AS at, date_trunc('day', pcsync.clock_now())::date AS today
),
versions AS (
    SELECT h.tenant, h.customer_id, h.offer_id, h.status, h.quantity,
           date_trunc('day', h.valid_from - interval '1 microsecond')::date AS first_day,
           CASE WHEN h.valid_to IS NOT NULL AND h.valid_to <= n.at
                THEN date_trunc('day', h.valid_to - interval '1 microsecond')::date END AS stop_day
    FROM pcsync.subscription_history h, now_ n
    WHERE h.status IS DISTINCT FROM 'deleted' AND h.valid_from <= n.at
),
changes AS (
    SELECT tenant, customer_id, offer_id, status, first_day AS day, quantity AS licenses, 1 AS subscriptions
    FROM versions
    UNION ALL
    SELECT tenant, customer_id, offer_id, status, stop_day, -quantity, -1
    FROM versions WHERE stop_day IS NOT NULL
),
-- Per tenant, customer, offer and status, ordered by day: several changes on one day are peers with
-- the same running sum, and all but the last have an empty span (to_day = from_day).
spans AS (
    SELECT tenant, customer_id, offer_id, status, day AS from_day,
           lead(day) OVER w AS to_day,
           coalesce(sum(licenses) OVER w, 0) AS licenses,
           sum(subscriptions) OVER w AS subscriptions
    FROM changes
    WINDOW w AS (PARTITION BY tenant, customer_id, offer_id, status ORDER BY day)
),
offers AS (
    SELECT DISTINCT ON (h.offer_id) h.offer_id, h.offer_name, h.product_id
    FROM pcsync.subscription_history h
    ORDER BY h.offer_id, h.valid_from DESC
),
-- What each row shows, computed once per span (not once per day).
shown AS (
    SELECT
        s.from_day,
        coalesce(s.to_day, n.today + 1) AS to_day,
        s.customer_id::text AS customer_id,
        c.company_name,
        s.offer_id,
        o.offer_name,
        o.product_id,
        s.status,
        s.subscriptions::integer AS subscriptions,
        s.licenses::bigint AS licenses,
        s.tenant
    FROM spans s
    CROSS JOIN now_ n
    LEFT JOIN pcsync.customers c ON c.tenant = s.tenant AND c.customer_id = s.customer_id
    LEFT JOIN offers o ON o.offer_id = s.offer_id
    WHERE s.subscriptions > 0
)
-- Each span's days: generate_series in the select list streams them (no join to a calendar to
-- filter), and the planner's estimate per span is close enough.
SELECT
    w.from_day + generate_series(0, w.to_day - w.from_day - 1) AS day,
    w.customer_id,
    w.company_name,
    w.offer_id,
    w.offer_name,
    w.product_id,
    w.status,
    w.subscriptions,
    w.licenses,
    w.tenant
FROM shown w;

CREATE VIEW pcsync_bi.license_counts_month_end AS
SELECT
    p.period AS month,
    p.as_of,
    l.customer_id::text AS customer_id,
    l.company_name,
    l.offer_id,
    l.offer_name,
    l.product_id,
    l.status,
    l.subscriptions,
    l.licenses,
    l.tenant
FROM pcsync.history_periods('month') AS p
CROSS JOIN LATERAL pcsync.license_counts_at(p.as_of) AS l;

CREATE VIEW pcsync_bi.license_counts_quarter_end AS
SELECT
    p.period AS quarter,
    p.as_of,
    l.customer_id::text AS customer_id,
    l.company_name,
    l.offer_id,
    l.offer_name,
    l.product_id,
    l.status,
    l.subscriptions,
    l.licenses,
    l.tenant
FROM pcsync.history_periods('quarter') AS p
CROSS JOIN LATERAL pcsync.license_counts_at(p.as_of) AS l;

-- The dropped views' comments back, then every tenant column's.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM kept_comments LOOP
        IF r.col IS NULL THEN
            EXECUTE format('COMMENT ON VIEW %I.%I IS %L', r.schema, r.view, r.description);
        ELSE
            EXECUTE format('COMMENT ON COLUMN %I.%I.%I IS %L', r.schema, r.view, r.col, r.description);
        END IF;
    END LOOP;
    FOR r IN
        SELECT n.nspname AS schema, c.relname AS view
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant'
        WHERE c.relkind = 'v' AND n.nspname IN ('pcsync', 'pcsync_bi')
    LOOP
        EXECUTE format('COMMENT ON COLUMN %I.%I.tenant IS %L', r.schema, r.view,
            'The partner tenant (partner_tenants.name) whose copy the row is: a customer of two partner tenants is a row under each, never merged. Filter or group by it for one tenant''s figures.');
    END LOOP;
END
$$;

COMMENT ON COLUMN pcsync.license_usage.usage_counted IS
    'True on one row per customer and SKU across all partner tenants (the first tenant by name): a customer''s licences are its own tenant''s and read the same by each partner tenant, so sum units and unassigned over these rows for a total across tenants.';
COMMENT ON COLUMN pcsync.unassigned_seats.usage_counted IS
    'True on one row per customer and SKU across all partner tenants (license_usage.usage_counted): sum over these rows for a total across tenants.';
COMMENT ON COLUMN pcsync_bi.license_usage.usage_counted IS
    'True on one row per customer and SKU across all partner tenants (the first tenant by name): sum units and unassigned over these rows for a total across tenants; within one tenant every row counts.';
COMMENT ON COLUMN pcsync_bi.unassigned_seats.usage_counted IS
    'True on one row per customer and SKU across all partner tenants: sum over these rows for a total across tenants; within one tenant every row counts.';
COMMENT ON COLUMN pcsync.renewal_decisions.unassigned_counted IS
    'True on one decision per customer and SKU across all partner tenants (the first tenant by name, then the soonest end): sum unassigned_seats over these rows only.';


-- Migration 16 added the tenant column to populated tables without statistics on it: until
-- autovacuum analyzes them, the planner takes `tenant = ...` for a handful of rows (nested
-- loops over thousands). Statistics now for the tables that hold rows, so the first passes after
-- an upgrade plan as usual. An empty table is left unanalyzed: statistics saying "empty" would
-- mislead the planner during a first load, where the size of a never-analyzed table is read
-- from its pages.
DO $$
DECLARE
    t text;
    populated boolean;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'pcsync.customers', 'pcsync.subscriptions', 'pcsync.managed_services',
        'pcsync.subscribed_skus', 'pcsync.subscription_history', 'pcsync.subscribed_sku_history',
        'pcsync.change_events', 'pcsync.activity_log', 'pcsync.sync_runs', 'pcsync.sync_errors']
    LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', t) INTO populated;
        IF populated THEN
            EXECUTE format('ANALYZE %s', t);
        END IF;
    END LOOP;
END
$$;
