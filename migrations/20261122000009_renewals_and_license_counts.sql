-- Views for the questions finance and operations ask: what renews or ends soon, and how many
-- licenses a customer had of an offer on a given day or month.

CREATE VIEW pcsync.upcoming_renewals AS
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
    s.commitment_end_date - current_date AS days_left,
    CASE
        WHEN s.commitment_end_date - current_date <= 30 THEN '0-30'
        WHEN s.commitment_end_date - current_date <= 60 THEN '31-60'
        WHEN s.commitment_end_date - current_date <= 90 THEN '61-90'
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
  AND s.commitment_end_date >= current_date
  AND s.status IS DISTINCT FROM 'deleted' AND s.status IS DISTINCT FROM 'expired';
COMMENT ON VIEW pcsync.upcoming_renewals IS
    'Subscriptions whose term ends today or later, soonest first when ordered by ends_on: will they auto-renew, into what and at what quantity (the renewal forecast). Filter on days_left (<= 30, 60, 90) or window_days. days_left counts from current_date in the session''s time zone. Leaves out removed, untracked, deleted and expired subscriptions and customers that left the list or lost access.';
COMMENT ON COLUMN pcsync.upcoming_renewals.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.upcoming_renewals.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.upcoming_renewals.subscription_id IS 'As subscriptions.subscription_id.';
COMMENT ON COLUMN pcsync.upcoming_renewals.offer_id IS 'As subscriptions.offer_id.';
COMMENT ON COLUMN pcsync.upcoming_renewals.offer_name IS 'As subscriptions.offer_name.';
COMMENT ON COLUMN pcsync.upcoming_renewals.friendly_name IS 'As subscriptions.friendly_name.';
COMMENT ON COLUMN pcsync.upcoming_renewals.product_id IS 'As subscriptions.product_id (new commerce).';
COMMENT ON COLUMN pcsync.upcoming_renewals.status IS 'As subscriptions.status.';
COMMENT ON COLUMN pcsync.upcoming_renewals.quantity IS 'Licenses now (subscriptions.quantity).';
COMMENT ON COLUMN pcsync.upcoming_renewals.term_duration IS 'The current term (P1M, P1Y, P3Y).';
COMMENT ON COLUMN pcsync.upcoming_renewals.billing_cycle IS 'The current billing cycle.';
COMMENT ON COLUMN pcsync.upcoming_renewals.ends_on IS 'The day the current term ends (subscriptions.commitment_end_date).';
COMMENT ON COLUMN pcsync.upcoming_renewals.days_left IS 'Days from today (current_date) to ends_on.';
COMMENT ON COLUMN pcsync.upcoming_renewals.window_days IS 'The window ends_on falls in: 0-30, 31-60, 61-90 or later.';
COMMENT ON COLUMN pcsync.upcoming_renewals.auto_renews IS 'True when auto-renew is on; false (also when unknown) means the subscription ends on ends_on unless someone acts.';
COMMENT ON COLUMN pcsync.upcoming_renewals.renewal_term_duration IS 'As subscriptions.renewal_term_duration: the term it renews into.';
COMMENT ON COLUMN pcsync.upcoming_renewals.next_term_product_id IS 'Scheduled next term: the product it renews into (null: the same).';
COMMENT ON COLUMN pcsync.upcoming_renewals.next_term_sku_id IS 'Scheduled next term: the SKU it renews into.';
COMMENT ON COLUMN pcsync.upcoming_renewals.next_term_availability_id IS 'Scheduled next term: the availability it renews into.';
COMMENT ON COLUMN pcsync.upcoming_renewals.next_term_billing_cycle IS 'Scheduled next term: the billing cycle after renewal.';
COMMENT ON COLUMN pcsync.upcoming_renewals.next_term_duration IS 'Scheduled next term: the term after renewal.';
COMMENT ON COLUMN pcsync.upcoming_renewals.next_term_quantity IS 'Scheduled next term: licenses after renewal (null: no change scheduled).';
COMMENT ON COLUMN pcsync.upcoming_renewals.licenses_after_renewal IS 'The forecast: licenses after ends_on, 0 when it does not auto-renew, the scheduled quantity when one is set, else the current quantity.';

CREATE FUNCTION pcsync.license_counts_at(at timestamptz)
RETURNS TABLE (
    customer_id uuid,
    company_name text,
    offer_id text,
    offer_name text,
    product_id text,
    status text,
    subscriptions integer,
    licenses bigint
)
LANGUAGE sql STABLE
AS $$
    SELECT h.customer_id, c.company_name, h.offer_id, h.offer_name, h.product_id, h.status,
           count(*)::integer, coalesce(sum(h.quantity), 0)::bigint
    FROM pcsync.subscription_history h
    JOIN pcsync.customers c ON c.customer_id = h.customer_id
    WHERE h.valid_from <= at AND (h.valid_to IS NULL OR h.valid_to > at)
      AND h.status IS DISTINCT FROM 'deleted'
    GROUP BY h.customer_id, c.company_name, h.offer_id, h.offer_name, h.product_id, h.status
$$;
COMMENT ON FUNCTION pcsync.license_counts_at(timestamptz) IS
    'Subscriptions and licenses per customer, offer and status as pcsync knew them at the instant given, from subscription_history: SELECT * FROM pcsync.license_counts_at(''2026-03-01'') WHERE company_name = ''Contoso''. Deleted subscriptions are not counted; subscriptions removed or untracked before the instant are not there.';

CREATE VIEW pcsync.license_counts_monthly AS
SELECT
    m.month::date AS month,
    least(m.month + interval '1 month', now()) AS as_of,
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
        date_trunc('month', now()),
        interval '1 month') AS m(month)
CROSS JOIN LATERAL pcsync.license_counts_at(least(m.month + interval '1 month', now())) l;
COMMENT ON VIEW pcsync.license_counts_monthly IS
    'Licenses per month, customer, offer and status at the end of each month (now for the current month), from the first month pcsync recorded: licenses over time for a chart. Filter on month and customer.';
COMMENT ON COLUMN pcsync.license_counts_monthly.month IS 'The month (its first day).';
COMMENT ON COLUMN pcsync.license_counts_monthly.as_of IS 'The instant counted: the end of the month, or now for the current month.';
COMMENT ON COLUMN pcsync.license_counts_monthly.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.license_counts_monthly.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.license_counts_monthly.offer_id IS 'The offer (subscription_history.offer_id).';
COMMENT ON COLUMN pcsync.license_counts_monthly.offer_name IS 'The offer''s name.';
COMMENT ON COLUMN pcsync.license_counts_monthly.product_id IS 'The new-commerce product of the offer.';
COMMENT ON COLUMN pcsync.license_counts_monthly.status IS 'Subscription status then (active, suspended, ...).';
COMMENT ON COLUMN pcsync.license_counts_monthly.subscriptions IS 'How many subscriptions.';
COMMENT ON COLUMN pcsync.license_counts_monthly.licenses IS 'Their quantities added up.';
