-- Several partner tenants in one database (issue 20), first step: the tenant in every table and
-- in every key that is a customer's or a record's. One tenant, `default`, holds every existing
-- row; nothing else changes. The passes and views keep working on the one tenant; the next
-- steps scope every sweep and ledger read to the pass's tenant and let several run.

CREATE TABLE pcsync.partner_tenants (
    name               text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    partner_tenant_id  uuid        UNIQUE,
    domain             text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pcsync.partner_tenants IS
    'One row per partner tenant (a Partner Center account: a country, a brand, an indirect provider) whose customers pcsync keeps, by the name pcsync is configured with (auth.tenant_name). Every other table carries its name in the column tenant.';
COMMENT ON COLUMN pcsync.partner_tenants.name IS 'The tenant''s name in pcsync''s configuration (auth.tenant_name; default: default): lower case, digits, - and _.';
COMMENT ON COLUMN pcsync.partner_tenants.partner_tenant_id IS 'The partner''s Microsoft Entra tenant GUID, as resolved by its first pass; a pass whose GUID differs stops with an error naming both.';
COMMENT ON COLUMN pcsync.partner_tenants.domain IS 'The partner tenant''s domain as configured (auth.tenant_id when it is a domain), for people.';
COMMENT ON COLUMN pcsync.partner_tenants.created_at IS 'When pcsync first knew the tenant.';
INSERT INTO pcsync.partner_tenants (name) VALUES ('default');

-- The column everywhere. A constant default adds it without rewriting the tables.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'pcsync.customers', 'pcsync.subscriptions', 'pcsync.managed_services',
        'pcsync.subscribed_skus', 'pcsync.subscription_history', 'pcsync.subscribed_sku_history',
        'pcsync.change_events', 'pcsync.activity_log', 'pcsync.sync_runs', 'pcsync.sync_errors',
        'pcsync.renewal_announcements', 'pcsync.cancellation_window_announcements',
        'pcsync_private.refresh_tokens']
    LOOP
        EXECUTE format(
            'ALTER TABLE %s ADD COLUMN tenant text NOT NULL DEFAULT %L REFERENCES pcsync.partner_tenants (name)',
            t, 'default');
        EXECUTE format(
            'COMMENT ON COLUMN %s.tenant IS %L', t,
            'The partner tenant (partner_tenants.name) this row belongs to.');
    END LOOP;
END
$$;

-- Keys: a customer is a customer of one tenant; a record is a record of one tenant's customer.
-- References first (they depend on the keys), then the keys, then the references again.
ALTER TABLE pcsync.subscription_history DROP CONSTRAINT subscription_history_customer_id_subscription_id_fkey;
ALTER TABLE pcsync.subscribed_sku_history DROP CONSTRAINT subscribed_sku_history_customer_id_sku_id_fkey;
ALTER TABLE pcsync.renewal_announcements DROP CONSTRAINT renewal_announcements_customer_id_subscription_id_fkey;
ALTER TABLE pcsync.cancellation_window_announcements DROP CONSTRAINT cancellation_window_announceme_customer_id_subscription_id_fkey;
ALTER TABLE pcsync.subscriptions DROP CONSTRAINT subscriptions_customer_id_fkey;
ALTER TABLE pcsync.managed_services DROP CONSTRAINT managed_services_customer_id_fkey;
ALTER TABLE pcsync.subscribed_skus DROP CONSTRAINT subscribed_skus_customer_id_fkey;
ALTER TABLE pcsync.change_events DROP CONSTRAINT change_events_customer_id_fkey;

ALTER TABLE pcsync.customers DROP CONSTRAINT customers_pkey,
    ADD CONSTRAINT customers_pkey PRIMARY KEY (tenant, customer_id);
ALTER TABLE pcsync.subscriptions DROP CONSTRAINT subscriptions_pkey,
    ADD CONSTRAINT subscriptions_pkey PRIMARY KEY (tenant, customer_id, subscription_id);
ALTER TABLE pcsync.managed_services DROP CONSTRAINT managed_services_pkey,
    ADD CONSTRAINT managed_services_pkey PRIMARY KEY (tenant, customer_id, service_id);
ALTER TABLE pcsync.subscribed_skus DROP CONSTRAINT subscribed_skus_pkey,
    ADD CONSTRAINT subscribed_skus_pkey PRIMARY KEY (tenant, customer_id, sku_id);
ALTER TABLE pcsync.activity_log DROP CONSTRAINT activity_log_pkey,
    ADD CONSTRAINT activity_log_pkey PRIMARY KEY (tenant, record_id);
ALTER TABLE pcsync.renewal_announcements DROP CONSTRAINT renewal_announcements_pkey,
    ADD CONSTRAINT renewal_announcements_pkey
        PRIMARY KEY (tenant, customer_id, subscription_id, ends_on, threshold_days, kind);
ALTER TABLE pcsync.cancellation_window_announcements DROP CONSTRAINT cancellation_window_announcements_pkey,
    ADD CONSTRAINT cancellation_window_announcements_pkey
        PRIMARY KEY (tenant, customer_id, subscription_id, allowed_until);

ALTER TABLE pcsync.subscriptions ADD CONSTRAINT subscriptions_customer_fkey
    FOREIGN KEY (tenant, customer_id) REFERENCES pcsync.customers (tenant, customer_id);
ALTER TABLE pcsync.managed_services ADD CONSTRAINT managed_services_customer_fkey
    FOREIGN KEY (tenant, customer_id) REFERENCES pcsync.customers (tenant, customer_id);
ALTER TABLE pcsync.subscribed_skus ADD CONSTRAINT subscribed_skus_customer_fkey
    FOREIGN KEY (tenant, customer_id) REFERENCES pcsync.customers (tenant, customer_id);
ALTER TABLE pcsync.change_events ADD CONSTRAINT change_events_customer_fkey
    FOREIGN KEY (tenant, customer_id) REFERENCES pcsync.customers (tenant, customer_id);
ALTER TABLE pcsync.subscription_history ADD CONSTRAINT subscription_history_subscription_fkey
    FOREIGN KEY (tenant, customer_id, subscription_id)
    REFERENCES pcsync.subscriptions (tenant, customer_id, subscription_id);
ALTER TABLE pcsync.subscribed_sku_history ADD CONSTRAINT subscribed_sku_history_sku_fkey
    FOREIGN KEY (tenant, customer_id, sku_id) REFERENCES pcsync.subscribed_skus (tenant, customer_id, sku_id);
ALTER TABLE pcsync.renewal_announcements ADD CONSTRAINT renewal_announcements_subscription_fkey
    FOREIGN KEY (tenant, customer_id, subscription_id)
    REFERENCES pcsync.subscriptions (tenant, customer_id, subscription_id);
ALTER TABLE pcsync.cancellation_window_announcements ADD CONSTRAINT cancellation_window_announcements_subscription_fkey
    FOREIGN KEY (tenant, customer_id, subscription_id)
    REFERENCES pcsync.subscriptions (tenant, customer_id, subscription_id);

-- No two versions of one tenant's record overlap (checked at the end of the transaction, as
-- before).
ALTER TABLE pcsync.subscription_history DROP CONSTRAINT subscription_history_no_overlap,
    ADD CONSTRAINT subscription_history_no_overlap EXCLUDE USING gist (
        tenant WITH =, customer_id WITH =, subscription_id WITH =,
        tstzrange(valid_from, valid_to, '[)') WITH &&
    ) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE pcsync.subscribed_sku_history DROP CONSTRAINT subscribed_sku_history_no_overlap,
    ADD CONSTRAINT subscribed_sku_history_no_overlap EXCLUDE USING gist (
        tenant WITH =, customer_id WITH =, sku_id WITH =,
        tstzrange(valid_from, valid_to, '[)') WITH &&
    ) DEFERRABLE INITIALLY DEFERRED;

-- The run ledger is read per tenant from the next step on.
CREATE INDEX sync_runs_tenant_started_idx ON pcsync.sync_runs (tenant, started_at);
