//! Configuration layering (defaults → file → environment) and validation errors.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use pcsync::config::{AuthMode, ConfigError, CustomerSource, LogFormat, Settings, Sources};
use secrecy::ExposeSecret;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(file: Option<PathBuf>, pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load(&Sources {
        file,
        env: env(pairs),
    })
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn error_of(result: Result<Settings, ConfigError>) -> String {
    match result {
        Ok(_) => panic!("expected a configuration error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_load_without_any_file_or_variable() {
    let s = load(None, &[]).expect("defaults are valid");
    assert_eq!(
        s.partner_center.base_url.as_str(),
        "https://api.partnercenter.microsoft.com/"
    );
    assert_eq!(s.partner_center.requests_per_minute, 500);
    assert_eq!(s.auth.mode, AuthMode::AppUser);
    assert_eq!(
        s.auth.authority.as_str(),
        "https://login.microsoftonline.com/"
    );
    assert_eq!(s.customers.source, CustomerSource::File);
    assert_eq!(s.log.format, LogFormat::Text);
    // Finance-grade freshness: hourly incremental passes, a full one every day at 02:00.
    assert_eq!(s.sync.schedule.to_string(), "0 * * * *");
    assert_eq!(s.sync.full_schedule.to_string(), "0 2 * * *");
    assert_eq!(s.sync.due_recheck.as_secs(), 6 * 3600);
    assert!(!s.auth.any_set());
}

#[test]
fn file_overrides_defaults_and_environment_overrides_file() {
    let f = toml_file(
        r#"
[partner_center]
max_concurrency = 16
requests_per_minute = 300
[log]
format = "json"
[customers]
default_mpn_id = "4847383"
"#,
    );
    let s = load(Some(f.path().to_path_buf()), &[]).expect("valid");
    assert_eq!(s.partner_center.max_concurrency, 16);
    assert_eq!(s.partner_center.requests_per_minute, 300);
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.customers.default_mpn_id.as_deref(), Some("4847383"));

    let s = load(
        Some(f.path().to_path_buf()),
        &[
            ("PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY", "4"),
            ("PCSYNC__AUTH__MODE", "app_only"),
        ],
    )
    .expect("valid");
    assert_eq!(s.partner_center.max_concurrency, 4, "environment wins");
    assert_eq!(s.partner_center.requests_per_minute, 300, "file kept");
    assert_eq!(s.auth.mode, AuthMode::AppOnly);
}

#[test]
fn pcsync_config_variable_names_the_file_and_flag_wins_over_it() {
    let from_env = toml_file("[partner_center]\nmax_concurrency = 11\n");
    let from_flag = toml_file("[partner_center]\nmax_concurrency = 22\n");
    let path = from_env.path().to_string_lossy().to_string();
    let s = load(None, &[("PCSYNC_CONFIG", &path)]).expect("valid");
    assert_eq!(s.partner_center.max_concurrency, 11);
    let s = load(
        Some(from_flag.path().to_path_buf()),
        &[("PCSYNC_CONFIG", &path)],
    )
    .expect("valid");
    assert_eq!(s.partner_center.max_concurrency, 22);
}

#[test]
fn missing_config_file_is_an_error_that_names_it() {
    let msg = error_of(load(Some(PathBuf::from("/nonexistent/pcsync.toml")), &[]));
    assert!(msg.contains("/nonexistent/pcsync.toml"), "{msg}");
}

#[test]
fn database_url_variable_is_honoured_below_the_pcsync_one() {
    let s = load(None, &[("DATABASE_URL", "postgres://u@db:5433/x")]).expect("valid");
    assert_eq!(s.database.redacted_url(), "postgres://u@db:5433/x");
    let s = load(
        None,
        &[
            ("DATABASE_URL", "postgres://u@db:5433/x"),
            ("PCSYNC__DATABASE__URL", "postgres://v@other/y"),
        ],
    )
    .expect("valid");
    assert_eq!(s.database.redacted_url(), "postgres://v@other/y");
}

#[test]
fn each_invalid_value_names_its_key_and_the_expected_form() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "PCSYNC__DATABASE__URL",
            "mysql://x",
            "database.url",
            "PostgreSQL URL",
        ),
        (
            "PCSYNC__DATABASE__MAX_CONNECTIONS",
            "zero",
            "database.max_connections",
            "whole number from 1 to 1000",
        ),
        (
            "PCSYNC__DATABASE__MAX_CONNECTIONS",
            "0",
            "database.max_connections",
            "whole number",
        ),
        (
            "PCSYNC__PARTNER_CENTER__BASE_URL",
            "api.partnercenter",
            "partner_center.base_url",
            "http(s) URL",
        ),
        (
            "PCSYNC__PARTNER_CENTER__BASE_URL",
            "ftp://host",
            "partner_center.base_url",
            "http(s) URL",
        ),
        (
            "PCSYNC__PARTNER_CENTER__REQUEST_TIMEOUT_SECS",
            "-1",
            "partner_center.request_timeout_secs",
            "whole number",
        ),
        (
            "PCSYNC__PARTNER_CENTER__MAX_CONCURRENCY",
            "1000",
            "partner_center.max_concurrency",
            "from 1 to 256",
        ),
        (
            "PCSYNC__PARTNER_CENTER__REQUESTS_PER_MINUTE",
            "1.5",
            "partner_center.requests_per_minute",
            "whole number",
        ),
        (
            "PCSYNC__PARTNER_CENTER__MAX_ATTEMPTS",
            "0",
            "partner_center.max_attempts",
            "from 1 to 20",
        ),
        (
            "PCSYNC__AUTH__MODE",
            "user",
            "auth.mode",
            "\"app_user\", \"app_only\"",
        ),
        (
            "PCSYNC__AUTH__AUTHORITY",
            "login",
            "auth.authority",
            "http(s) URL",
        ),
        (
            "PCSYNC__AUTH__TOKEN_VERSION",
            "v3",
            "auth.token_version",
            "\"v1\", \"v2\"",
        ),
        (
            "PCSYNC__AUTH__TENANT_ID",
            "contoso/evil",
            "auth.tenant_id",
            "tenant GUID or a domain",
        ),
        (
            "PCSYNC__AUTH__CLIENT_ID",
            "my-app",
            "auth.client_id",
            "GUID",
        ),
        (
            "PCSYNC__CUSTOMERS__SOURCE",
            "ldap",
            "customers.source",
            "\"file\", \"api\"",
        ),
        (
            "PCSYNC__CUSTOMERS__DEFAULT_MPN_ID",
            "48A7383",
            "customers.default_mpn_id",
            "digits only",
        ),
        (
            "PCSYNC__CUSTOMERS__PAGE_SIZE",
            "501",
            "customers.page_size",
            "from 1 to 500",
        ),
        (
            "PCSYNC__SYNC__SCHEDULE",
            "every day",
            "sync.schedule",
            "cron expression",
        ),
        (
            "PCSYNC__SYNC__SCHEDULE",
            "0 25 * * *",
            "sync.schedule",
            "cron expression",
        ),
        (
            "PCSYNC__LOG__FORMAT",
            "xml",
            "log.format",
            "\"text\", \"json\"",
        ),
    ];
    for (var, value, key, form) in cases {
        let msg = error_of(load(None, &[(var, value)]));
        assert!(msg.starts_with(&format!("{key}: ")), "{var}={value}: {msg}");
        assert!(msg.contains(form), "{var}={value}: {msg}");
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let f = toml_file("[database]\nmax_conections = 3\n");
    let msg = error_of(load(Some(f.path().to_path_buf()), &[]));
    assert!(msg.contains("max_conections"), "{msg}");
    let msg = error_of(load(None, &[("PCSYNC__SYNC__SCHEDULLE", "* * * * *")]));
    assert!(msg.contains("schedulle"), "{msg}");
}

#[test]
fn secrets_come_from_files_and_never_from_both_places() {
    let dir = tempfile::tempdir().expect("dir");
    let secret_path = dir.path().join("secret");
    std::fs::write(&secret_path, "s3cr3t-from-file\n").expect("write");
    let p = secret_path.to_string_lossy().to_string();
    let s = load(None, &[("PCSYNC__AUTH__CLIENT_SECRET_FILE", &p)]).expect("valid");
    let secret = s.auth.client_secret.expect("secret read");
    assert_eq!(
        secret.expose_secret(),
        "s3cr3t-from-file",
        "trailing newline dropped"
    );

    let msg = error_of(load(
        None,
        &[
            ("PCSYNC__AUTH__CLIENT_SECRET_FILE", &p),
            ("PCSYNC__AUTH__CLIENT_SECRET", "inline"),
        ],
    ));
    assert!(
        msg.contains("auth.client_secret and auth.client_secret_file"),
        "{msg}"
    );
    assert!(!msg.contains("inline") && !msg.contains("s3cr3t"), "{msg}");

    let msg = error_of(load(
        None,
        &[("PCSYNC__AUTH__REFRESH_TOKEN_FILE", "/nonexistent/token")],
    ));
    assert!(
        msg.starts_with("auth.refresh_token_file: cannot read"),
        "{msg}"
    );
}

#[test]
fn secrets_are_redacted_in_debug_output_and_errors() {
    let s = load(
        None,
        &[
            ("PCSYNC__AUTH__TENANT_ID", "contoso.onmicrosoft.com"),
            (
                "PCSYNC__AUTH__CLIENT_ID",
                "11111111-2222-3333-4444-555555555555",
            ),
            ("PCSYNC__AUTH__CLIENT_SECRET", "CLIENT-SECRET-VALUE"),
            ("PCSYNC__AUTH__REFRESH_TOKEN", "REFRESH-TOKEN-VALUE"),
            ("DATABASE_URL", "postgres://app:DB-PASSWORD@db:5432/pcsync"),
        ],
    )
    .expect("valid");
    let creds = s.auth.credentials().expect("complete");
    for shown in [
        format!("{s:?}"),
        format!("{creds:?}"),
        format!("{:#?}", s.auth),
        s.database.redacted_url(),
    ] {
        for secret in ["CLIENT-SECRET-VALUE", "REFRESH-TOKEN-VALUE", "DB-PASSWORD"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
    }
    assert_eq!(
        s.database.redacted_url(),
        "postgres://app:***@db:5432/pcsync"
    );
    // The secrets are still there for the code that needs them.
    assert_eq!(creds.client_secret.expose_secret(), "CLIENT-SECRET-VALUE");

    let msg = error_of(load(
        None,
        &[(
            "DATABASE_URL",
            "postgres://app:DB-PASSWORD@db:notaport/pcsync",
        )],
    ));
    assert!(msg.starts_with("database.url"), "{msg}");
    assert!(!msg.contains("DB-PASSWORD"), "{msg}");
}

#[test]
fn incomplete_credentials_name_the_missing_key_for_the_mode() {
    let s = load(
        None,
        &[
            ("PCSYNC__AUTH__TENANT_ID", "contoso.onmicrosoft.com"),
            (
                "PCSYNC__AUTH__CLIENT_ID",
                "11111111-2222-3333-4444-555555555555",
            ),
            ("PCSYNC__AUTH__CLIENT_SECRET", "x"),
        ],
    )
    .expect("valid");
    let msg = s
        .auth
        .credentials()
        .expect_err("needs a refresh token")
        .to_string();
    assert!(msg.starts_with("auth.refresh_token: not set"), "{msg}");

    let s = load(
        None,
        &[
            ("PCSYNC__AUTH__MODE", "app_only"),
            ("PCSYNC__AUTH__TENANT_ID", "contoso.onmicrosoft.com"),
            (
                "PCSYNC__AUTH__CLIENT_ID",
                "11111111-2222-3333-4444-555555555555",
            ),
            ("PCSYNC__AUTH__CLIENT_SECRET", "x"),
        ],
    )
    .expect("valid");
    assert!(
        s.auth.credentials().is_ok(),
        "app_only needs no refresh token"
    );

    let s = load(None, &[("PCSYNC__AUTH__CLIENT_SECRET", "x")]).expect("valid");
    let msg = s.auth.credentials().expect_err("no tenant").to_string();
    assert!(msg.starts_with("auth.tenant_id: not set"), "{msg}");
}

/// Failure 7: crontab day-of-week ranges through 7 (Sunday) are valid crontab.
#[test]
fn crontab_day_ranges_through_sunday_are_accepted() {
    for schedule in ["0 2 * * 1-7", "0 2 * * 5-7", "0 2 * * 0-7", "0 2 1,15 * 7"] {
        let s = load(None, &[("PCSYNC__SYNC__SCHEDULE", schedule)])
            .unwrap_or_else(|e| panic!("{schedule}: {e}"));
        assert_eq!(s.sync.schedule.to_string(), schedule);
    }
    let s = load(
        None,
        &[
            ("PCSYNC__SYNC__SCHEDULE", "30 2 * * *"),
            ("PCSYNC__SYNC__TIMEZONE", "Europe/Berlin"),
        ],
    )
    .expect("a time zone");
    assert_eq!(s.sync.timezone.to_string(), "Europe/Berlin");
    let msg = error_of(load(None, &[("PCSYNC__SYNC__TIMEZONE", "Mars/Olympus")]));
    assert!(msg.starts_with("sync.timezone"), "{msg}");
    assert!(msg.contains("IANA"), "{msg}");
}

/// Failure 8: a bearer token or client secret never travels in clear, except to loopback.
#[test]
fn plain_http_is_refused_except_on_loopback() {
    for (key, var) in [
        (
            "partner_center.base_url",
            "PCSYNC__PARTNER_CENTER__BASE_URL",
        ),
        ("auth.authority", "PCSYNC__AUTH__AUTHORITY"),
    ] {
        let msg = error_of(load(None, &[(var, "http://api.partnercenter.example.com")]));
        assert!(msg.starts_with(key), "{msg}");
        assert!(msg.contains("https"), "{msg}");
        for local in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
            "http://127.10.0.3",
        ] {
            assert!(load(None, &[(var, local)]).is_ok(), "{var}={local}");
        }
        assert!(load(None, &[(var, "https://api.partnercenter.example.com")]).is_ok());
    }
}

/// Debug output of every configuration layer hides the secrets, the raw sources included.
#[test]
fn the_sources_and_raw_values_hide_secrets_in_debug_output() {
    let sources = Sources {
        file: None,
        env: env(&[
            ("PCSYNC__AUTH__CLIENT_SECRET", "CLIENT-SECRET-VALUE"),
            ("DATABASE_URL", "postgres://app:DB-PASSWORD@db:5432/pcsync"),
            (
                "PCSYNC__NOTIFY__WEBHOOK_URL",
                "https://hooks.example/SECRET-PATH",
            ),
        ]),
    };
    let shown = format!("{sources:?}");
    for secret in ["CLIENT-SECRET-VALUE", "DB-PASSWORD", "SECRET-PATH"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    assert!(
        shown.contains("PCSYNC__AUTH__CLIENT_SECRET"),
        "names are kept: {shown}"
    );
}

/// The webhook URL is a secret: refused in clear to a remote host, and never repeated.
#[test]
fn the_webhook_url_is_checked_without_being_shown() {
    let msg = error_of(load(
        None,
        &[(
            "PCSYNC__NOTIFY__WEBHOOK_URL",
            "http://hooks.example.com/services/SECRET-PATH",
        )],
    ));
    assert!(msg.starts_with("notify.webhook_url"), "{msg}");
    assert!(!msg.contains("SECRET-PATH"), "{msg}");
    let s = load(
        None,
        &[
            (
                "PCSYNC__NOTIFY__WEBHOOK_URL",
                "https://hooks.example.com/services/SECRET-PATH",
            ),
            ("PCSYNC__NOTIFY__KINDS", "changed, removed"),
        ],
    )
    .expect("valid");
    assert!(!format!("{s:?}").contains("SECRET-PATH"));
    assert_eq!(s.notify.kinds, vec!["changed", "removed"]);
    assert_eq!(s.notify.renewal_days, 30);
    let msg = error_of(load(None, &[("PCSYNC__NOTIFY__KINDS", "everything")]));
    assert!(msg.starts_with("notify.kinds"), "{msg}");
}
