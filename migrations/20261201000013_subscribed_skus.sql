-- Licence usage (issue 16): the customer's subscribed SKUs from GET /v1/customers/{id}/subscribedskus,
-- a third resource beside subscriptions and managed services, with its history.

CREATE TABLE pcsync.subscribed_skus (
    customer_id        uuid        NOT NULL REFERENCES pcsync.customers (customer_id),
    sku_id             text        NOT NULL CHECK (sku_id <> ''),
    sku_name           text,
    sku_part_number    text,
    target_type        text,
    license_group_id   text,
    capability_status  text,
    total_units        bigint,
    active_units       bigint,
    consumed_units     bigint,
    suspended_units    bigint,
    warning_units      bigint,
    available_units    bigint,
    service_plans      jsonb,
    raw                jsonb       NOT NULL CHECK (jsonb_typeof(raw) = 'object'),
    first_seen_at      timestamptz NOT NULL,
    changed_at         timestamptz NOT NULL,
    removed_at         timestamptz,
    PRIMARY KEY (customer_id, sku_id)
);
COMMENT ON TABLE pcsync.subscribed_skus IS
    'One row per customer and SKU of its tenant (whoever sold the licences): how many licences it has, how many are assigned. Fetched with the customer''s subscriptions (App+User credentials, sync.license_usage); a SKU no longer returned gets removed_at. No common key with subscriptions: see sku_offers and license_usage.';
COMMENT ON COLUMN pcsync.subscribed_skus.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.subscribed_skus.sku_id IS 'productSku.id: the Entra SKU GUID.';
COMMENT ON COLUMN pcsync.subscribed_skus.sku_name IS 'productSku.name: the SKU''s name (Microsoft 365 E3).';
COMMENT ON COLUMN pcsync.subscribed_skus.sku_part_number IS 'productSku.skuPartNumber: SPB, EMS, or for new-commerce and software items PRODUCT/SKU such as CFQ7TTC0K5DR/0002.';
COMMENT ON COLUMN pcsync.subscribed_skus.target_type IS 'productSku.targetType: User or Tenant.';
COMMENT ON COLUMN pcsync.subscribed_skus.license_group_id IS 'productSku.licenseGroupId: group1 (Entra ID) or group2 (Minecraft).';
COMMENT ON COLUMN pcsync.subscribed_skus.capability_status IS 'capabilityStatus: Enabled, Suspended, Warning, ...';
COMMENT ON COLUMN pcsync.subscribed_skus.total_units IS 'totalUnits: licences the tenant has of the SKU.';
COMMENT ON COLUMN pcsync.subscribed_skus.active_units IS 'activeUnits: licences in force (neither suspended nor in warning).';
COMMENT ON COLUMN pcsync.subscribed_skus.consumed_units IS 'consumedUnits: licences assigned to users or devices.';
COMMENT ON COLUMN pcsync.subscribed_skus.suspended_units IS 'suspendedUnits.';
COMMENT ON COLUMN pcsync.subscribed_skus.warning_units IS 'warningUnits: licences in their grace period.';
COMMENT ON COLUMN pcsync.subscribed_skus.available_units IS 'availableUnits as Partner Center sends it (it moves with consumed_units, so it is stored but a change of it alone is no event).';
COMMENT ON COLUMN pcsync.subscribed_skus.service_plans IS 'servicePlans: the service plans of the SKU, as sent (may be empty).';
COMMENT ON COLUMN pcsync.subscribed_skus.raw IS 'The whole SubscribedSku object as Partner Center sent it.';
COMMENT ON COLUMN pcsync.subscribed_skus.first_seen_at IS 'When pcsync first saw the SKU for this customer.';
COMMENT ON COLUMN pcsync.subscribed_skus.changed_at IS 'When one of its fields last changed.';
COMMENT ON COLUMN pcsync.subscribed_skus.removed_at IS 'When a complete answer no longer listed it; null while listed.';

CREATE TABLE pcsync.subscribed_sku_history (
    history_id         bigserial   PRIMARY KEY,
    customer_id        uuid        NOT NULL,
    sku_id             text        NOT NULL,
    valid_from         timestamptz NOT NULL,
    valid_to           timestamptz,
    run_id             uuid        REFERENCES pcsync.sync_runs (run_id),
    sku_name           text,
    sku_part_number    text,
    target_type        text,
    license_group_id   text,
    capability_status  text,
    total_units        bigint,
    active_units       bigint,
    consumed_units     bigint,
    suspended_units    bigint,
    warning_units      bigint,
    available_units    bigint,
    service_plans      jsonb,
    FOREIGN KEY (customer_id, sku_id) REFERENCES pcsync.subscribed_skus (customer_id, sku_id),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    CONSTRAINT subscribed_sku_history_no_overlap EXCLUDE USING gist (
        customer_id WITH =,
        sku_id WITH =,
        tstzrange(valid_from, valid_to, '[)') WITH &&
    ) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX subscribed_sku_history_current_idx
    ON pcsync.subscribed_sku_history (customer_id, sku_id) WHERE valid_to IS NULL;
COMMENT ON TABLE pcsync.subscribed_sku_history IS
    'Slowly changing dimension (type 2) of subscribed_skus: one row per version of a SKU''s licence counts, valid from valid_from until valid_to. Join on a date to see how many licences a customer had and used then.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.history_id IS 'Row number of the version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.subscribed_sku_history.sku_id IS 'The SKU (subscribed_skus.sku_id).';
COMMENT ON COLUMN pcsync.subscribed_sku_history.valid_from IS 'When pcsync first saw this version (inclusive).';
COMMENT ON COLUMN pcsync.subscribed_sku_history.valid_to IS 'When the next version replaced it or the SKU was removed (exclusive); null for the current version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.run_id IS 'The pass that recorded this version (sync_runs.run_id).';
COMMENT ON COLUMN pcsync.subscribed_sku_history.sku_name IS 'As subscribed_skus.sku_name, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.sku_part_number IS 'As subscribed_skus.sku_part_number, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.target_type IS 'As subscribed_skus.target_type, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.license_group_id IS 'As subscribed_skus.license_group_id, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.capability_status IS 'As subscribed_skus.capability_status, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.total_units IS 'As subscribed_skus.total_units, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.active_units IS 'As subscribed_skus.active_units, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.consumed_units IS 'As subscribed_skus.consumed_units, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.suspended_units IS 'As subscribed_skus.suspended_units, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.warning_units IS 'As subscribed_skus.warning_units, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.available_units IS 'As subscribed_skus.available_units, in this version.';
COMMENT ON COLUMN pcsync.subscribed_sku_history.service_plans IS 'As subscribed_skus.service_plans, in this version.';

ALTER TABLE pcsync.change_events DROP CONSTRAINT change_events_entity_check;
ALTER TABLE pcsync.change_events ADD CONSTRAINT change_events_entity_check
    CHECK (entity IN ('subscription', 'managed_service', 'subscribed_sku'));
COMMENT ON COLUMN pcsync.change_events.entity IS 'What changed: subscription, managed_service or subscribed_sku.';

CREATE OR REPLACE VIEW pcsync.recent_changes AS
SELECT
    e.event_id,
    e.detected_at,
    e.run_id,
    e.customer_id,
    c.company_name,
    e.entity,
    e.entity_id,
    coalesce(s.offer_name, m.name, k.sku_name) AS object_name,
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
    ON e.entity = 'managed_service' AND m.customer_id = e.customer_id AND m.service_id = e.entity_id
LEFT JOIN pcsync.subscribed_skus k
    ON e.entity = 'subscribed_sku' AND k.customer_id = e.customer_id AND k.sku_id = e.entity_id;
COMMENT ON COLUMN pcsync.change_events.entity_id IS 'subscriptions.subscription_id, managed_services.service_id or subscribed_skus.sku_id.';
COMMENT ON COLUMN pcsync.recent_changes.object_name IS 'The subscription''s offer name, the managed service''s name or the SKU''s name.';
