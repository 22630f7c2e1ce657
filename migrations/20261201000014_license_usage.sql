-- Licence usage (issue 16): seats paid for and unassigned, per customer and SKU, matched to the
-- offers that sell them, with exclusions and an allowance of spare seats that users edit.

CREATE TABLE pcsync.usage_exclusions (
    pattern  text PRIMARY KEY CHECK (pattern <> ''),
    reason   text
);
COMMENT ON TABLE pcsync.usage_exclusions IS
    'One row per SKU part-number pattern left out of unassigned_seats (SQL LIKE, e.g. %_FREE): free, trial and viral SKUs that nobody pays for. Edit it as a member of pcsync_editor.';
COMMENT ON COLUMN pcsync.usage_exclusions.pattern IS 'A LIKE pattern matched against subscribed_skus.sku_part_number.';
COMMENT ON COLUMN pcsync.usage_exclusions.reason IS 'Why it is left out, for the next person.';
INSERT INTO pcsync.usage_exclusions (pattern, reason) VALUES
    ('%_FREE', 'free SKUs (FLOW_FREE, ...)'),
    ('%FREE', 'free SKUs'),
    ('%_TRIAL', 'trials'),
    ('%TRIAL%', 'trials'),
    ('%_VIRAL', 'self-service viral sign-ups'),
    ('POWER_BI_STANDARD', 'Power BI (free)'),
    ('WINDOWS_STORE', 'Windows Store for Business (free)'),
    ('STREAM', 'Microsoft Stream (free)'),
    ('TEAMS_EXPLORATORY', 'Teams Exploratory (free)'),
    ('CCIBOTS_PRIVPREV_VIRAL', 'Power Virtual Agents viral trial'),
    ('MICROSOFT_BUSINESS_CENTER', 'Microsoft Business Center (free)');

CREATE TABLE pcsync.usage_settings (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    spare_seats  integer NOT NULL DEFAULT 0 CHECK (spare_seats >= 0)
);
COMMENT ON TABLE pcsync.usage_settings IS
    'One row: settings of the usage views. Edit it as a member of pcsync_editor.';
COMMENT ON COLUMN pcsync.usage_settings.singleton IS 'Always true: the table has one row.';
COMMENT ON COLUMN pcsync.usage_settings.spare_seats IS 'Unassigned seats per customer and SKU that are fine to keep (new hires); unassigned_seats lists only what is above it.';
INSERT INTO pcsync.usage_settings (singleton, spare_seats) VALUES (true, 0);

CREATE TABLE pcsync.sku_offers (
    sku_part_number  text NOT NULL CHECK (sku_part_number <> ''),
    offer_id         text NOT NULL CHECK (offer_id <> ''),
    PRIMARY KEY (sku_part_number, offer_id)
);
COMMENT ON TABLE pcsync.sku_offers IS
    'One row per SKU part number and the offer that sells it, where Partner Center gives no common key: it wins over every other match in license_usage (match_basis sku_offers). offer_id is a subscription''s offer_id or its new-commerce product_id. Edit it as a member of pcsync_editor.';
COMMENT ON COLUMN pcsync.sku_offers.sku_part_number IS 'As subscribed_skus.sku_part_number (SPE_E3, CFQ7TTC0LH18/0001).';
COMMENT ON COLUMN pcsync.sku_offers.offer_id IS 'As subscriptions.offer_id, or a new-commerce product_id (CFQ7TTC0LH18).';

CREATE VIEW pcsync.license_usage AS
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
    coalesce(m.match_basis, 'unmatched') AS match_basis
FROM pcsync.subscribed_skus k
JOIN pcsync.customers c USING (customer_id)
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
    WHERE s.customer_id = k.customer_id AND s.removed_at IS NULL AND s.untracked_at IS NULL
      AND b.rank IS NOT NULL
    ORDER BY b.rank, s.offer_id
    LIMIT 1
) m ON true
WHERE k.removed_at IS NULL AND c.left_list_at IS NULL AND c.access_lost_at IS NULL;
COMMENT ON VIEW pcsync.license_usage IS
    'One row per customer and SKU of its tenant: licences total, active, assigned (consumed), suspended and in warning, unassigned and over-assigned seats, the share in use, and the offer that sells it where it can be told (match_basis: sku_offers, a row of that table; part_number, a new-commerce PRODUCT/SKU part number naming the offer; product_name, the same name; unmatched; never a guess). Measures may be summed across customers and SKUs; share_in_use may not.';
COMMENT ON COLUMN pcsync.license_usage.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.license_usage.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.license_usage.sku_id IS 'The Entra SKU GUID (subscribed_skus.sku_id).';
COMMENT ON COLUMN pcsync.license_usage.sku_name IS 'The SKU''s name.';
COMMENT ON COLUMN pcsync.license_usage.sku_part_number IS 'The SKU''s part number (SPE_E3, CFQ7TTC0LH18/0001).';
COMMENT ON COLUMN pcsync.license_usage.total_units IS 'Licences the tenant has.';
COMMENT ON COLUMN pcsync.license_usage.active_units IS 'Licences in force.';
COMMENT ON COLUMN pcsync.license_usage.consumed_units IS 'Licences assigned.';
COMMENT ON COLUMN pcsync.license_usage.suspended_units IS 'Licences suspended.';
COMMENT ON COLUMN pcsync.license_usage.warning_units IS 'Licences in their grace period.';
COMMENT ON COLUMN pcsync.license_usage.unassigned IS 'Seats paid for and not assigned: greatest(active - consumed, 0).';
COMMENT ON COLUMN pcsync.license_usage.over_assigned IS 'Seats assigned beyond the active ones: greatest(consumed - active, 0).';
COMMENT ON COLUMN pcsync.license_usage.share_in_use IS 'consumed / active, 0 to 1 (null without active licences); not to be summed.';
COMMENT ON COLUMN pcsync.license_usage.capability_status IS 'As subscribed_skus.capability_status.';
COMMENT ON COLUMN pcsync.license_usage.offer_id IS 'The matched offer (subscriptions.offer_id); null when unmatched.';
COMMENT ON COLUMN pcsync.license_usage.offer_name IS 'The matched offer''s name.';
COMMENT ON COLUMN pcsync.license_usage.match_basis IS 'How the offer was matched: sku_offers, part_number, product_name, or unmatched.';

CREATE VIEW pcsync.unassigned_seats AS
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
    u.match_basis
FROM pcsync.license_usage u
CROSS JOIN pcsync.usage_settings st
WHERE u.unassigned > st.spare_seats
  AND NOT EXISTS (SELECT 1 FROM pcsync.usage_exclusions x WHERE u.sku_part_number LIKE x.pattern);
COMMENT ON VIEW pcsync.unassigned_seats IS
    'One row per customer and SKU with seats worth acting on: more unassigned than usage_settings.spare_seats, SKUs matching a usage_exclusions pattern left out. Most wanted before a renewal: seats can only be reduced at the end of a term. Measures unassigned and unassigned_beyond_spare may be summed.';
COMMENT ON COLUMN pcsync.unassigned_seats.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.unassigned_seats.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.unassigned_seats.sku_id IS 'The Entra SKU GUID.';
COMMENT ON COLUMN pcsync.unassigned_seats.sku_name IS 'The SKU''s name.';
COMMENT ON COLUMN pcsync.unassigned_seats.sku_part_number IS 'The SKU''s part number.';
COMMENT ON COLUMN pcsync.unassigned_seats.active_units IS 'Licences in force.';
COMMENT ON COLUMN pcsync.unassigned_seats.consumed_units IS 'Licences assigned.';
COMMENT ON COLUMN pcsync.unassigned_seats.unassigned IS 'Seats paid for and not assigned.';
COMMENT ON COLUMN pcsync.unassigned_seats.spare_seats IS 'The allowance (usage_settings.spare_seats).';
COMMENT ON COLUMN pcsync.unassigned_seats.unassigned_beyond_spare IS 'unassigned - spare_seats: the seats to decide about.';
COMMENT ON COLUMN pcsync.unassigned_seats.offer_id IS 'The matched offer, as license_usage.';
COMMENT ON COLUMN pcsync.unassigned_seats.offer_name IS 'The matched offer''s name.';
COMMENT ON COLUMN pcsync.unassigned_seats.match_basis IS 'As license_usage.match_basis.';

-- pcsync_editor: writes the three tables users edit, and nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pcsync_editor') THEN
        BEGIN
            CREATE ROLE pcsync_editor NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'pcsync_editor not created: this role may not create roles; see the README section Roles';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pcsync_editor') THEN
        GRANT USAGE ON SCHEMA pcsync TO pcsync_editor;
        GRANT SELECT, INSERT, UPDATE, DELETE
            ON pcsync.usage_exclusions, pcsync.usage_settings, pcsync.sku_offers TO pcsync_editor;
        GRANT SELECT ON pcsync.license_usage, pcsync.unassigned_seats TO pcsync_editor;
    END IF;
END
$$;

-- What to decide before a term renews (terms longer than a month), with the matched SKU's
-- unassigned seats: the number to look at before the date (seats can only be reduced at the end
-- of a term).
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
    s.refundable_quantity,
    u.sku_part_number,
    u.unassigned AS unassigned_seats,
    (u.sku_id IS NOT NULL AND row_number() OVER (
        PARTITION BY s.customer_id, u.sku_id ORDER BY s.commitment_end_date, s.subscription_id) = 1)
        AS unassigned_counted
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
LEFT JOIN pcsync.license_usage u ON u.customer_id = s.customer_id AND u.offer_id = s.offer_id
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
COMMENT ON COLUMN pcsync.renewal_decisions.sku_part_number IS 'The SKU matched to the offer (license_usage), when one is.';
COMMENT ON COLUMN pcsync.renewal_decisions.unassigned_seats IS 'The matched SKU''s unassigned seats now (license_usage.unassigned); repeated on every decision of the same customer and SKU: sum it only where unassigned_counted.';
COMMENT ON COLUMN pcsync.renewal_decisions.unassigned_counted IS 'True on one decision per customer and SKU (the soonest): sum unassigned_seats over these rows only.';
