//! Licence usage (issue 16): subscribed SKUs as a third resource, stored only from a complete
//! answer, a change event per changed count, history, nothing written when nothing changed,
//! and a customer that fails whole.
#![cfg(feature = "simulator")]
#![allow(clippy::type_complexity)]

mod common;

use common::sim::{Setup, count, pass, setup};
use pcsync::simulator::{Endpoint, FaultKind, FaultRule, Knobs, SEED_CUSTOMER_ID, SimConfig};
use pcsync::sync::RunStatus;
use serde_json::Value;
use uuid::Uuid;

fn seed() -> Uuid {
    Uuid::parse_str(SEED_CUSTOMER_ID).expect("guid")
}

async fn stored_skus(s: &Setup, customer: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT sku_id, raw FROM pcsync.subscribed_skus
         WHERE customer_id = $1 AND removed_at IS NULL ORDER BY sku_id",
    )
    .bind(customer)
    .fetch_all(&s.db.pool)
    .await
    .expect("skus")
}

fn serve(s: &Setup, body: &str) {
    s.sim.set_knobs(Knobs {
        subscribed_skus_body: Some(body.to_string()),
        ..Knobs::default()
    });
}

#[tokio::test]
async fn every_published_body_is_stored_whole() {
    let Some(dir) = common::pc_real_dir() else {
        return;
    };
    let s = setup(SimConfig {
        customers: 1,
        ..SimConfig::default()
    })
    .await;
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("pc-real").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.starts_with("subscribedskus__") && name.ends_with(".json")) {
            continue;
        }
        let body = std::fs::read_to_string(entry.path()).expect("body");
        serve(&s, &body);
        let report = pass(&s, &[]).await;
        assert_eq!(
            report.status,
            RunStatus::Succeeded,
            "{name}: {:?}",
            report.error
        );
        let published: Value =
            serde_json::from_str(body.trim_start_matches('\u{feff}')).expect("JSON");
        let mut want: Vec<(String, Value)> = published["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|i| {
                (
                    i["productSku"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    i,
                )
            })
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(stored_skus(&s, seed()).await, want, "{name}");
        checked += 1;
    }
    assert!(checked >= 3, "{checked} published bodies");
}

#[tokio::test]
async fn a_consumed_units_change_is_one_event_and_a_no_change_pass_writes_nothing() {
    let s = setup(SimConfig {
        customers: 3,
        ..SimConfig::default()
    })
    .await;
    let body = |consumed: u32, available: u32| {
        serde_json::json!({"totalCount": 1, "items": [{
            "availableUnits": available, "activeUnits": 40, "consumedUnits": consumed,
            "suspendedUnits": 0, "totalUnits": 40, "warningUnits": 0,
            "productSku": {"id": "05e9a617-0261-4cee-bb44-138d3ef5d965", "name": "Microsoft 365 E3",
                           "skuPartNumber": "SPE_E3", "targetType": "User", "licenseGroupId": "group1"},
            "servicePlans": [], "capabilityStatus": "Enabled"}]})
        .to_string()
    };
    serve(&s, &body(40, 0));
    pass(&s, &[]).await;
    let history = "SELECT count(*) FROM pcsync.subscribed_sku_history";
    assert_eq!(
        count(&s.db.pool, history).await,
        3,
        "a version per customer"
    );

    // Nothing changed: no SKU row, version or event is written.
    let mark = count(&s.db.pool, "SELECT txid_current()").await;
    let again = pass(&s, &[]).await;
    assert_eq!(again.changes, 0);
    for table in ["subscribed_skus", "subscribed_sku_history", "change_events"] {
        assert_eq!(
            count(
                &s.db.pool,
                &format!("SELECT count(*) FROM pcsync.{table} WHERE xmin::text::bigint >= {mark}")
            )
            .await,
            0,
            "{table}"
        );
    }

    // Two seats unassigned: one event per customer (consumed 40 → 38; available moves with it).
    serve(&s, &body(38, 2));
    let report = pass(&s, &[]).await;
    let events: Vec<(String, Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT entity, field, old_value, new_value FROM pcsync.change_events WHERE run_id = $1",
    )
    .bind(report.run_id)
    .fetch_all(&s.db.pool)
    .await
    .expect("events");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e
        == &(
            "subscribed_sku".to_string(),
            Some("consumed_units".to_string()),
            Some("40".to_string()),
            Some("38".to_string())
        )));
    assert_eq!(count(&s.db.pool, history).await, 6, "a new version each");
    let available: i64 = sqlx::query_scalar(
        "SELECT available_units FROM pcsync.subscribed_skus WHERE customer_id = $1",
    )
    .bind(seed())
    .fetch_one(&s.db.pool)
    .await
    .expect("available");
    assert_eq!(available, 2, "stored, not diffed");
}

#[tokio::test]
async fn a_failed_subscribed_skus_fetch_fails_the_customer_and_removes_nothing() {
    let s = setup(SimConfig {
        customers: 4,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let victim = s.sim.customer_ids()[2];
    let before = stored_skus(&s, victim).await;
    assert!(!before.is_empty());
    let subs_before = count(
        &s.db.pool,
        &format!("SELECT count(*) FROM pcsync.subscriptions WHERE customer_id = '{victim}' AND removed_at IS NULL"),
    )
    .await;
    s.sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Empty)
                .for_customer(victim)
                .on(Endpoint::SubscribedSkus),
            FaultRule::always(FaultKind::Status500)
                .for_customer(victim)
                .on(Endpoint::Subscriptions),
        ],
        ..Knobs::default()
    });
    // The SKUs answer an empty list, but the subscriptions fail: the customer fails whole.
    let report = pass(&s, &[("PCSYNC__PARTNER_CENTER__MAX_ATTEMPTS", "1")]).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.customers_failed, 1);
    assert_eq!(stored_skus(&s, victim).await, before, "nothing removed");
    s.sim.set_knobs(Knobs {
        faults: vec![
            FaultRule::always(FaultKind::Status500)
                .for_customer(victim)
                .on(Endpoint::SubscribedSkus),
        ],
        ..Knobs::default()
    });
    let report = pass(&s, &[("PCSYNC__PARTNER_CENTER__MAX_ATTEMPTS", "1")]).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.customers_failed, 1);
    assert_eq!(stored_skus(&s, victim).await, before);
    assert_eq!(
        count(
            &s.db.pool,
            &format!("SELECT count(*) FROM pcsync.subscriptions WHERE customer_id = '{victim}' AND removed_at IS NULL"),
        )
        .await,
        subs_before,
        "its subscriptions are untouched too"
    );
    let operation: String = sqlx::query_scalar(
        "SELECT operation FROM pcsync.sync_errors WHERE run_id = $1 AND customer_id = $2",
    )
    .bind(report.run_id)
    .bind(victim)
    .fetch_one(&s.db.pool)
    .await
    .expect("recorded");
    assert_eq!(operation, "get_subscribed_skus");
}

#[tokio::test]
async fn license_usage_follows_the_credentials_and_says_which_keys_disagree() {
    let s = setup(SimConfig {
        customers: 2,
        ..SimConfig::default()
    })
    .await;
    let app_only = [("PCSYNC__AUTH__MODE", "app_only")];
    let report = pass(&s, &app_only).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.api_requests, 2, "App-only: subscriptions only");
    assert_eq!(
        count(&s.db.pool, "SELECT count(*) FROM pcsync.subscribed_skus").await,
        0
    );
    let off = pass(&s, &[("PCSYNC__SYNC__LICENSE_USAGE", "false")]).await;
    assert_eq!(
        off.api_requests, 5,
        "subscriptions and managed services, and a page of the activity log"
    );
    let err = pcsync::config::Settings::load(&pcsync::config::Sources {
        file: None,
        env: common::sim::env(
            &s,
            &[
                ("PCSYNC__AUTH__MODE", "app_only"),
                ("PCSYNC__SYNC__LICENSE_USAGE", "true"),
            ],
        ),
    })
    .map(|_| ())
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("sync.license_usage") && text.contains("auth.mode"),
        "{text}"
    );
}

fn usage_body() -> String {
    let sku = |id: &str, name: &str, part: &str, active: i64, consumed: i64| {
        serde_json::json!({
            "availableUnits": (active - consumed).max(0), "activeUnits": active,
            "consumedUnits": consumed, "suspendedUnits": 0, "totalUnits": active, "warningUnits": 0,
            "productSku": {"id": id, "name": name, "skuPartNumber": part, "targetType": "User",
                           "licenseGroupId": "group1"},
            "servicePlans": [], "capabilityStatus": "Enabled"})
    };
    serde_json::json!({"totalCount": 3, "items": [
        sku("05e9a617-0261-4cee-bb44-138d3ef5d965", "Microsoft 365 E3", "SPE_E3", 40, 30),
        sku("f30db892-07e9-47e9-837c-80727f46fd3d", "Microsoft Power Automate Free", "FLOW_FREE", 10000, 3),
        sku("6fd2c87f-b296-42f0-b197-1e91e994b900", "Office 365 E3", "ENTERPRISEPACK", 10, 12)
    ]})
    .to_string()
}

#[tokio::test]
async fn unassigned_seats_honour_exclusions_and_the_spare_allowance() {
    let s = setup(SimConfig {
        customers: 1,
        ..SimConfig::default()
    })
    .await;
    serve(&s, &usage_body());
    pass(&s, &[]).await;
    let usage: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT sku_part_number, unassigned, over_assigned, match_basis
         FROM pcsync.license_usage ORDER BY sku_part_number",
    )
    .fetch_all(&s.db.pool)
    .await
    .expect("usage");
    assert_eq!(
        usage,
        vec![
            ("ENTERPRISEPACK".into(), 0, 2, "unmatched".into()),
            ("FLOW_FREE".into(), 9997, 0, "unmatched".into()),
            ("SPE_E3".into(), 10, 0, "unmatched".into()),
        ]
    );
    let unassigned = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT sku_part_number, unassigned_beyond_spare FROM pcsync.unassigned_seats",
        )
        .fetch_all(&s.db.pool)
        .await
        .expect("unassigned")
    };
    assert_eq!(
        unassigned().await,
        vec![("SPE_E3".into(), 10)],
        "free SKUs are left out by the seeded exclusions; nothing unassigned, nothing listed"
    );
    sqlx::query("UPDATE pcsync.usage_settings SET spare_seats = 4")
        .execute(&s.db.pool)
        .await
        .expect("spare");
    assert_eq!(unassigned().await, vec![("SPE_E3".into(), 6)]);
    sqlx::query("INSERT INTO pcsync.usage_exclusions (pattern, reason) VALUES ('SPE_%', 'test')")
        .execute(&s.db.pool)
        .await
        .expect("exclusion");
    assert!(unassigned().await.is_empty(), "an exclusion is honoured");
    // A row of sku_offers wins: the SKU is matched to the offer it names.
    let offer: String = sqlx::query_scalar(
        "SELECT offer_id FROM pcsync.subscriptions WHERE customer_id = $1 ORDER BY subscription_id LIMIT 1",
    )
    .bind(seed())
    .fetch_one(&s.db.pool)
    .await
    .expect("offer");
    sqlx::query("INSERT INTO pcsync.sku_offers (sku_part_number, offer_id) VALUES ('SPE_E3', $1)")
        .bind(&offer)
        .execute(&s.db.pool)
        .await
        .expect("sku offer");
    let (matched, basis): (Option<String>, String) = sqlx::query_as(
        "SELECT offer_id, match_basis FROM pcsync.license_usage WHERE sku_part_number = 'SPE_E3'",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("matched");
    assert_eq!(
        (matched.as_deref(), basis.as_str()),
        (Some(offer.as_str()), "sku_offers")
    );
}

#[tokio::test]
async fn simulated_skus_match_their_offers_by_part_number_or_name_never_by_guess() {
    let s = setup(SimConfig {
        customers: 6,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let bases: Vec<(String, i64)> = sqlx::query_as(
        "SELECT match_basis, count(*) FROM pcsync.license_usage GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&s.db.pool)
    .await
    .expect("bases");
    let basis = |b: &str| bases.iter().find(|x| x.0 == b).map_or(0, |x| x.1);
    assert!(basis("part_number") > 0, "{bases:?}");
    assert!(basis("product_name") > 0, "{bases:?}");
    assert!(basis("unmatched") > 0, "the free SKUs: {bases:?}");
    // A part-number match names the very product and SKU.
    let wrong = count(
        &s.db.pool,
        "SELECT count(*) FROM pcsync.license_usage u
         WHERE u.match_basis = 'part_number'
           AND u.sku_part_number <> split_part(u.offer_id, ':', 1) || '/' || split_part(u.offer_id, ':', 2)",
    )
    .await;
    assert_eq!(wrong, 0);
}

#[tokio::test]
async fn pcsync_editor_may_change_an_exclusion_and_nothing_else() {
    let s = setup(SimConfig {
        customers: 1,
        ..SimConfig::default()
    })
    .await;
    pass(&s, &[]).await;
    let mut tx = s.db.pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL ROLE pcsync_editor")
        .execute(&mut *tx)
        .await
        .expect("role");
    sqlx::query(
        "INSERT INTO pcsync.usage_exclusions (pattern, reason) VALUES ('MCOEV', 'phone system')",
    )
    .execute(&mut *tx)
    .await
    .expect("the editor adds an exclusion");
    sqlx::query("UPDATE pcsync.usage_settings SET spare_seats = 2")
        .execute(&mut *tx)
        .await
        .expect("and sets the allowance");
    sqlx::query("SELECT count(*) FROM pcsync.unassigned_seats")
        .execute(&mut *tx)
        .await
        .expect("and reads the views it tunes");
    let refused = sqlx::query("UPDATE pcsync.subscriptions SET quantity = 1")
        .execute(&mut *tx)
        .await
        .expect_err("but writes nothing else");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
}
