-- BI-ready views (issue 17): schema pcsync_bi, what any BI tool can chart without traps. Ids as
-- text (a BI tool has no type for uuid), no jsonb or array columns (flattened into scalar
-- columns where they matter), the meaningful time column first, every view commented "One row
-- per ..." with the measures that may be summed. The pcsync views keep their columns.

CREATE SCHEMA pcsync_bi;
COMMENT ON SCHEMA pcsync_bi IS
    'Views for BI tools (Superset, Power BI, Tableau, Metabase, Grafana): ids as text, no jsonb or arrays, the time column first. Counts over time are semi-additive: sum them across customers and offers, never across days; chart the month-end and quarter-end views at those grains.';

-- The months or quarters from the first recorded version to now, each with the instant it is
-- counted at: its end, or now for the current one.
CREATE FUNCTION pcsync.history_periods(unit text)
RETURNS TABLE (period date, as_of timestamptz)
LANGUAGE plpgsql STABLE ROWS 6
AS $$
DECLARE
    step interval := CASE unit WHEN 'month' THEN interval '1 month'
                               WHEN 'quarter' THEN interval '3 months' END;
BEGIN
    IF step IS NULL THEN
        RAISE EXCEPTION 'history_periods: unit must be month or quarter, not %', unit;
    END IF;
    RETURN QUERY
    SELECT p::date, least(p + step, pcsync.clock_now())
    FROM generate_series(
        (SELECT date_trunc(unit, min(h.valid_from)) FROM pcsync.subscription_history h),
        date_trunc(unit, pcsync.clock_now()),
        step) AS p;
END
$$;
COMMENT ON FUNCTION pcsync.history_periods(text) IS
    'The months or quarters (unit ''month'' or ''quarter'') from the first one pcsync recorded to the current one, each with the instant counted: its end, or now (pcsync.clock_now()) for the current one.';

-- ---------------------------------------------------------------------------------------------
-- Current state

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
        AS hours_left
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (customer_id)
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

CREATE VIEW pcsync_bi.current_subscriptions AS
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
    s.data_as_of
FROM pcsync.current_subscriptions s;
COMMENT ON VIEW pcsync_bi.current_subscriptions IS
    'One row per subscription a listed customer has now (as pcsync.current_subscriptions). quantity may be summed across rows. The scheduled next term is in the next_term_* columns; per-purchase refund windows are in cancellation_windows.';

CREATE VIEW pcsync_bi.license_totals AS
SELECT
    pcsync.clock_now() AS as_of,
    t.customer_id::text AS customer_id,
    t.company_name,
    t.offer_id,
    t.offer_name,
    t.status,
    t.subscriptions,
    t.licenses
FROM pcsync.license_totals t;
COMMENT ON VIEW pcsync_bi.license_totals IS
    'One row per customer, offer and status now. subscriptions and licenses may be summed across rows (customers, offers, statuses).';

CREATE VIEW pcsync_bi.upcoming_renewals AS
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
    r.licenses_after_renewal
FROM pcsync.upcoming_renewals r;
COMMENT ON VIEW pcsync_bi.upcoming_renewals IS
    'One row per subscription whose term ends today or later (as pcsync.upcoming_renewals). quantity and licenses_after_renewal may be summed across rows; days_left may not.';

CREATE VIEW pcsync_bi.customer_health AS
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
    h.left_list_at
FROM pcsync.customer_health h;
COMMENT ON VIEW pcsync_bi.customer_health IS
    'One row per customer pcsync knows, listed or not: whether its data is confirmed and since when it fails. No measure to sum; count rows (customers) by status.';

CREATE VIEW pcsync_bi.license_usage AS
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
    u.match_basis
FROM pcsync.license_usage u;
COMMENT ON VIEW pcsync_bi.license_usage IS
    'One row per customer and subscribed SKU now. The *_units, unassigned and over_assigned may be summed across rows; share_in_use may not (recompute it from the sums).';

CREATE VIEW pcsync_bi.unassigned_seats AS
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
    u.match_basis
FROM pcsync.unassigned_seats u;
COMMENT ON VIEW pcsync_bi.unassigned_seats IS
    'One row per customer and SKU with seats paid for and not assigned, after exclusions and the spare allowance. active_units, consumed_units, unassigned and unassigned_beyond_spare may be summed across rows; spare_seats may not.';

CREATE VIEW pcsync_bi.renewal_decisions AS
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
    CASE WHEN d.unassigned_counted THEN d.unassigned_seats ELSE 0 END AS unassigned_seats_to_sum
FROM pcsync.renewal_decisions d;
COMMENT ON VIEW pcsync_bi.renewal_decisions IS
    'One row per subscription with a term longer than a month ending within 90 days, and what happens then (decision). licenses and licenses_next_term may be summed across rows; unassigned_seats may not (it repeats for each subscription of the same customer and SKU): sum unassigned_seats_to_sum instead.';

CREATE VIEW pcsync_bi.cancellation_windows AS
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
    w.hours_left
FROM pcsync.cancellation_windows w;
COMMENT ON VIEW pcsync_bi.cancellation_windows IS
    'One row per open refund window of a purchase, renewal or seat increase. refundable_quantity may be summed across rows; licenses may not (it repeats for each window of the same subscription); hours_left may not.';

-- ---------------------------------------------------------------------------------------------
-- Events and passes

CREATE VIEW pcsync_bi.recent_changes AS
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
    r.run_id = (SELECT f.run_id FROM pcsync.sync_runs f ORDER BY f.started_at LIMIT 1)
        AND r.kind = 'added' AS first_load
FROM pcsync.recent_changes r;
COMMENT ON VIEW pcsync_bi.recent_changes IS
    'One row per change event (added, removed, changed field, untracked, tracked). No measure to sum; count rows (changes) by kind, field or entity. first_load marks the additions of the very first pass, which are the initial copy, not changes: filter them out of charts of changes over time.';

CREATE VIEW pcsync_bi.sync_runs AS
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
    r.error
FROM pcsync.sync_runs r;
COMMENT ON VIEW pcsync_bi.sync_runs IS
    'One row per sync pass. api_requests, throttled_responses, retries, second_looks, changes_detected, activity_records and customers_failed may be summed across passes; customers_total and customers_succeeded may be summed only as "customer fetches", duration_seconds only as time spent.';

-- ---------------------------------------------------------------------------------------------
-- Licenses over time (semi-additive counts)

-- Day by day, from the history: each version adds its quantity from the first day whose end it
-- is valid at, and takes it away from the first day whose end it is not; per customer, offer and
-- status the running sum of those changes is constant between them (a span), and each span
-- gives one row per day (no grouping: the planner estimates the rows from the history's).
-- A year of daily counts for 10,000 customers is about 11 million rows: charted per day it
-- answers in under 2 s (benchmark scenario Q). Day d is counted at the end of d (midnight, the session's time zone),
-- today at pcsync.clock_now(), as pcsync.license_counts_at counts.
CREATE VIEW pcsync_bi.license_counts_daily AS
WITH now_ AS (
    SELECT pcsync.clock_now() AS at, date_trunc('day', pcsync.clock_now())::date AS today
),
versions AS (
    SELECT h.customer_id, h.offer_id, h.status, h.quantity,
           date_trunc('day', h.valid_from - interval '1 microsecond')::date AS first_day,
           CASE WHEN h.valid_to IS NOT NULL AND h.valid_to <= n.at
                THEN date_trunc('day', h.valid_to - interval '1 microsecond')::date END AS stop_day
    FROM pcsync.subscription_history h, now_ n
    WHERE h.status IS DISTINCT FROM 'deleted' AND h.valid_from <= n.at
),
changes AS (
    SELECT customer_id, offer_id, status, first_day AS day, quantity AS licenses, 1 AS subscriptions
    FROM versions
    UNION ALL
    SELECT customer_id, offer_id, status, stop_day, -quantity, -1
    FROM versions WHERE stop_day IS NOT NULL
),
-- Per customer, offer and status, ordered by day: several changes on one day are peers with
-- the same running sum, and all but the last have an empty span (to_day = from_day).
spans AS (
    SELECT customer_id, offer_id, status, day AS from_day,
           lead(day) OVER w AS to_day,
           coalesce(sum(licenses) OVER w, 0) AS licenses,
           sum(subscriptions) OVER w AS subscriptions
    FROM changes
    WINDOW w AS (PARTITION BY customer_id, offer_id, status ORDER BY day)
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
        s.licenses::bigint AS licenses
    FROM spans s
    CROSS JOIN now_ n
    LEFT JOIN pcsync.customers c ON c.customer_id = s.customer_id
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
    w.licenses
FROM shown w;
COMMENT ON VIEW pcsync_bi.license_counts_daily IS
    'One row per day, customer, offer and status with subscriptions that day, from the first day pcsync recorded to today: the count at the end of the day (today: now). Semi-additive: subscriptions and licenses may be summed across customers, offers and statuses on one day, never across days (average them, or take the last day). For months and quarters use license_counts_month_end and license_counts_quarter_end.';

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
    l.licenses
FROM pcsync.history_periods('month') AS p
CROSS JOIN LATERAL pcsync.license_counts_at(p.as_of) AS l;
COMMENT ON VIEW pcsync_bi.license_counts_month_end IS
    'One row per month, customer, offer and status: the count at the end of the month (the current month: now). Semi-additive: subscriptions and licenses may be summed across customers, offers and statuses within one month, never across months; chart it at month grain.';

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
    l.licenses
FROM pcsync.history_periods('quarter') AS p
CROSS JOIN LATERAL pcsync.license_counts_at(p.as_of) AS l;
COMMENT ON VIEW pcsync_bi.license_counts_quarter_end IS
    'One row per quarter, customer, offer and status: the count at the end of the quarter (the current quarter: now). Semi-additive: subscriptions and licenses may be summed across customers, offers and statuses within one quarter, never across quarters; chart it at quarter grain.';

-- ---------------------------------------------------------------------------------------------
-- Column comments: those of the pcsync view of the same name where a column is the same, then
-- the new ones.

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT b.relname AS view, a.attname AS col, d.description
        FROM pg_class b
        JOIN pg_namespace nb ON nb.oid = b.relnamespace AND nb.nspname = 'pcsync_bi'
        JOIN pg_attribute a ON a.attrelid = b.oid AND a.attnum > 0 AND NOT a.attisdropped
        JOIN pg_class p ON p.relname = b.relname
        JOIN pg_namespace np ON np.oid = p.relnamespace AND np.nspname = 'pcsync'
        JOIN pg_attribute pa ON pa.attrelid = p.oid AND pa.attname = a.attname
        JOIN pg_description d ON d.objoid = p.oid AND d.objsubid = pa.attnum
        WHERE b.relkind = 'v'
    LOOP
        EXECUTE format('COMMENT ON COLUMN pcsync_bi.%I.%I IS %L', r.view, r.col, r.description);
    END LOOP;
    -- The month-end and quarter-end counts are the monthly view's columns.
    FOR r IN
        SELECT v.view, a.attname AS col, d.description
        FROM (VALUES ('license_counts_month_end'), ('license_counts_quarter_end'), ('license_counts_daily')) AS v(view)
        JOIN pg_attribute a ON a.attrelid = 'pcsync.license_counts_monthly'::regclass AND a.attnum > 0
        JOIN pg_description d ON d.objoid = a.attrelid AND d.objsubid = a.attnum
        JOIN pg_attribute b ON b.attrelid = ('pcsync_bi.' || v.view)::regclass AND b.attname = a.attname
    LOOP
        EXECUTE format('COMMENT ON COLUMN pcsync_bi.%I.%I IS %L', r.view, r.col, r.description);
    END LOOP;
END
$$;

COMMENT ON COLUMN pcsync_bi.current_subscriptions.suspension_reasons IS 'Why Partner Center suspended it, comma-separated (empty when active).';
COMMENT ON COLUMN pcsync_bi.license_totals.as_of IS 'The instant counted: now (pcsync.clock_now()).';
COMMENT ON COLUMN pcsync_bi.license_usage.as_of IS 'The instant shown: now (pcsync.clock_now()); the units are as of the customer''s last good pass.';
COMMENT ON COLUMN pcsync_bi.unassigned_seats.as_of IS 'The instant shown: now (pcsync.clock_now()); the units are as of the customer''s last good pass.';
COMMENT ON COLUMN pcsync_bi.renewal_decisions.unassigned_seats_to_sum IS 'unassigned_seats on the one row that counts it per customer and SKU (unassigned_counted), else 0: the column to sum.';
COMMENT ON COLUMN pcsync_bi.recent_changes.first_load IS 'True for the events of the very first pass (the initial copy, every object added): leave them out of charts of changes over time.';
COMMENT ON COLUMN pcsync_bi.sync_runs.duration_seconds IS 'How long the pass took (finished_at - started_at), in seconds; null while it runs.';
COMMENT ON COLUMN pcsync_bi.sync_runs.customers_confirmed IS 'Customers whose data this pass confirmed (fetched whole and stored).';
COMMENT ON COLUMN pcsync_bi.license_counts_daily.day IS 'The day (the session''s time zone), counted at its end; today is counted at now (pcsync.clock_now()).';
COMMENT ON COLUMN pcsync_bi.license_counts_daily.subscriptions IS 'How many subscriptions at the end of the day. Semi-additive: sum across customers and offers, never across days.';
COMMENT ON COLUMN pcsync_bi.license_counts_daily.licenses IS 'Their quantities added up, at the end of the day. Semi-additive: sum across customers and offers, never across days.';
COMMENT ON COLUMN pcsync_bi.license_counts_month_end.month IS 'The month (its first day), counted at its end.';
COMMENT ON COLUMN pcsync_bi.license_counts_month_end.licenses IS 'Their quantities added up, at the end of the month. Semi-additive: sum across customers and offers, never across months.';
COMMENT ON COLUMN pcsync_bi.license_counts_quarter_end.quarter IS 'The quarter (its first day), counted at its end.';
COMMENT ON COLUMN pcsync_bi.license_counts_quarter_end.as_of IS 'The instant counted: the end of the quarter, or now (pcsync.clock_now()) for the current quarter.';
COMMENT ON COLUMN pcsync_bi.license_counts_quarter_end.licenses IS 'Their quantities added up, at the end of the quarter. Semi-additive: sum across customers and offers, never across quarters.';

-- Readers read the BI views; nothing here writes.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pcsync_reader') THEN
        GRANT USAGE ON SCHEMA pcsync_bi TO pcsync_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA pcsync_bi TO pcsync_reader;
        ALTER DEFAULT PRIVILEGES IN SCHEMA pcsync_bi GRANT SELECT ON TABLES TO pcsync_reader;
    END IF;
END
$$;
