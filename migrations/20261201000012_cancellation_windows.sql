-- The windows in which seats can still be returned with a refund, the length of a term, and the
-- announcements of closing windows (issue 16; renewal_decisions is in migration 14).

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

-- renewal_decisions: in migration 14, beside the licence usage it shows.


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
