-- What to decide before a term renews, and the windows in which seats can still be returned
-- (issue 16, first step: from the subscriptions pcsync already stores).

-- The length of a term in months: P1M → 1, P1Y → 12, P3Y → 36; null when it does not read.
CREATE FUNCTION pcsync.term_months(term text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN upper(term) ~ '^P[0-9]{1,3}M$' THEN substring(upper(term) FROM 2 FOR length(term) - 2)::integer
        WHEN upper(term) ~ '^P[0-9]{1,2}Y$' THEN 12 * substring(upper(term) FROM 2 FOR length(term) - 2)::integer
    END
$$;
COMMENT ON FUNCTION pcsync.term_months(text) IS
    'The length of an ISO 8601 term (subscriptions.term_duration) in months: P1M = 1, P1Y = 12, P3Y = 36; null for an empty or unreadable term.';

CREATE VIEW pcsync.renewal_decisions AS
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
    s.refundable_quantity
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (customer_id)
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
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL
  AND s.status IN ('active', 'suspended')
  AND pcsync.term_months(s.term_duration) > 1
  AND s.commitment_end_date >= pcsync.clock_now()::date
  AND s.commitment_end_date <= pcsync.clock_now()::date + 90;
COMMENT ON VIEW pcsync.renewal_decisions IS
    'One row per subscription with a term longer than a month (annual, triennial) that ends within 90 days: the decision to take before the date passes (after it, the customer is committed for another term; seats can only be reduced at the end of a term). Monthly terms, which roll over every month, are left out. Measures licenses and licenses_next_term may be summed. Leaves out removed, untracked, deleted and expired subscriptions and customers that left the list or lost access.';
COMMENT ON COLUMN pcsync.renewal_decisions.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.renewal_decisions.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.renewal_decisions.subscription_id IS 'As subscriptions.subscription_id.';
COMMENT ON COLUMN pcsync.renewal_decisions.offer_id IS 'As subscriptions.offer_id.';
COMMENT ON COLUMN pcsync.renewal_decisions.offer_name IS 'As subscriptions.offer_name.';
COMMENT ON COLUMN pcsync.renewal_decisions.friendly_name IS 'As subscriptions.friendly_name.';
COMMENT ON COLUMN pcsync.renewal_decisions.product_id IS 'The new-commerce product of the offer (subscriptions.product_id).';
COMMENT ON COLUMN pcsync.renewal_decisions.sku_id IS 'The new-commerce SKU of the offer (subscriptions.sku_id).';
COMMENT ON COLUMN pcsync.renewal_decisions.status IS 'active or suspended.';
COMMENT ON COLUMN pcsync.renewal_decisions.term_duration IS 'The current term (P1Y, P3Y, ...).';
COMMENT ON COLUMN pcsync.renewal_decisions.billing_cycle IS 'The current billing cycle.';
COMMENT ON COLUMN pcsync.renewal_decisions.ends_on IS 'The last day of the current term (subscriptions.commitment_end_date).';
COMMENT ON COLUMN pcsync.renewal_decisions.days_left IS 'Days from today (pcsync.clock_now()) to ends_on.';
COMMENT ON COLUMN pcsync.renewal_decisions.decision IS
    'renews (auto-renew on, nothing scheduled to change), renews with changes (the scheduled next term differs in product, SKU, term, billing cycle or quantity), or ends (auto-renew off: the subscription ends on ends_on unless someone acts).';
COMMENT ON COLUMN pcsync.renewal_decisions.licenses IS 'Licenses now (subscriptions.quantity).';
COMMENT ON COLUMN pcsync.renewal_decisions.licenses_next_term IS 'Licenses after ends_on: 0 when it ends, the scheduled quantity when one is set, else the current quantity.';
COMMENT ON COLUMN pcsync.renewal_decisions.next_term_product_id IS 'Scheduled next term: the product (null: the same).';
COMMENT ON COLUMN pcsync.renewal_decisions.next_term_sku_id IS 'Scheduled next term: the SKU (null: the same).';
COMMENT ON COLUMN pcsync.renewal_decisions.next_term_duration IS 'Scheduled next term: the term (null: the same).';
COMMENT ON COLUMN pcsync.renewal_decisions.next_term_billing_cycle IS 'Scheduled next term: the billing cycle (null: the same).';
COMMENT ON COLUMN pcsync.renewal_decisions.next_term_quantity IS 'Scheduled next term: the quantity (null: the same).';
COMMENT ON COLUMN pcsync.renewal_decisions.refundable_quantity IS 'Seats that can still be returned with a refund now (see cancellation_windows).';

CREATE VIEW pcsync.cancellation_windows AS
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
  AND w.allowed_until > pcsync.clock_now();
COMMENT ON VIEW pcsync.cancellation_windows IS
    'One row per open refund window (subscriptions.refundable_quantity_details entry): seats of a new-commerce purchase, renewal or increase that can still be reduced or cancelled with a refund, and until when. After allowed_until, seats can only be cut at the end of the term. Measures refundable_quantity may be summed; hours_left may not.';
COMMENT ON COLUMN pcsync.cancellation_windows.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.cancellation_windows.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.cancellation_windows.subscription_id IS 'As subscriptions.subscription_id.';
COMMENT ON COLUMN pcsync.cancellation_windows.offer_id IS 'As subscriptions.offer_id.';
COMMENT ON COLUMN pcsync.cancellation_windows.offer_name IS 'As subscriptions.offer_name.';
COMMENT ON COLUMN pcsync.cancellation_windows.friendly_name IS 'As subscriptions.friendly_name.';
COMMENT ON COLUMN pcsync.cancellation_windows.licenses IS 'Licenses of the subscription now.';
COMMENT ON COLUMN pcsync.cancellation_windows.refundable_quantity IS 'Seats this window lets you return with a refund (details[].quantity).';
COMMENT ON COLUMN pcsync.cancellation_windows.allowed_until IS 'When the window closes (details[].allowedUntilDateTime).';
COMMENT ON COLUMN pcsync.cancellation_windows.hours_left IS 'Hours from now (pcsync.clock_now()) until allowed_until, one decimal.';

CREATE TABLE pcsync.cancellation_window_announcements (
    customer_id      uuid        NOT NULL,
    subscription_id  text        NOT NULL,
    allowed_until    timestamptz NOT NULL,
    announced_at     timestamptz NOT NULL,
    run_id           uuid        REFERENCES pcsync.sync_runs (run_id),
    PRIMARY KEY (customer_id, subscription_id, allowed_until),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES pcsync.subscriptions (customer_id, subscription_id)
);
COMMENT ON TABLE pcsync.cancellation_window_announcements IS
    'One row per refund window announced to the webhook as closing within 24 hours (once each). Written only after the webhook answered 2xx.';
COMMENT ON COLUMN pcsync.cancellation_window_announcements.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.cancellation_window_announcements.subscription_id IS 'The subscription (subscriptions.subscription_id).';
COMMENT ON COLUMN pcsync.cancellation_window_announcements.allowed_until IS 'When the window closes (cancellation_windows.allowed_until).';
COMMENT ON COLUMN pcsync.cancellation_window_announcements.announced_at IS 'When the webhook accepted the announcement.';
COMMENT ON COLUMN pcsync.cancellation_window_announcements.run_id IS 'The pass after which it was sent.';
