-- Incremental passes from Partner Center's activity log (issue 11): the records read, the kind
-- of each pass and how far it read the log (the watermark), and who made each change.

ALTER TABLE pcsync.sync_runs
    ADD COLUMN kind text NOT NULL DEFAULT 'full' CHECK (kind IN ('full', 'incremental')),
    ADD COLUMN activity_records integer NOT NULL DEFAULT 0 CHECK (activity_records >= 0),
    ADD COLUMN activity_read_through timestamptz;
COMMENT ON COLUMN pcsync.sync_runs.kind IS
    'full (every customer fetched) or incremental (only the customers the activity log names, plus those never synced or failing).';
COMMENT ON COLUMN pcsync.sync_runs.activity_records IS 'Relevant activity log records this pass read (stored in activity_log).';
COMMENT ON COLUMN pcsync.sync_runs.activity_read_through IS
    'The watermark this pass leaves: the next incremental pass reads the activity log from here (less an overlap). Set only when the pass succeeded or was partial; the newest one is the watermark.';

CREATE TABLE pcsync.activity_log (
    record_id                text        PRIMARY KEY,
    customer_id              uuid,
    customer_name            text,
    partner_id               text,
    user_principal_name      text,
    application_id           text,
    resource_type            text        NOT NULL,
    operation_type           text,
    operation_status         text,
    operation_at             timestamptz NOT NULL,
    subscription_ids         text[]      NOT NULL DEFAULT '{}',
    resource_old_value       jsonb,
    resource_new_value       jsonb,
    customized_data          jsonb,
    original_correlation_id  text,
    raw                      jsonb       NOT NULL,
    run_id                   uuid        NOT NULL REFERENCES pcsync.sync_runs (run_id),
    read_at                  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pcsync.activity_log IS
    'Partner Center activity log records (audit records) of operations that can change what a customer owns (subscription, order, license, transfer, customer and relationship operations), as pcsync read them. Who did what, when. Changes Microsoft makes (renewals, expiries, suspensions) never appear here.';
COMMENT ON COLUMN pcsync.activity_log.record_id IS 'The record''s id in Partner Center (id; not a GUID).';
COMMENT ON COLUMN pcsync.activity_log.customer_id IS 'The customer the operation was about (customerId), when it names one.';
COMMENT ON COLUMN pcsync.activity_log.customer_name IS 'customerName as the log wrote it.';
COMMENT ON COLUMN pcsync.activity_log.partner_id IS 'partnerId: the partner tenant.';
COMMENT ON COLUMN pcsync.activity_log.user_principal_name IS 'userPrincipalName: who did it.';
COMMENT ON COLUMN pcsync.activity_log.application_id IS 'applicationId: the app used (a GUID), or a service name such as FulfillmentService.';
COMMENT ON COLUMN pcsync.activity_log.resource_type IS 'resourceType: subscription, order, license, transfer, customer, partner_customer_relationship, ...';
COMMENT ON COLUMN pcsync.activity_log.operation_type IS 'operationType, e.g. create_order, update_subscription, add_customer.';
COMMENT ON COLUMN pcsync.activity_log.operation_status IS 'operationStatus: succeeded, failed, progress or decline.';
COMMENT ON COLUMN pcsync.activity_log.operation_at IS 'operationDate: when the operation happened (UTC).';
COMMENT ON COLUMN pcsync.activity_log.subscription_ids IS 'The subscriptions the record names (customizedData SubscriptionId..., or the resource''s Id); how change events are matched to it.';
COMMENT ON COLUMN pcsync.activity_log.resource_old_value IS 'resourceOldValue, the resource before, parsed from the JSON string the log carries (PascalCase keys).';
COMMENT ON COLUMN pcsync.activity_log.resource_new_value IS 'resourceNewValue, the resource after, parsed from its JSON string.';
COMMENT ON COLUMN pcsync.activity_log.customized_data IS 'customizedData: the key/value pairs of the record (SubscriptionId-0, Quantity-0, OrderId, ...).';
COMMENT ON COLUMN pcsync.activity_log.original_correlation_id IS 'originalCorrelationId of the operation.';
COMMENT ON COLUMN pcsync.activity_log.raw IS 'The whole record as Partner Center returned it.';
COMMENT ON COLUMN pcsync.activity_log.run_id IS 'The pass that first read the record (sync_runs.run_id).';
COMMENT ON COLUMN pcsync.activity_log.read_at IS 'When pcsync first read it.';
CREATE INDEX activity_log_customer_idx ON pcsync.activity_log (customer_id, operation_at);
CREATE INDEX activity_log_operation_at_idx ON pcsync.activity_log (operation_at);

ALTER TABLE pcsync.change_events
    ADD COLUMN changed_by text,
    ADD COLUMN changed_via text,
    ADD COLUMN operation text,
    ADD COLUMN operation_at timestamptz;
COMMENT ON COLUMN pcsync.change_events.changed_by IS
    'Who made the change (activity_log.user_principal_name), when exactly one activity record of the same customer and subscription explains it; null when none or several do, and for changes the log cannot see (renewals, expiries, Microsoft-side suspensions).';
COMMENT ON COLUMN pcsync.change_events.changed_via IS 'The application or service the change was made through (activity_log.application_id), as changed_by.';
COMMENT ON COLUMN pcsync.change_events.operation IS 'The operation that made the change (activity_log.operation_type), as changed_by.';
COMMENT ON COLUMN pcsync.change_events.operation_at IS 'When the operation happened (activity_log.operation_at), as changed_by; detected_at is when pcsync saw its effect.';

CREATE OR REPLACE VIEW pcsync.recent_changes AS
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
    e.new_value,
    e.changed_by,
    e.changed_via,
    e.operation,
    e.operation_at
FROM pcsync.change_events e
JOIN pcsync.customers c USING (customer_id)
LEFT JOIN pcsync.subscriptions s
    ON e.entity = 'subscription' AND s.customer_id = e.customer_id AND s.subscription_id = e.entity_id
LEFT JOIN pcsync.managed_services m
    ON e.entity = 'managed_service' AND m.customer_id = e.customer_id AND m.service_id = e.entity_id;
COMMENT ON COLUMN pcsync.recent_changes.changed_by IS 'As change_events.changed_by: who made the change, when the activity log says so.';
COMMENT ON COLUMN pcsync.recent_changes.changed_via IS 'As change_events.changed_via.';
COMMENT ON COLUMN pcsync.recent_changes.operation IS 'As change_events.operation.';
COMMENT ON COLUMN pcsync.recent_changes.operation_at IS 'As change_events.operation_at.';
