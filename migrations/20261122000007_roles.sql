-- Least privilege: extensions in a schema of their own, and a reporting role that can read the
-- pcsync schema (tables added by later migrations included) and nothing of pcsync_private.

CREATE SCHEMA IF NOT EXISTS pcsync_ext;
COMMENT ON SCHEMA pcsync_ext IS
    'PostgreSQL extensions pcsync uses (btree_gist, for the no-overlap rule of subscription_history), kept apart from the data.';
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
               WHERE e.extname = 'btree_gist' AND n.nspname = 'pcsync') THEN
        ALTER EXTENSION btree_gist SET SCHEMA pcsync_ext;
    END IF;
END
$$;

-- pcsync_reader: NOLOGIN; grant it to the login roles of analysts and BI tools. Roles belong to
-- the whole server: an existing one is reused. A migrating role that may not create roles
-- leaves it to the DBA (README, "Roles"); the grants below then wait for the next migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pcsync_reader') THEN
        BEGIN
            CREATE ROLE pcsync_reader NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'pcsync_reader not created: this role may not create roles; see the README section Roles';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pcsync_reader') THEN
        GRANT USAGE ON SCHEMA pcsync TO pcsync_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA pcsync TO pcsync_reader;
        -- Tables and views later migrations add (they run as this same owner).
        ALTER DEFAULT PRIVILEGES IN SCHEMA pcsync GRANT SELECT ON TABLES TO pcsync_reader;
    END IF;
END
$$;
