-- Freshness between full passes (issue 15): one clock for "today", why each customer was
-- fetched, which customers an incremental pass confirmed, whether the customer list was
-- complete, and which renewal endings were already announced.

-- ---------------------------------------------------------------------------------------------
-- The clock views count days from. pcsync sets `pcsync.now` when it runs on a clock of its own
-- (tests, the benchmark, the demo's history); everyone else gets the database's now().
CREATE FUNCTION pcsync.clock_now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(current_setting('pcsync.now', true), '')::timestamptz, now()) $$;
COMMENT ON FUNCTION pcsync.clock_now() IS
    'The instant views count from: the session setting pcsync.now when set (pcsync sets it when it runs on a clock of its own), else now(). Days (days_left) count from its date in the session''s time zone.';

-- An instant written as text, or null when it does not read as one (Partner Center's data is
-- not always clean; one bad value must not stop a query over every subscription).
CREATE FUNCTION pcsync.to_instant(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    IF value IS NULL OR value !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d' THEN
        RETURN NULL;
    END IF;
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pcsync.to_instant(text) IS
    'The text as a timestamptz, or null when it is not one: pcsync.to_instant(d ->> ''allowedUntilDateTime'') over jsonb_array_elements(subscriptions.refundable_quantity_details) d.';

-- The moments at which Partner Center changes a subscription on a date, without an activity
-- record: 00:00 UTC the day after its term, custom term or billing cycle ends (renewal,
-- roll-over, expiry, a trial's end, a new billing cycle; rechecked until the date moves), and
-- the close of each refund window (refundable_quantity_details[].allowedUntilDateTime).
CREATE FUNCTION pcsync.subscription_due_moments(
    commitment_end_date date,
    custom_term_end_date date,
    billing_cycle_end_date date,
    refundable_quantity_details jsonb)
RETURNS TABLE (due_at timestamptz, rechecked boolean)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT (x.day + 1)::timestamp AT TIME ZONE 'UTC', true
    FROM (VALUES (commitment_end_date), (custom_term_end_date), (billing_cycle_end_date)) AS x(day)
    WHERE x.day IS NOT NULL
    UNION ALL
    SELECT pcsync.to_instant(d ->> 'allowedUntilDateTime'), false
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(refundable_quantity_details) = 'array'
                                   THEN refundable_quantity_details ELSE '[]'::jsonb END) AS d
    WHERE jsonb_typeof(d) = 'object' AND pcsync.to_instant(d ->> 'allowedUntilDateTime') IS NOT NULL
$$;
COMMENT ON FUNCTION pcsync.subscription_due_moments(date, date, date, jsonb) IS
    'When Partner Center changes a subscription on a date without an activity record: 00:00 UTC the day after its commitment, custom term or billing cycle end (rechecked = true: Microsoft''s renewal queue may take up to 24 h), and each refund window''s close (rechecked = false). An incremental pass fetches a customer whose moment passed within the last 3 days.';

-- ---------------------------------------------------------------------------------------------
ALTER TABLE pcsync.sync_runs
    ADD COLUMN customers_named    integer NOT NULL DEFAULT 0 CHECK (customers_named >= 0),
    ADD COLUMN customers_due      integer NOT NULL DEFAULT 0 CHECK (customers_due >= 0),
    ADD COLUMN customers_new      integer NOT NULL DEFAULT 0 CHECK (customers_new >= 0),
    ADD COLUMN customers_retried  integer NOT NULL DEFAULT 0 CHECK (customers_retried >= 0),
    ADD COLUMN confirmed_customers uuid[],
    ADD COLUMN customer_list_complete boolean;
COMMENT ON COLUMN pcsync.sync_runs.customers_named IS
    'Incremental passes: customers fetched because a new activity record named them (records an earlier pass already acted on do not count).';
COMMENT ON COLUMN pcsync.sync_runs.customers_due IS
    'Incremental passes: customers fetched because a subscription''s date came due (the day after a term''s, custom term''s or billing cycle''s end, or a refund window''s close): what Microsoft changes without an activity record. Each customer counts once, under the first of named, due, new, retried.';
COMMENT ON COLUMN pcsync.sync_runs.customers_new IS
    'Incremental passes: customers fetched because they were never synced.';
COMMENT ON COLUMN pcsync.sync_runs.customers_retried IS
    'Incremental passes: customers fetched because their last attempt failed (access not lost).';
COMMENT ON COLUMN pcsync.sync_runs.confirmed_customers IS
    'The customers this pass fetched and stored without error (their data is confirmed as of started_at): incremental passes, and full passes that were interrupted or read an incomplete customer list. Null for a full pass that read the whole list and ended succeeded or partial: it confirms every listed customer except those with a sync_errors row of the pass.';
COMMENT ON COLUMN pcsync.sync_runs.customer_list_complete IS
    'Whether the customer list was read whole (true) or not (false: counts that disagree, a later page that failed, an item that could not be read; nobody was marked as having left, see sync_errors operation read_customer_list). Null for passes before this column and passes that never read the list.';
CREATE INDEX sync_runs_good_full_idx ON pcsync.sync_runs (started_at)
    WHERE kind = 'full' AND status IN ('succeeded', 'partial') AND confirmed_customers IS NULL;

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.renewal_announcements (
    customer_id      uuid        NOT NULL,
    subscription_id  text        NOT NULL,
    ends_on          date        NOT NULL,
    threshold_days   integer     NOT NULL CHECK (threshold_days >= 0),
    kind             text        NOT NULL DEFAULT 'ending' CHECK (kind IN ('ending', 'decision')),
    announced_at     timestamptz NOT NULL,
    run_id           uuid        REFERENCES pcsync.sync_runs (run_id),
    PRIMARY KEY (customer_id, subscription_id, ends_on, threshold_days, kind),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES pcsync.subscriptions (customer_id, subscription_id)
);
COMMENT ON TABLE pcsync.renewal_announcements IS
    'One row per announcement of a subscription ending without auto-renew (each ending, a subscription and end date, when it enters notify.renewal_days and again at 7 days left) or of a renewal decision (once, when it enters notify.decision_days). Written only after the webhook answered 2xx, so a failed delivery is tried again on the next pass.';
COMMENT ON COLUMN pcsync.renewal_announcements.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.renewal_announcements.subscription_id IS 'The subscription (subscriptions.subscription_id).';
COMMENT ON COLUMN pcsync.renewal_announcements.ends_on IS 'The end date announced (subscriptions.commitment_end_date then); a new date is a new ending.';
COMMENT ON COLUMN pcsync.renewal_announcements.threshold_days IS 'The threshold crossed: notify.renewal_days or 7 for an ending, notify.decision_days for a decision.';
COMMENT ON COLUMN pcsync.renewal_announcements.kind IS 'ending (a subscription ending without auto-renew) or decision (a renewal decision, renewal_decisions).';
COMMENT ON COLUMN pcsync.renewal_announcements.announced_at IS 'When the webhook accepted the announcement.';
COMMENT ON COLUMN pcsync.renewal_announcements.run_id IS 'The pass after which it was sent.';

-- ---------------------------------------------------------------------------------------------
-- Views count days from pcsync.clock_now() instead of current_date and now().
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
         THEN coalesce(s.next_term_quantity, s.quantity) ELSE 0 END AS licenses_after_renewal
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
  AND s.commitment_end_date >= pcsync.clock_now()::date
  AND s.status IS DISTINCT FROM 'deleted' AND s.status IS DISTINCT FROM 'expired';
COMMENT ON VIEW pcsync.upcoming_renewals IS
    'Subscriptions whose term ends today or later, soonest first when ordered by ends_on: will they auto-renew, into what and at what quantity (the renewal forecast). Filter on days_left (<= 30, 60, 90) or window_days. days_left counts from today (pcsync.clock_now()) in the session''s time zone. Leaves out removed, untracked, deleted and expired subscriptions and customers that left the list or lost access.';
COMMENT ON COLUMN pcsync.upcoming_renewals.days_left IS 'Days from today (the date of pcsync.clock_now(), normally current_date) to ends_on.';

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
    l.licenses
FROM generate_series(
        date_trunc('month', (SELECT min(valid_from) FROM pcsync.subscription_history)),
        date_trunc('month', pcsync.clock_now()),
        interval '1 month') AS m(month)
CROSS JOIN LATERAL pcsync.license_counts_at(least(m.month + interval '1 month', pcsync.clock_now())) l;
COMMENT ON COLUMN pcsync.license_counts_monthly.as_of IS 'The instant counted: the end of the month, or now (pcsync.clock_now()) for the current month.';

-- A customer's data is confirmed by a good full pass in which it did not fail, and by a good
-- incremental pass that fetched it (sync_runs.confirmed_customers). No per-customer write.
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
    c.access_lost_at
FROM pcsync.customers c
LEFT JOIN LATERAL (
    SELECT r.finished_at
    FROM pcsync.sync_runs r
    WHERE r.kind = 'full' AND r.confirmed_customers IS NULL
      AND r.status IN ('succeeded', 'partial')
      AND r.finished_at >= c.first_seen_at
      AND (c.left_list_at IS NULL OR r.started_at < c.left_list_at)
      AND NOT EXISTS (
          SELECT 1 FROM pcsync.sync_errors e
          WHERE e.run_id = r.run_id AND e.customer_id = c.customer_id)
    ORDER BY r.started_at DESC
    LIMIT 1
) full_pass ON true
LEFT JOIN LATERAL (
    SELECT r.finished_at
    FROM pcsync.sync_runs r
    WHERE r.confirmed_customers IS NOT NULL
      AND r.status IN ('succeeded', 'partial', 'interrupted')
      AND r.started_at >= coalesce(full_pass.finished_at, '-infinity')
      AND c.customer_id = ANY (r.confirmed_customers)
    ORDER BY r.started_at DESC
    LIMIT 1
) incremental ON true
LEFT JOIN LATERAL (
    SELECT e.error_code, e.occurred_at
    FROM pcsync.sync_errors e
    WHERE e.customer_id = c.customer_id
    ORDER BY e.occurred_at DESC
    LIMIT 1
) last_failure ON c.last_status = 'failed';
COMMENT ON COLUMN pcsync.customer_health.last_confirmed_at IS
    'When the customer''s data was last confirmed: the end of the last good full pass over the whole customer list in which it did not fail, or of a later pass that fetched it (sync_runs.confirmed_customers), whichever is newer. Its data is as fresh as this. Null if no pass has synced it yet.';
