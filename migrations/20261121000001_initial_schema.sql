-- pcsync's reporting schema. Forward-only: a later change is a new migration, never an edit here.
--
-- Conventions for analysts:
--   * every timestamp is `timestamptz` (stored in UTC);
--   * enumerations are `text` with a CHECK constraint, so they read plainly in any BI tool;
--   * a row is rewritten only when one of its business fields changed, so `xmin`-based and
--     CDC-based extracts see real changes only; freshness lives in customers.last_success_at.

CREATE SCHEMA IF NOT EXISTS pcsync;
COMMENT ON SCHEMA pcsync IS
    'pcsync: a PostgreSQL copy of what Microsoft Partner Center says each customer owns, with a change log. Grant reporting roles USAGE and SELECT here.';

-- Needed for the exclusion constraint on subscription_history (uuid/text equality in a GiST index).
-- A trusted extension since PostgreSQL 13: a database owner may create it.
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.sync_runs (
    run_id               uuid        PRIMARY KEY,
    started_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz,
    status               text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted')),
    trigger              text        NOT NULL
        CHECK (trigger IN ('schedule', 'once', 'demo', 'benchmark', 'test')),
    customers_total      integer     NOT NULL DEFAULT 0 CHECK (customers_total >= 0),
    customers_succeeded  integer     NOT NULL DEFAULT 0 CHECK (customers_succeeded >= 0),
    customers_failed     integer     NOT NULL DEFAULT 0 CHECK (customers_failed >= 0),
    api_requests         integer     NOT NULL DEFAULT 0 CHECK (api_requests >= 0),
    throttled_responses  integer     NOT NULL DEFAULT 0 CHECK (throttled_responses >= 0),
    retries              integer     NOT NULL DEFAULT 0 CHECK (retries >= 0),
    changes_detected     integer     NOT NULL DEFAULT 0 CHECK (changes_detected >= 0),
    error                text,
    CHECK (finished_at IS NULL OR finished_at >= started_at),
    CHECK ((status = 'running') = (finished_at IS NULL))
);
COMMENT ON TABLE pcsync.sync_runs IS
    'One row per sync pass: when it ran, how it ended and what it did. The run ledger.';
COMMENT ON COLUMN pcsync.sync_runs.run_id IS
    'Identifier of the pass; also sent to Partner Center as MS-CorrelationId, so Microsoft support can find its requests.';
COMMENT ON COLUMN pcsync.sync_runs.started_at IS 'When the pass started.';
COMMENT ON COLUMN pcsync.sync_runs.finished_at IS 'When the pass ended; null while it is running.';
COMMENT ON COLUMN pcsync.sync_runs.status IS
    'running; succeeded (every customer synced); partial (some customers failed, see sync_errors); failed (the pass could not proceed, see error); interrupted (stopped by a signal; customers finished before the signal are committed).';
COMMENT ON COLUMN pcsync.sync_runs.trigger IS
    'What started the pass: schedule (the long-lived worker), once (pcsync run --once), demo, benchmark or test.';
COMMENT ON COLUMN pcsync.sync_runs.customers_total IS 'Customers the pass set out to sync.';
COMMENT ON COLUMN pcsync.sync_runs.customers_succeeded IS 'Customers whose data was fetched completely and stored.';
COMMENT ON COLUMN pcsync.sync_runs.customers_failed IS 'Customers that could not be synced; their earlier data was left as it was.';
COMMENT ON COLUMN pcsync.sync_runs.api_requests IS 'HTTP requests sent to Partner Center, retries included.';
COMMENT ON COLUMN pcsync.sync_runs.throttled_responses IS 'Responses with HTTP 429 (rate limit exceeded) from Partner Center.';
COMMENT ON COLUMN pcsync.sync_runs.retries IS 'Requests sent again after a timeout, a server error or a 429.';
COMMENT ON COLUMN pcsync.sync_runs.changes_detected IS 'Rows written to change_events by this pass.';
COMMENT ON COLUMN pcsync.sync_runs.error IS 'Why the pass failed or was interrupted; null otherwise.';
CREATE INDEX sync_runs_started_at_idx ON pcsync.sync_runs (started_at);

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.customers (
    customer_id      uuid        PRIMARY KEY,
    mpn_id           text        CHECK (mpn_id ~ '^[0-9]{1,18}$'),
    company_name     text,
    domain           text,
    relationship     text,
    source           text        NOT NULL CHECK (source IN ('file', 'api')),
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    left_list_at     timestamptz,
    last_attempt_at  timestamptz,
    last_success_at  timestamptz,
    last_status      text        NOT NULL DEFAULT 'never'
        CHECK (last_status IN ('never', 'succeeded', 'failed')),
    last_error       text,
    CHECK ((last_status = 'failed') = (last_error IS NOT NULL))
);
COMMENT ON TABLE pcsync.customers IS
    'Customers pcsync keeps in sync, from the customer file or the Partner Center customer list. Never deleted: a customer that left the list is marked in left_list_at.';
COMMENT ON COLUMN pcsync.customers.customer_id IS 'The customer''s Microsoft ID (Entra tenant id), as used by Partner Center.';
COMMENT ON COLUMN pcsync.customers.mpn_id IS
    'Partner ID (MPN id) whose subscriptions are synced for this customer (?mpn_id= filter); null means every partner''s subscriptions.';
COMMENT ON COLUMN pcsync.customers.company_name IS 'Company name, from the customer file or companyProfile.companyName.';
COMMENT ON COLUMN pcsync.customers.domain IS 'Primary domain (companyProfile.domain), when known.';
COMMENT ON COLUMN pcsync.customers.relationship IS 'relationshipToPartner from Partner Center (reseller, advisor, ...), when known.';
COMMENT ON COLUMN pcsync.customers.source IS 'Where the customer came from: file (customers.file) or api (the Partner Center customer list).';
COMMENT ON COLUMN pcsync.customers.first_seen_at IS 'When pcsync first saw the customer.';
COMMENT ON COLUMN pcsync.customers.left_list_at IS 'When the customer was no longer in the customer list; null while listed. Its data is kept.';
COMMENT ON COLUMN pcsync.customers.last_attempt_at IS 'When a sync of this customer last started.';
COMMENT ON COLUMN pcsync.customers.last_success_at IS 'When this customer was last synced completely: the data in subscriptions and managed_services is as fresh as this.';
COMMENT ON COLUMN pcsync.customers.last_status IS 'Outcome of the last attempt: never, succeeded or failed.';
COMMENT ON COLUMN pcsync.customers.last_error IS 'Why the last attempt failed; null unless last_status is failed.';
CREATE INDEX customers_last_status_idx ON pcsync.customers (last_status);

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.subscriptions (
    customer_id                 uuid        NOT NULL REFERENCES pcsync.customers (customer_id),
    subscription_id             text        NOT NULL CHECK (subscription_id <> ''),
    offer_id                    text,
    offer_name                  text,
    friendly_name               text,
    quantity                    bigint,
    unit_type                   text,
    status                      text,
    auto_renew_enabled          boolean,
    is_trial                    boolean,
    billing_type                text,
    billing_cycle               text,
    term_duration               text,
    renewal_term_duration       text,
    creation_date               timestamptz,
    effective_start_date        timestamptz,
    commitment_end_date         timestamptz,
    cancellation_allowed_until  timestamptz,
    partner_id                  text,
    contract_type               text,
    order_id                    text,
    product_type                text,
    publisher_name              text,
    raw                         jsonb       NOT NULL CHECK (jsonb_typeof(raw) = 'object'),
    first_seen_at               timestamptz NOT NULL DEFAULT now(),
    changed_at                  timestamptz NOT NULL DEFAULT now(),
    removed_at                  timestamptz,
    PRIMARY KEY (customer_id, subscription_id)
);
COMMENT ON TABLE pcsync.subscriptions IS
    'Every subscription pcsync has seen, one row per customer and subscription, as Partner Center last returned it. Removed ones stay, with removed_at set.';
COMMENT ON COLUMN pcsync.subscriptions.customer_id IS 'The customer that owns the subscription (customers.customer_id).';
COMMENT ON COLUMN pcsync.subscriptions.subscription_id IS 'Subscription id (Subscription.id), usually a GUID.';
COMMENT ON COLUMN pcsync.subscriptions.offer_id IS 'offerId as Partner Center wrote it: a GUID for legacy offers, PRODUCT:SKU:AVAILABILITY for new commerce.';
COMMENT ON COLUMN pcsync.subscriptions.offer_name IS 'offerName, e.g. Microsoft 365 Business Basic.';
COMMENT ON COLUMN pcsync.subscriptions.friendly_name IS 'friendlyName: the name the partner or customer gave the subscription.';
COMMENT ON COLUMN pcsync.subscriptions.quantity IS 'quantity: licenses or units bought.';
COMMENT ON COLUMN pcsync.subscriptions.unit_type IS 'unitType, e.g. Licenses.';
COMMENT ON COLUMN pcsync.subscriptions.status IS 'status: none, active, pending, suspended, expired, disabled or deleted. deleted is a status, not a removal.';
COMMENT ON COLUMN pcsync.subscriptions.auto_renew_enabled IS 'autoRenewEnabled: renews at the end of its term.';
COMMENT ON COLUMN pcsync.subscriptions.is_trial IS 'isTrial: a trial subscription.';
COMMENT ON COLUMN pcsync.subscriptions.billing_type IS 'billingType, e.g. license or usage.';
COMMENT ON COLUMN pcsync.subscriptions.billing_cycle IS 'billingCycle: monthly, annual, none, one_time, triennial or biennial.';
COMMENT ON COLUMN pcsync.subscriptions.term_duration IS 'termDuration as ISO 8601 duration: P1M, P1Y, P3Y; null when not given.';
COMMENT ON COLUMN pcsync.subscriptions.renewal_term_duration IS 'renewalTermDuration: the term it renews into; null when Partner Center sends none or an empty string.';
COMMENT ON COLUMN pcsync.subscriptions.creation_date IS 'creationDate: when the subscription was created.';
COMMENT ON COLUMN pcsync.subscriptions.effective_start_date IS 'effectiveStartDate: when the current term started.';
COMMENT ON COLUMN pcsync.subscriptions.commitment_end_date IS 'commitmentEndDate: when the current term ends (renewal date).';
COMMENT ON COLUMN pcsync.subscriptions.cancellation_allowed_until IS 'cancellationAllowedUntilDate: last moment a new-commerce subscription may be cancelled with a refund.';
COMMENT ON COLUMN pcsync.subscriptions.partner_id IS 'partnerId: the Partner ID (MPN id) of the partner that sold it.';
COMMENT ON COLUMN pcsync.subscriptions.contract_type IS 'contractType, e.g. subscription.';
COMMENT ON COLUMN pcsync.subscriptions.order_id IS 'orderId: the order that created it; not always a GUID.';
COMMENT ON COLUMN pcsync.subscriptions.product_type IS 'productType.id, e.g. OnlineServicesNCE; null for legacy offers.';
COMMENT ON COLUMN pcsync.subscriptions.publisher_name IS 'publisherName, e.g. Microsoft Corporation.';
COMMENT ON COLUMN pcsync.subscriptions.raw IS 'The whole Subscription object as Partner Center returned it, including fields without a column of their own.';
COMMENT ON COLUMN pcsync.subscriptions.first_seen_at IS 'When pcsync first saw the subscription.';
COMMENT ON COLUMN pcsync.subscriptions.changed_at IS 'When one of its business fields last changed (or it was added, removed or came back).';
COMMENT ON COLUMN pcsync.subscriptions.removed_at IS 'When a complete fetch of the customer no longer returned it; null while present.';
CREATE INDEX subscriptions_status_idx ON pcsync.subscriptions (status);
CREATE INDEX subscriptions_offer_id_idx ON pcsync.subscriptions (offer_id);
CREATE INDEX subscriptions_commitment_end_date_idx ON pcsync.subscriptions (commitment_end_date) WHERE removed_at IS NULL;

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.managed_services (
    customer_id         uuid        NOT NULL REFERENCES pcsync.customers (customer_id),
    service_id          text        NOT NULL CHECK (service_id <> ''),
    name                text,
    group_name          text,
    admin_service_uri   text,
    service_health_uri  text,
    service_ticket_uri  text,
    raw                 jsonb       NOT NULL CHECK (jsonb_typeof(raw) = 'object'),
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    changed_at          timestamptz NOT NULL DEFAULT now(),
    removed_at          timestamptz,
    PRIMARY KEY (customer_id, service_id)
);
COMMENT ON TABLE pcsync.managed_services IS
    'Services of a customer for which the partner holds delegated admin privileges (Partner Center managed services). Removed ones stay, with removed_at set.';
COMMENT ON COLUMN pcsync.managed_services.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.managed_services.service_id IS 'ManagedService.id, e.g. Exchange or MicrosoftCommunicationsOnline.';
COMMENT ON COLUMN pcsync.managed_services.name IS 'ManagedService.name, e.g. SkypeforBusiness.';
COMMENT ON COLUMN pcsync.managed_services.group_name IS 'ManagedService.groupName, e.g. Office.';
COMMENT ON COLUMN pcsync.managed_services.admin_service_uri IS 'links.adminService.uri: the admin portal of the service on behalf of the customer.';
COMMENT ON COLUMN pcsync.managed_services.service_health_uri IS 'links.serviceHealth.uri: the service health page.';
COMMENT ON COLUMN pcsync.managed_services.service_ticket_uri IS 'links.serviceTicket.uri: where to file a service request.';
COMMENT ON COLUMN pcsync.managed_services.raw IS 'The whole ManagedService object as Partner Center returned it.';
COMMENT ON COLUMN pcsync.managed_services.first_seen_at IS 'When pcsync first saw the service.';
COMMENT ON COLUMN pcsync.managed_services.changed_at IS 'When one of its fields last changed (or it was added, removed or came back).';
COMMENT ON COLUMN pcsync.managed_services.removed_at IS 'When a complete fetch of the customer no longer returned it; null while present.';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.change_events (
    event_id     bigserial   PRIMARY KEY,
    run_id       uuid        NOT NULL REFERENCES pcsync.sync_runs (run_id),
    detected_at  timestamptz NOT NULL DEFAULT now(),
    customer_id  uuid        NOT NULL REFERENCES pcsync.customers (customer_id),
    entity       text        NOT NULL CHECK (entity IN ('subscription', 'managed_service')),
    entity_id    text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('added', 'removed', 'changed')),
    field        text,
    old_value    text,
    new_value    text,
    CHECK ((kind = 'changed') = (field IS NOT NULL))
);
COMMENT ON TABLE pcsync.change_events IS
    'Every change pcsync detected, one row per added or removed object and one row per changed field. The audit trail behind "what changed, when".';
COMMENT ON COLUMN pcsync.change_events.event_id IS 'Increasing event number; orders events detected in the same instant.';
COMMENT ON COLUMN pcsync.change_events.run_id IS 'The pass that detected it (sync_runs.run_id).';
COMMENT ON COLUMN pcsync.change_events.detected_at IS 'When pcsync detected the change (not when it happened in Partner Center).';
COMMENT ON COLUMN pcsync.change_events.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.change_events.entity IS 'What changed: subscription or managed_service.';
COMMENT ON COLUMN pcsync.change_events.entity_id IS 'subscriptions.subscription_id or managed_services.service_id.';
COMMENT ON COLUMN pcsync.change_events.kind IS 'added (new, or back after a removal), removed (no longer returned by a complete fetch) or changed (one field, named in field).';
COMMENT ON COLUMN pcsync.change_events.field IS 'For kind = changed: the column that changed, e.g. status, quantity, commitment_end_date; null otherwise.';
COMMENT ON COLUMN pcsync.change_events.old_value IS 'For kind = changed: the value before, as text (timestamps in ISO 8601, UTC); null when it was empty.';
COMMENT ON COLUMN pcsync.change_events.new_value IS 'For kind = changed: the value after, as text; null when it is empty.';
CREATE INDEX change_events_detected_at_idx ON pcsync.change_events (detected_at);
CREATE INDEX change_events_customer_idx ON pcsync.change_events (customer_id, detected_at);
CREATE INDEX change_events_run_idx ON pcsync.change_events (run_id);

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.subscription_history (
    history_id                  bigserial   PRIMARY KEY,
    customer_id                 uuid        NOT NULL,
    subscription_id             text        NOT NULL,
    valid_from                  timestamptz NOT NULL,
    valid_to                    timestamptz,
    run_id                      uuid        NOT NULL REFERENCES pcsync.sync_runs (run_id),
    offer_id                    text,
    offer_name                  text,
    friendly_name               text,
    quantity                    bigint,
    unit_type                   text,
    status                      text,
    auto_renew_enabled          boolean,
    is_trial                    boolean,
    billing_type                text,
    billing_cycle               text,
    term_duration               text,
    renewal_term_duration       text,
    creation_date               timestamptz,
    effective_start_date        timestamptz,
    commitment_end_date         timestamptz,
    cancellation_allowed_until  timestamptz,
    partner_id                  text,
    contract_type               text,
    order_id                    text,
    product_type                text,
    publisher_name              text,
    FOREIGN KEY (customer_id, subscription_id) REFERENCES pcsync.subscriptions (customer_id, subscription_id),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    -- Two versions of one subscription can never be valid at the same instant.
    CONSTRAINT subscription_history_no_overlap EXCLUDE USING gist (
        customer_id WITH =,
        subscription_id WITH =,
        tstzrange(valid_from, valid_to, '[)') WITH &&
    )
);
COMMENT ON TABLE pcsync.subscription_history IS
    'Slowly changing dimension (type 2) of subscriptions: one row per version of a subscription''s business fields, valid from valid_from until valid_to. Join on a date to see what a customer owned then.';
COMMENT ON COLUMN pcsync.subscription_history.history_id IS 'Row number of the version.';
COMMENT ON COLUMN pcsync.subscription_history.customer_id IS 'The customer (customers.customer_id).';
COMMENT ON COLUMN pcsync.subscription_history.subscription_id IS 'The subscription (subscriptions.subscription_id).';
COMMENT ON COLUMN pcsync.subscription_history.valid_from IS 'When pcsync first saw this version (inclusive).';
COMMENT ON COLUMN pcsync.subscription_history.valid_to IS 'When the next version replaced it or the subscription was removed (exclusive); null for the current version.';
COMMENT ON COLUMN pcsync.subscription_history.run_id IS 'The pass that recorded this version (sync_runs.run_id).';
COMMENT ON COLUMN pcsync.subscription_history.offer_id IS 'As subscriptions.offer_id, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.offer_name IS 'As subscriptions.offer_name, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.friendly_name IS 'As subscriptions.friendly_name, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.quantity IS 'As subscriptions.quantity, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.unit_type IS 'As subscriptions.unit_type, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.status IS 'As subscriptions.status, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.auto_renew_enabled IS 'As subscriptions.auto_renew_enabled, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.is_trial IS 'As subscriptions.is_trial, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.billing_type IS 'As subscriptions.billing_type, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.billing_cycle IS 'As subscriptions.billing_cycle, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.term_duration IS 'As subscriptions.term_duration, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.renewal_term_duration IS 'As subscriptions.renewal_term_duration, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.creation_date IS 'As subscriptions.creation_date, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.effective_start_date IS 'As subscriptions.effective_start_date, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.commitment_end_date IS 'As subscriptions.commitment_end_date, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.cancellation_allowed_until IS 'As subscriptions.cancellation_allowed_until, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.partner_id IS 'As subscriptions.partner_id, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.contract_type IS 'As subscriptions.contract_type, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.order_id IS 'As subscriptions.order_id, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.product_type IS 'As subscriptions.product_type, in this version.';
COMMENT ON COLUMN pcsync.subscription_history.publisher_name IS 'As subscriptions.publisher_name, in this version.';
CREATE UNIQUE INDEX subscription_history_current_idx
    ON pcsync.subscription_history (customer_id, subscription_id) WHERE valid_to IS NULL;

-- ---------------------------------------------------------------------------------------------
CREATE TABLE pcsync.sync_errors (
    error_id     bigserial   PRIMARY KEY,
    run_id       uuid        NOT NULL REFERENCES pcsync.sync_runs (run_id),
    customer_id  uuid,
    operation    text        NOT NULL,
    http_status  integer     CHECK (http_status BETWEEN 100 AND 599),
    error_code   text,
    request_id   text,
    message      text        NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pcsync.sync_errors IS
    'One row per failure during a pass: a customer that could not be fetched or stored, or a failure of the pass itself (customer_id null).';
COMMENT ON COLUMN pcsync.sync_errors.error_id IS 'Row number.';
COMMENT ON COLUMN pcsync.sync_errors.run_id IS 'The pass (sync_runs.run_id); also the MS-CorrelationId of its requests.';
COMMENT ON COLUMN pcsync.sync_errors.customer_id IS 'The customer that failed; null for a failure of the whole pass (e.g. the customer list).';
COMMENT ON COLUMN pcsync.sync_errors.operation IS 'What failed: list_customers, get_subscriptions, get_managed_services, store, read_customer_file, ...';
COMMENT ON COLUMN pcsync.sync_errors.http_status IS 'HTTP status of Partner Center''s last answer, when there was one.';
COMMENT ON COLUMN pcsync.sync_errors.error_code IS 'Partner Center''s error code (e.g. 20002: no relationship with the customer), when it sent one.';
COMMENT ON COLUMN pcsync.sync_errors.request_id IS 'MS-RequestId of the failed request: quote it, with run_id, to Microsoft support.';
COMMENT ON COLUMN pcsync.sync_errors.message IS 'What went wrong and, where known, what to do about it.';
COMMENT ON COLUMN pcsync.sync_errors.occurred_at IS 'When it happened.';
CREATE INDEX sync_errors_run_idx ON pcsync.sync_errors (run_id);
CREATE INDEX sync_errors_customer_idx ON pcsync.sync_errors (customer_id, occurred_at);
