-- Reporting schema v2 (issue 10): a column for every field the seed pages and the Subscription
-- resource show, dates as `date`, the parts of a new-commerce offer id, and the JSON paths of a
-- change only inside `raw`. Existing rows are filled from their raw JSON the way pcsync reads it,
-- so the first pass after the upgrade reports no change that did not happen.

-- Dates that carry no time of day become `date`: every time zone reads the same day. Views that
-- show them are made again below.
DROP VIEW pcsync.current_subscriptions;
ALTER TABLE pcsync.subscriptions
    ALTER COLUMN effective_start_date TYPE date USING (effective_start_date AT TIME ZONE 'UTC')::date,
    ALTER COLUMN commitment_end_date TYPE date USING (commitment_end_date AT TIME ZONE 'UTC')::date;
ALTER TABLE pcsync.subscription_history
    ALTER COLUMN effective_start_date TYPE date USING (effective_start_date AT TIME ZONE 'UTC')::date,
    ALTER COLUMN commitment_end_date TYPE date USING (commitment_end_date AT TIME ZONE 'UTC')::date;
COMMENT ON COLUMN pcsync.subscriptions.effective_start_date IS 'effectiveStartDate: the day the current term started.';
COMMENT ON COLUMN pcsync.subscriptions.commitment_end_date IS 'commitmentEndDate: the day the current term ends (renews or expires); commitment_end_date_time has the instant.';

ALTER TABLE pcsync.subscriptions
    ADD COLUMN billing_cycle_end_date date,
    ADD COLUMN commitment_end_date_time timestamptz,
    ADD COLUMN refundable_quantity bigint,
    ADD COLUMN refundable_quantity_details jsonb,
    ADD COLUMN attention_needed boolean,
    ADD COLUMN action_taken boolean,
    ADD COLUMN has_purchasable_addons boolean,
    ADD COLUMN is_microsoft_product boolean,
    ADD COLUMN scheduled_next_term jsonb,
    ADD COLUMN next_term_product_id text,
    ADD COLUMN next_term_sku_id text,
    ADD COLUMN next_term_availability_id text,
    ADD COLUMN next_term_billing_cycle text,
    ADD COLUMN next_term_duration text,
    ADD COLUMN next_term_quantity bigint,
    ADD COLUMN parent_subscription_id text,
    ADD COLUMN entitlement_id text,
    ADD COLUMN promotion_id text,
    ADD COLUMN custom_term_end_date date,
    ADD COLUMN suspension_reasons text[];
ALTER TABLE pcsync.subscriptions
    ADD COLUMN product_id text GENERATED ALWAYS AS (CASE WHEN offer_id ~ '^[^:]+:[^:]+:[^:]+$' THEN split_part(offer_id, ':', 1) END) STORED,
    ADD COLUMN sku_id text GENERATED ALWAYS AS (CASE WHEN offer_id ~ '^[^:]+:[^:]+:[^:]+$' THEN split_part(offer_id, ':', 2) END) STORED,
    ADD COLUMN availability_id text GENERATED ALWAYS AS (CASE WHEN offer_id ~ '^[^:]+:[^:]+:[^:]+$' THEN split_part(offer_id, ':', 3) END) STORED;
ALTER TABLE pcsync.subscription_history
    ADD COLUMN billing_cycle_end_date date,
    ADD COLUMN commitment_end_date_time timestamptz,
    ADD COLUMN refundable_quantity bigint,
    ADD COLUMN refundable_quantity_details jsonb,
    ADD COLUMN attention_needed boolean,
    ADD COLUMN action_taken boolean,
    ADD COLUMN has_purchasable_addons boolean,
    ADD COLUMN is_microsoft_product boolean,
    ADD COLUMN scheduled_next_term jsonb,
    ADD COLUMN next_term_product_id text,
    ADD COLUMN next_term_sku_id text,
    ADD COLUMN next_term_availability_id text,
    ADD COLUMN next_term_billing_cycle text,
    ADD COLUMN next_term_duration text,
    ADD COLUMN next_term_quantity bigint,
    ADD COLUMN parent_subscription_id text,
    ADD COLUMN entitlement_id text,
    ADD COLUMN promotion_id text,
    ADD COLUMN custom_term_end_date date,
    ADD COLUMN suspension_reasons text[];
ALTER TABLE pcsync.subscription_history
    ADD COLUMN product_id text GENERATED ALWAYS AS (CASE WHEN offer_id ~ '^[^:]+:[^:]+:[^:]+$' THEN split_part(offer_id, ':', 1) END) STORED,
    ADD COLUMN sku_id text GENERATED ALWAYS AS (CASE WHEN offer_id ~ '^[^:]+:[^:]+:[^:]+$' THEN split_part(offer_id, ':', 2) END) STORED,
    ADD COLUMN availability_id text GENERATED ALWAYS AS (CASE WHEN offer_id ~ '^[^:]+:[^:]+:[^:]+$' THEN split_part(offer_id, ':', 3) END) STORED;
COMMENT ON COLUMN pcsync.subscriptions.billing_cycle_end_date IS 'billingCycleEndDate: the day the current billing period ends.';
COMMENT ON COLUMN pcsync.subscription_history.billing_cycle_end_date IS 'As subscriptions.billing_cycle_end_date, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.commitment_end_date_time IS 'commitmentEndDateTime: the instant the current term ends (commitment_end_date is its day).';
COMMENT ON COLUMN pcsync.subscription_history.commitment_end_date_time IS 'As subscriptions.commitment_end_date_time, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.refundable_quantity IS 'refundableQuantity.totalQuantity: licenses that may still be returned for a refund.';
COMMENT ON COLUMN pcsync.subscription_history.refundable_quantity IS 'As subscriptions.refundable_quantity, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.refundable_quantity_details IS 'refundableQuantity.details: per purchase, the quantity refundable and until when (allowedUntilDateTime).';
COMMENT ON COLUMN pcsync.subscription_history.refundable_quantity_details IS 'As subscriptions.refundable_quantity_details, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.attention_needed IS 'attentionNeeded: Partner Center flags the subscription for the partner''s attention.';
COMMENT ON COLUMN pcsync.subscription_history.attention_needed IS 'As subscriptions.attention_needed, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.action_taken IS 'actionTaken: the partner acted on attentionNeeded.';
COMMENT ON COLUMN pcsync.subscription_history.action_taken IS 'As subscriptions.action_taken, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.has_purchasable_addons IS 'hasPurchasableAddons: add-ons can be bought for it.';
COMMENT ON COLUMN pcsync.subscription_history.has_purchasable_addons IS 'As subscriptions.has_purchasable_addons, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.is_microsoft_product IS 'isMicrosoftProduct: a Microsoft first-party product (false for third-party offers).';
COMMENT ON COLUMN pcsync.subscription_history.is_microsoft_product IS 'As subscriptions.is_microsoft_product, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.scheduled_next_term IS 'scheduledNextTermInstructions as sent: what the subscription renews into (product, quantity, custom term end). The renewal forecast; its parts are in the next_term_* columns.';
COMMENT ON COLUMN pcsync.subscription_history.scheduled_next_term IS 'As subscriptions.scheduled_next_term, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.next_term_product_id IS 'scheduledNextTermInstructions.product.productId: the product it renews into.';
COMMENT ON COLUMN pcsync.subscription_history.next_term_product_id IS 'As subscriptions.next_term_product_id, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.next_term_sku_id IS 'scheduledNextTermInstructions.product.skuId: the SKU it renews into.';
COMMENT ON COLUMN pcsync.subscription_history.next_term_sku_id IS 'As subscriptions.next_term_sku_id, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.next_term_availability_id IS 'scheduledNextTermInstructions.product.availabilityId: the availability it renews into.';
COMMENT ON COLUMN pcsync.subscription_history.next_term_availability_id IS 'As subscriptions.next_term_availability_id, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.next_term_billing_cycle IS 'scheduledNextTermInstructions.product.billingCycle: the billing cycle after renewal.';
COMMENT ON COLUMN pcsync.subscription_history.next_term_billing_cycle IS 'As subscriptions.next_term_billing_cycle, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.next_term_duration IS 'scheduledNextTermInstructions.product.termDuration: the term after renewal (P1M, P1Y, P3Y).';
COMMENT ON COLUMN pcsync.subscription_history.next_term_duration IS 'As subscriptions.next_term_duration, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.next_term_quantity IS 'scheduledNextTermInstructions.quantity: licenses after renewal.';
COMMENT ON COLUMN pcsync.subscription_history.next_term_quantity IS 'As subscriptions.next_term_quantity, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.parent_subscription_id IS 'parentSubscriptionId: for an add-on, the base subscription it belongs to.';
COMMENT ON COLUMN pcsync.subscription_history.parent_subscription_id IS 'As subscriptions.parent_subscription_id, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.entitlement_id IS 'entitlementId: the entitlement behind the subscription.';
COMMENT ON COLUMN pcsync.subscription_history.entitlement_id IS 'As subscriptions.entitlement_id, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.promotion_id IS 'promotionId: the promotion applied, if any.';
COMMENT ON COLUMN pcsync.subscription_history.promotion_id IS 'As subscriptions.promotion_id, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.custom_term_end_date IS 'customTermEndDate: a term end chosen to align with other subscriptions (co-terminosity).';
COMMENT ON COLUMN pcsync.subscription_history.custom_term_end_date IS 'As subscriptions.custom_term_end_date, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.suspension_reasons IS 'suspensionReasons: why the subscription is suspended (e.g. CustomerCancellation).';
COMMENT ON COLUMN pcsync.subscription_history.suspension_reasons IS 'As subscriptions.suspension_reasons, in this version (null in versions recorded before pcsync kept it).';
COMMENT ON COLUMN pcsync.subscriptions.product_id IS 'The product of a new-commerce offer_id (PRODUCT:SKU:AVAILABILITY), to join price lists; null for legacy GUID offers.';
COMMENT ON COLUMN pcsync.subscription_history.product_id IS 'As subscriptions.product_id, in this version.';
COMMENT ON COLUMN pcsync.subscriptions.sku_id IS 'The SKU of a new-commerce offer_id; null for legacy offers.';
COMMENT ON COLUMN pcsync.subscription_history.sku_id IS 'As subscriptions.sku_id, in this version.';
COMMENT ON COLUMN pcsync.subscriptions.availability_id IS 'The availability of a new-commerce offer_id; null for legacy offers.';
COMMENT ON COLUMN pcsync.subscription_history.availability_id IS 'As subscriptions.availability_id, in this version.';
CREATE INDEX subscriptions_product_id_idx ON pcsync.subscriptions (product_id);
CREATE INDEX subscriptions_upcoming_end_idx ON pcsync.subscriptions (commitment_end_date)
    WHERE removed_at IS NULL AND untracked_at IS NULL;

ALTER TABLE pcsync.change_events ADD COLUMN json_paths text[];
COMMENT ON COLUMN pcsync.change_events.json_paths IS
    'For field = raw (a change only inside the raw JSON, in a field without a column of its own): the JSON paths that changed, e.g. {links.self.uri}; old_value and new_value then hold a JSON object of path to value.';
COMMENT ON COLUMN pcsync.change_events.field IS
    'For kind = changed: the column that changed, e.g. status, quantity, commitment_end_date; raw when only fields without a column changed (see json_paths); null otherwise.';

-- Existing rows: the new columns from raw, read as pcsync reads them (empty strings and JSON
-- null are no value; a value of the wrong type is left empty).
CREATE FUNCTION pg_temp.pcsync_text(v jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'string' AND btrim(v #>> '{}') <> '' THEN v #>> '{}'
                WHEN jsonb_typeof(v) = 'number' THEN v #>> '{}' END $$;
CREATE FUNCTION pg_temp.pcsync_integer(v jsonb) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number' AND (v #>> '{}') ~ '^-?[0-9]+(\.0+)?$'
                THEN trunc((v #>> '{}')::numeric)::bigint
                WHEN jsonb_typeof(v) = 'string' AND btrim(v #>> '{}') ~ '^[+-]?[0-9]{1,18}$'
                THEN btrim(v #>> '{}')::bigint END $$;
CREATE FUNCTION pg_temp.pcsync_boolean(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'boolean' THEN (v #>> '{}')::boolean
                WHEN jsonb_typeof(v) = 'string' AND lower(btrim(v #>> '{}')) IN ('true', 'false')
                THEN lower(btrim(v #>> '{}'))::boolean END $$;
-- ISO 8601 as pcsync reads it: beyond microseconds digits are cut (not rounded); no offset is UTC.
CREATE FUNCTION pg_temp.pcsync_timestamp(v jsonb) RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE t text := btrim(v #>> '{}');
BEGIN
    IF jsonb_typeof(v) <> 'string' OR t = '' THEN RETURN NULL; END IF;
    t := regexp_replace(t, '(\.[0-9]{6})[0-9]+', '\1');
    IF t ~ '(Z|z|[+-][0-9]{2}:?[0-9]{2})$' THEN RETURN t::timestamptz; END IF;
    RETURN t::timestamp AT TIME ZONE 'UTC';
EXCEPTION WHEN others THEN RETURN NULL;
END $$;
CREATE FUNCTION pg_temp.pcsync_date(v jsonb) RETURNS date LANGUAGE sql IMMUTABLE AS $$
    SELECT (pg_temp.pcsync_timestamp(v) AT TIME ZONE 'UTC')::date $$;
CREATE FUNCTION pg_temp.pcsync_json(v jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
                WHEN jsonb_typeof(v) = 'string' AND btrim(v #>> '{}') = '' THEN NULL
                ELSE v END $$;
CREATE FUNCTION pg_temp.pcsync_text_list(v jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'array'
                THEN ARRAY(SELECT jsonb_array_elements_text(v)) END $$;

-- backfill: begin
UPDATE pcsync.subscriptions SET
    billing_cycle_end_date = pg_temp.pcsync_date(raw #> '{billingCycleEndDate}'),
    commitment_end_date_time = pg_temp.pcsync_timestamp(raw #> '{commitmentEndDateTime}'),
    refundable_quantity = pg_temp.pcsync_integer(raw #> '{refundableQuantity,totalQuantity}'),
    refundable_quantity_details = pg_temp.pcsync_json(raw #> '{refundableQuantity,details}'),
    attention_needed = pg_temp.pcsync_boolean(raw #> '{attentionNeeded}'),
    action_taken = pg_temp.pcsync_boolean(raw #> '{actionTaken}'),
    has_purchasable_addons = pg_temp.pcsync_boolean(raw #> '{hasPurchasableAddons}'),
    is_microsoft_product = pg_temp.pcsync_boolean(raw #> '{isMicrosoftProduct}'),
    scheduled_next_term = pg_temp.pcsync_json(raw #> '{scheduledNextTermInstructions}'),
    next_term_product_id = pg_temp.pcsync_text(raw #> '{scheduledNextTermInstructions,product,productId}'),
    next_term_sku_id = pg_temp.pcsync_text(raw #> '{scheduledNextTermInstructions,product,skuId}'),
    next_term_availability_id = pg_temp.pcsync_text(raw #> '{scheduledNextTermInstructions,product,availabilityId}'),
    next_term_billing_cycle = pg_temp.pcsync_text(raw #> '{scheduledNextTermInstructions,product,billingCycle}'),
    next_term_duration = pg_temp.pcsync_text(raw #> '{scheduledNextTermInstructions,product,termDuration}'),
    next_term_quantity = pg_temp.pcsync_integer(raw #> '{scheduledNextTermInstructions,quantity}'),
    parent_subscription_id = pg_temp.pcsync_text(raw #> '{parentSubscriptionId}'),
    entitlement_id = pg_temp.pcsync_text(raw #> '{entitlementId}'),
    promotion_id = pg_temp.pcsync_text(raw #> '{promotionId}'),
    custom_term_end_date = pg_temp.pcsync_date(raw #> '{customTermEndDate}'),
    suspension_reasons = pg_temp.pcsync_text_list(raw #> '{suspensionReasons}');
-- backfill: end

DROP FUNCTION pg_temp.pcsync_date(jsonb), pg_temp.pcsync_timestamp(jsonb), pg_temp.pcsync_text(jsonb),
    pg_temp.pcsync_integer(jsonb), pg_temp.pcsync_boolean(jsonb), pg_temp.pcsync_json(jsonb),
    pg_temp.pcsync_text_list(jsonb);

CREATE VIEW pcsync.current_subscriptions AS
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
    s.suspension_reasons
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (customer_id)
JOIN pcsync.customer_health h USING (customer_id)
WHERE s.removed_at IS NULL AND s.untracked_at IS NULL
  AND c.left_list_at IS NULL AND c.access_lost_at IS NULL;
COMMENT ON VIEW pcsync.current_subscriptions IS
    'Subscriptions Partner Center returned at the last complete sync of their customer, with the customer''s name and every field. Leaves out removed and untracked subscriptions, and customers that left the customer list or lost their relationship with the partner (see customer_health). The starting point for most reports.';
COMMENT ON COLUMN pcsync.current_subscriptions.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.current_subscriptions.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.current_subscriptions.domain IS 'The customer''s primary domain, when known.';
COMMENT ON COLUMN pcsync.current_subscriptions.data_as_of IS
    'When the customer''s data was last confirmed by a pass (customer_health.last_confirmed_at): the row is as fresh as this.';
COMMENT ON COLUMN pcsync.current_subscriptions.subscription_id IS 'As subscriptions.subscription_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.offer_id IS 'As subscriptions.offer_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.offer_name IS 'As subscriptions.offer_name.';
COMMENT ON COLUMN pcsync.current_subscriptions.friendly_name IS 'As subscriptions.friendly_name.';
COMMENT ON COLUMN pcsync.current_subscriptions.quantity IS 'As subscriptions.quantity.';
COMMENT ON COLUMN pcsync.current_subscriptions.unit_type IS 'As subscriptions.unit_type.';
COMMENT ON COLUMN pcsync.current_subscriptions.status IS 'As subscriptions.status.';
COMMENT ON COLUMN pcsync.current_subscriptions.auto_renew_enabled IS 'As subscriptions.auto_renew_enabled.';
COMMENT ON COLUMN pcsync.current_subscriptions.is_trial IS 'As subscriptions.is_trial.';
COMMENT ON COLUMN pcsync.current_subscriptions.billing_type IS 'As subscriptions.billing_type.';
COMMENT ON COLUMN pcsync.current_subscriptions.billing_cycle IS 'As subscriptions.billing_cycle.';
COMMENT ON COLUMN pcsync.current_subscriptions.term_duration IS 'As subscriptions.term_duration.';
COMMENT ON COLUMN pcsync.current_subscriptions.renewal_term_duration IS 'As subscriptions.renewal_term_duration.';
COMMENT ON COLUMN pcsync.current_subscriptions.creation_date IS 'As subscriptions.creation_date.';
COMMENT ON COLUMN pcsync.current_subscriptions.effective_start_date IS 'As subscriptions.effective_start_date.';
COMMENT ON COLUMN pcsync.current_subscriptions.commitment_end_date IS 'As subscriptions.commitment_end_date.';
COMMENT ON COLUMN pcsync.current_subscriptions.cancellation_allowed_until IS 'As subscriptions.cancellation_allowed_until.';
COMMENT ON COLUMN pcsync.current_subscriptions.partner_id IS 'As subscriptions.partner_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.product_type IS 'As subscriptions.product_type.';
COMMENT ON COLUMN pcsync.current_subscriptions.publisher_name IS 'As subscriptions.publisher_name.';
COMMENT ON COLUMN pcsync.current_subscriptions.first_seen_at IS 'As subscriptions.first_seen_at.';
COMMENT ON COLUMN pcsync.current_subscriptions.changed_at IS 'As subscriptions.changed_at.';
COMMENT ON COLUMN pcsync.current_subscriptions.product_id IS 'As subscriptions.product_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.sku_id IS 'As subscriptions.sku_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.availability_id IS 'As subscriptions.availability_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.contract_type IS 'As subscriptions.contract_type.';
COMMENT ON COLUMN pcsync.current_subscriptions.order_id IS 'As subscriptions.order_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.billing_cycle_end_date IS 'As subscriptions.billing_cycle_end_date.';
COMMENT ON COLUMN pcsync.current_subscriptions.commitment_end_date_time IS 'As subscriptions.commitment_end_date_time.';
COMMENT ON COLUMN pcsync.current_subscriptions.refundable_quantity IS 'As subscriptions.refundable_quantity.';
COMMENT ON COLUMN pcsync.current_subscriptions.refundable_quantity_details IS 'As subscriptions.refundable_quantity_details.';
COMMENT ON COLUMN pcsync.current_subscriptions.attention_needed IS 'As subscriptions.attention_needed.';
COMMENT ON COLUMN pcsync.current_subscriptions.action_taken IS 'As subscriptions.action_taken.';
COMMENT ON COLUMN pcsync.current_subscriptions.has_purchasable_addons IS 'As subscriptions.has_purchasable_addons.';
COMMENT ON COLUMN pcsync.current_subscriptions.is_microsoft_product IS 'As subscriptions.is_microsoft_product.';
COMMENT ON COLUMN pcsync.current_subscriptions.scheduled_next_term IS 'As subscriptions.scheduled_next_term.';
COMMENT ON COLUMN pcsync.current_subscriptions.next_term_product_id IS 'As subscriptions.next_term_product_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.next_term_sku_id IS 'As subscriptions.next_term_sku_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.next_term_availability_id IS 'As subscriptions.next_term_availability_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.next_term_billing_cycle IS 'As subscriptions.next_term_billing_cycle.';
COMMENT ON COLUMN pcsync.current_subscriptions.next_term_duration IS 'As subscriptions.next_term_duration.';
COMMENT ON COLUMN pcsync.current_subscriptions.next_term_quantity IS 'As subscriptions.next_term_quantity.';
COMMENT ON COLUMN pcsync.current_subscriptions.parent_subscription_id IS 'As subscriptions.parent_subscription_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.entitlement_id IS 'As subscriptions.entitlement_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.promotion_id IS 'As subscriptions.promotion_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.custom_term_end_date IS 'As subscriptions.custom_term_end_date.';
COMMENT ON COLUMN pcsync.current_subscriptions.suspension_reasons IS 'As subscriptions.suspension_reasons.';
