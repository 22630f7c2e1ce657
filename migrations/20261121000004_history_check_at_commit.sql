-- Let one statement close a subscription's current version and open the next: the
-- no-overlap rule is now checked when the transaction ends, not row by row in between.
-- The rule itself is unchanged: two versions of one subscription never overlap.
ALTER TABLE pcsync.subscription_history DROP CONSTRAINT subscription_history_no_overlap;
ALTER TABLE pcsync.subscription_history ADD CONSTRAINT subscription_history_no_overlap
    EXCLUDE USING gist (
        customer_id WITH =,
        subscription_id WITH =,
        tstzrange(valid_from, valid_to, '[)') WITH &&
    ) DEFERRABLE INITIALLY DEFERRED;

-- A unique index cannot wait for the end of a transaction; the exclusion constraint above
-- already allows one current version per subscription. This index only serves look-ups.
DROP INDEX pcsync.subscription_history_current_idx;
CREATE INDEX subscription_history_current_idx
    ON pcsync.subscription_history (customer_id, subscription_id) WHERE valid_to IS NULL;
