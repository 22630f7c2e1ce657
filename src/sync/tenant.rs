//! The partner tenant a pass syncs (`pcsync.partner_tenants`): its Microsoft Entra GUID is
//! written by its first pass, and a pass whose GUID differs from the recorded one stops with an
//! error naming both, so two partner tenants never share a name (and its rows) by accident.
//!
//! The GUID is `auth.tenant_id` when that is a GUID; for a domain (`contoso.onmicrosoft.com`)
//! it is the `tid` claim of the access token Microsoft issued.

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgConnection;
use uuid::Uuid;

/// The tenant's name when none is configured (`auth.tenant_name`): the one every row of a
/// database from before several tenants belongs to.
pub const DEFAULT_TENANT: &str = "default";

/// The partner tenant GUID that `tenant_id` (auth.tenant_id) and the access token name.
pub fn resolved_guid(tenant_id: &str, access_token: &SecretString) -> Option<Uuid> {
    Uuid::parse_str(tenant_id.trim())
        .ok()
        .or_else(|| token_tid(access_token.expose_secret()))
}

/// The `tid` claim of a JWT access token, if it is one (the signature is Microsoft's business:
/// the token came from its token endpoint over TLS).
fn token_tid(token: &str) -> Option<Uuid> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["tid"].as_str().and_then(|t| Uuid::parse_str(t).ok())
}

fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

/// Why a pass may not sync this tenant.
#[derive(Debug, thiserror::Error)]
pub enum TenantMismatch {
    #[error(
        "partner tenant {name:?} is recorded in this database as {recorded}, but auth.tenant_id ({configured}) resolves to {resolved}: one tenant name holds one partner tenant's data. Give this partner tenant a name of its own (auth.tenant_name, or the name of its [[tenants]] entry), or fix auth.tenant_id"
    )]
    OtherGuid {
        name: String,
        recorded: Uuid,
        configured: String,
        resolved: Uuid,
    },
    #[error(
        "partner tenant {resolved} (auth.tenant_id {configured}) is already recorded in this database under the name {other:?}, not {name:?}: one partner tenant has one name, so its rows are never kept twice. Set auth.tenant_name to {other:?}, or fix auth.tenant_id"
    )]
    OtherName {
        name: String,
        other: String,
        configured: String,
        resolved: Uuid,
    },
}

/// Why `name` cannot be asked about (`status --tenant`, `report --tenant`): `None` when the
/// database knows the tenant, else a sentence naming the tenants it has.
pub async fn unknown(pool: &sqlx::PgPool, name: &str) -> Option<String> {
    let known: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pcsync.partner_tenants ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    (!known.iter().any(|k| k == name)).then(|| {
        format!(
            "no partner tenant named {name:?} in this database; its tenants: {}",
            known.join(", ")
        )
    })
}

/// Makes sure the tenant's row exists (every row of a pass references it by name).
pub async fn ensure(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pcsync.partner_tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the tenant's GUID (and domain) the first time; refuses a different GUID later, and
/// a GUID already recorded under another name. Writes nothing when the GUID is known and the
/// same, or cannot be resolved.
pub async fn check_or_record(
    conn: &mut PgConnection,
    name: &str,
    tenant_id: &str,
    resolved: Option<Uuid>,
) -> Result<Result<(), TenantMismatch>, sqlx::Error> {
    let Some(resolved) = resolved else {
        return Ok(Ok(()));
    };
    let recorded: Option<Option<Uuid>> =
        sqlx::query_scalar("SELECT partner_tenant_id FROM pcsync.partner_tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    match recorded.flatten() {
        Some(recorded) if recorded != resolved => Ok(Err(TenantMismatch::OtherGuid {
            name: name.to_string(),
            recorded,
            configured: tenant_id.to_string(),
            resolved,
        })),
        Some(_) => Ok(Ok(())),
        None => {
            let other: Option<String> = sqlx::query_scalar(
                "SELECT name FROM pcsync.partner_tenants WHERE partner_tenant_id = $1 AND name <> $2",
            )
            .bind(resolved)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(other) = other {
                return Ok(Err(TenantMismatch::OtherName {
                    name: name.to_string(),
                    other,
                    configured: tenant_id.to_string(),
                    resolved,
                }));
            }
            let domain = Uuid::parse_str(tenant_id.trim())
                .is_err()
                .then(|| tenant_id.trim().to_string());
            sqlx::query(
                "INSERT INTO pcsync.partner_tenants (name, partner_tenant_id, domain)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET partner_tenant_id = EXCLUDED.partner_tenant_id,
                     domain = coalesce(EXCLUDED.domain, pcsync.partner_tenants.domain)
                 WHERE pcsync.partner_tenants.partner_tenant_id IS NULL",
            )
            .bind(name)
            .bind(resolved)
            .bind(domain)
            .execute(&mut *conn)
            .await?;
            tracing::info!(tenant = name, partner_tenant_id = %resolved, "partner tenant recorded");
            Ok(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guid_is_the_configured_one_or_the_tokens_tid() {
        let guid = Uuid::parse_str("5e3a1f0c-7b2d-4c8e-9f61-0a2b3c4d5e6f").expect("uuid");
        let opaque = SecretString::from("sim-at-1-abc");
        assert_eq!(resolved_guid(&guid.to_string(), &opaque), Some(guid));
        assert_eq!(resolved_guid("contoso.onmicrosoft.com", &opaque), None);
        // {"alg":"none"} . {"tid":"5e3a1f0c-7b2d-4c8e-9f61-0a2b3c4d5e6f","aud":"x"} . sig
        let payload = "eyJ0aWQiOiI1ZTNhMWYwYy03YjJkLTRjOGUtOWY2MS0wYTJiM2M0ZDVlNmYiLCJhdWQiOiJ4In0";
        let jwt = SecretString::from(format!("eyJhbGciOiJub25lIn0.{payload}.c2ln"));
        assert_eq!(resolved_guid("contoso.onmicrosoft.com", &jwt), Some(guid));
        assert_eq!(base64url("aGk"), Some(b"hi".to_vec()));
        assert_eq!(base64url("a*b"), None);
    }
}
