-- Rotated refresh tokens, kept apart from the reporting schema: a role granted read access on
-- `pcsync` cannot read them. Only pcsync's own role needs this schema.
CREATE SCHEMA IF NOT EXISTS pcsync_private;
REVOKE ALL ON SCHEMA pcsync_private FROM PUBLIC;
COMMENT ON SCHEMA pcsync_private IS
    'pcsync''s secrets (rotated refresh tokens). Never grant this schema to reporting roles.';

CREATE TABLE pcsync_private.refresh_tokens (
    tenant_id         text        NOT NULL,
    client_id         text        NOT NULL,
    refresh_token     text        NOT NULL,
    seed_fingerprint  text        NOT NULL,
    obtained_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, client_id)
);
REVOKE ALL ON pcsync_private.refresh_tokens FROM PUBLIC;
COMMENT ON TABLE pcsync_private.refresh_tokens IS
    'The newest refresh token Entra ID issued to pcsync, per partner tenant and app. Entra ID rotates refresh tokens on every exchange and each lives 90 days, so pcsync keeps the newest instead of the one it was configured with.';
COMMENT ON COLUMN pcsync_private.refresh_tokens.tenant_id IS 'auth.tenant_id the token belongs to.';
COMMENT ON COLUMN pcsync_private.refresh_tokens.client_id IS 'auth.client_id the token belongs to.';
COMMENT ON COLUMN pcsync_private.refresh_tokens.refresh_token IS 'The refresh token itself (a secret).';
COMMENT ON COLUMN pcsync_private.refresh_tokens.seed_fingerprint IS
    'SHA-256 of the configured auth.refresh_token this chain of rotations started from. When the configured token changes (a new consent), the configured one is newer and wins.';
COMMENT ON COLUMN pcsync_private.refresh_tokens.obtained_at IS 'When Entra ID issued this token.';
