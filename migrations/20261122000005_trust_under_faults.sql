-- Trust under faults (issue 9): runs that were killed are closed as abandoned; subscriptions
-- outside the partner filter asked for are untracked, never "removed"; second looks before a
-- mass removal are counted.

-- A pass killed outright (OOM, node loss) leaves its row 'running'; the next pass closes it.
ALTER TABLE pcsync.sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE pcsync.sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted', 'abandoned'));
COMMENT ON COLUMN pcsync.sync_runs.status IS
    'running; succeeded (every customer synced); partial (some customers failed, see sync_errors); failed (the pass could not proceed, see error); interrupted (stopped by a signal; customers finished before the signal are committed, the others untouched); abandoned (the process ended without closing its run, e.g. killed; closed by the next pass, see error).';

ALTER TABLE pcsync.sync_runs ADD COLUMN second_looks integer NOT NULL DEFAULT 0
    CHECK (second_looks >= 0);
COMMENT ON COLUMN pcsync.sync_runs.second_looks IS
    'Customers fetched a second time because one answer would have removed more than half of their subscriptions (and at least 2); the removals were applied only when both answers agreed.';

-- A fetch with ?mpn_id=X proves nothing about another partner's subscriptions.
ALTER TABLE pcsync.subscriptions ADD COLUMN untracked_at timestamptz;
COMMENT ON COLUMN pcsync.subscriptions.untracked_at IS
    'When the customer''s partner filter (customers.mpn_id) changed so that this subscription''s partner is no longer fetched: pcsync stopped tracking it (it was not removed in Partner Center; see change kind untracked). Null while tracked. Reporting views leave untracked rows out.';
COMMENT ON COLUMN pcsync.subscriptions.removed_at IS
    'When a complete fetch of the customer, for the subscription''s partner, no longer returned it; null while present.';

ALTER TABLE pcsync.change_events DROP CONSTRAINT change_events_kind_check;
ALTER TABLE pcsync.change_events ADD CONSTRAINT change_events_kind_check
    CHECK (kind IN ('added', 'removed', 'changed', 'untracked', 'tracked'));
COMMENT ON COLUMN pcsync.change_events.kind IS
    'added (new, or back after a removal), removed (no longer returned by a complete fetch for its partner), changed (one field, named in field), untracked (the partner filter no longer covers it: pcsync stops following it, it was not removed), tracked (covered by the partner filter again).';

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
    c.last_success_at AS data_as_of
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL;
COMMENT ON VIEW pcsync.current_subscriptions IS
    'Subscriptions Partner Center returned at the last complete sync of their customer, with the customer''s name. Leaves out removed and untracked subscriptions (another partner''s, after a change of the partner filter). The starting point for most reports.';

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
GROUP BY s.customer_id, c.company_name, s.offer_id, s.offer_name, s.status;
COMMENT ON VIEW pcsync.license_totals IS
    'Present, tracked subscriptions and licenses per customer, offer and status: what a customer has, in one row per product. Removed and untracked subscriptions are left out.';
