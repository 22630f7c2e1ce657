-- Views for reporting and BI dashboards. Their columns are part of pcsync's public interface.

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
    c.last_success_at AS data_as_of
FROM pcsync.subscriptions s
JOIN pcsync.customers c USING (customer_id)
WHERE s.removed_at IS NULL;
COMMENT ON VIEW pcsync.current_subscriptions IS
    'Subscriptions Partner Center returned at the last complete sync of their customer, with the customer''s name. The starting point for most reports.';
COMMENT ON COLUMN pcsync.current_subscriptions.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.current_subscriptions.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.current_subscriptions.domain IS 'The customer''s primary domain, when known.';
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
COMMENT ON COLUMN pcsync.current_subscriptions.commitment_end_date IS 'As subscriptions.commitment_end_date: when the term ends or renews.';
COMMENT ON COLUMN pcsync.current_subscriptions.cancellation_allowed_until IS 'As subscriptions.cancellation_allowed_until.';
COMMENT ON COLUMN pcsync.current_subscriptions.partner_id IS 'As subscriptions.partner_id.';
COMMENT ON COLUMN pcsync.current_subscriptions.product_type IS 'As subscriptions.product_type.';
COMMENT ON COLUMN pcsync.current_subscriptions.publisher_name IS 'As subscriptions.publisher_name.';
COMMENT ON COLUMN pcsync.current_subscriptions.first_seen_at IS 'As subscriptions.first_seen_at.';
COMMENT ON COLUMN pcsync.current_subscriptions.changed_at IS 'As subscriptions.changed_at.';
COMMENT ON COLUMN pcsync.current_subscriptions.data_as_of IS 'When the customer was last synced completely (customers.last_success_at): the row is as fresh as this.';

CREATE VIEW pcsync.license_totals AS
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
WHERE s.removed_at IS NULL
GROUP BY s.customer_id, c.company_name, s.offer_id, s.offer_name, s.status;
COMMENT ON VIEW pcsync.license_totals IS
    'Present subscriptions and licenses per customer, offer and status: what a customer has, in one row per product.';
COMMENT ON COLUMN pcsync.license_totals.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.license_totals.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.license_totals.offer_id IS 'The offer (subscriptions.offer_id).';
COMMENT ON COLUMN pcsync.license_totals.offer_name IS 'The offer''s name.';
COMMENT ON COLUMN pcsync.license_totals.status IS 'Subscription status (active, suspended, ...).';
COMMENT ON COLUMN pcsync.license_totals.subscriptions IS 'How many subscriptions.';
COMMENT ON COLUMN pcsync.license_totals.licenses IS 'Their quantities added up.';

CREATE VIEW pcsync.recent_changes AS
SELECT
    e.event_id,
    e.detected_at,
    e.run_id,
    e.customer_id,
    c.company_name,
    e.entity,
    e.entity_id,
    coalesce(s.offer_name, m.name) AS object_name,
    e.kind,
    e.field,
    e.old_value,
    e.new_value
FROM pcsync.change_events e
JOIN pcsync.customers c USING (customer_id)
LEFT JOIN pcsync.subscriptions s
    ON e.entity = 'subscription' AND s.customer_id = e.customer_id AND s.subscription_id = e.entity_id
LEFT JOIN pcsync.managed_services m
    ON e.entity = 'managed_service' AND m.customer_id = e.customer_id AND m.service_id = e.entity_id;
COMMENT ON VIEW pcsync.recent_changes IS
    'Change events with the customer''s and the object''s names, for change reports. Filter on detected_at; order by event_id.';
COMMENT ON COLUMN pcsync.recent_changes.event_id IS 'As change_events.event_id.';
COMMENT ON COLUMN pcsync.recent_changes.detected_at IS 'As change_events.detected_at.';
COMMENT ON COLUMN pcsync.recent_changes.run_id IS 'As change_events.run_id.';
COMMENT ON COLUMN pcsync.recent_changes.customer_id IS 'As change_events.customer_id.';
COMMENT ON COLUMN pcsync.recent_changes.company_name IS 'The customer''s company name.';
COMMENT ON COLUMN pcsync.recent_changes.entity IS 'As change_events.entity.';
COMMENT ON COLUMN pcsync.recent_changes.entity_id IS 'As change_events.entity_id.';
COMMENT ON COLUMN pcsync.recent_changes.object_name IS 'The subscription''s offer name or the managed service''s name.';
COMMENT ON COLUMN pcsync.recent_changes.kind IS 'As change_events.kind.';
COMMENT ON COLUMN pcsync.recent_changes.field IS 'As change_events.field.';
COMMENT ON COLUMN pcsync.recent_changes.old_value IS 'As change_events.old_value.';
COMMENT ON COLUMN pcsync.recent_changes.new_value IS 'As change_events.new_value.';
