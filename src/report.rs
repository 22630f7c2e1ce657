//! `pcsync report`: one self-contained HTML file (no external assets, opens offline) for the
//! people who do not have a BI tool at hand: licenses over time per offer, changes per day by
//! kind, the largest customers, the renewal calendar and the renewal decisions of the next 90
//! days, open cancellation windows and pass health, drawn as inline SVG and tables from the
//! reporting views.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::status::RunLine;

/// One partner tenant's line of the report's tenant section.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub tenant: String,
    pub customers: i64,
    pub subscriptions: i64,
    pub licenses: i64,
    pub failing: i64,
    pub last_good_pass: Option<DateTime<Utc>>,
}

/// Everything the report shows.
#[derive(Debug, Default)]
pub struct ReportData {
    pub generated_at: DateTime<Utc>,
    /// The partner tenant the report is of (`--tenant`), or `None` for all of them.
    pub tenant: Option<String>,
    /// Each partner tenant's figures (a customer of two tenants counts under each).
    pub tenants: Vec<TenantRow>,
    pub customers: i64,
    pub subscriptions: i64,
    pub licenses: i64,
    pub failing_customers: i64,
    /// (day, offer, licenses) for the largest offers over the last 30 days.
    pub licenses_by_day: Vec<(NaiveDate, String, i64)>,
    /// (day, kind, changes) over the last 30 days.
    pub changes_by_day: Vec<(NaiveDate, String, i64)>,
    /// (customer, licenses), largest first.
    pub largest_customers: Vec<(String, i64)>,
    /// (week, auto-renews, subscriptions, licenses) for terms ending in the next 90 days.
    pub renewals: Vec<(NaiveDate, bool, i64, i64)>,
    /// (week, decision, licenses) of the renewal decisions of the next 90 days.
    pub decisions_by_week: Vec<(NaiveDate, String, i64)>,
    /// The renewal decisions of the next 90 days, soonest first.
    pub decisions: Vec<DecisionRow>,
    /// The open refund windows, soonest closing first.
    pub windows: Vec<WindowRow>,
    /// (customer, unassigned seats beyond the allowance), most first.
    pub unassigned_by_customer: Vec<(String, i64)>,
    /// Unassigned seats by customer and SKU, most first.
    pub unassigned: Vec<UnassignedRow>,
    /// Objects added by customers' first loads in the last 30 days, left out of the changes
    /// chart (a first load is not a day of changes).
    pub first_load_additions: i64,
    /// The last passes, newest first.
    pub runs: Vec<RunLine>,
}

/// A row of `renewal_decisions`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub tenant: String,
    pub company_name: Option<String>,
    pub offer_name: Option<String>,
    pub term_duration: Option<String>,
    pub ends_on: NaiveDate,
    pub days_left: i32,
    pub decision: String,
    pub licenses: Option<i64>,
    pub licenses_next_term: Option<i64>,
}

/// A row of `unassigned_seats`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnassignedRow {
    pub company_name: Option<String>,
    pub sku_name: Option<String>,
    pub sku_part_number: Option<String>,
    pub active_units: Option<i64>,
    pub consumed_units: Option<i64>,
    pub unassigned_beyond_spare: Option<i64>,
}

/// A row of `cancellation_windows`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WindowRow {
    pub tenant: String,
    pub company_name: Option<String>,
    pub offer_name: Option<String>,
    pub refundable_quantity: Option<i64>,
    pub allowed_until: DateTime<Utc>,
    pub hours_left: f64,
}

/// The most rows the report's tables show.
const TABLE_ROWS: i64 = 50;

/// Reads the report's numbers from the views: of one partner tenant, or of all (`None`).
/// Across tenants a customer of two counts under each, and its licence usage once.
pub async fn read(
    pool: &PgPool,
    clock: &crate::clock::Clock,
    tenant: Option<&str>,
) -> Result<ReportData, sqlx::Error> {
    let mut tx = pool.begin().await?;
    crate::clock::set_for_transaction(&mut tx, clock).await?;
    // Every query takes the tenant (NULL: all tenants).
    let tenants: Vec<TenantRow> = sqlx::query_as(
        "SELECT p.name AS tenant,
                (SELECT count(*) FROM pcsync.customer_health h
                  WHERE h.tenant = p.name AND h.listed) AS customers,
                coalesce((SELECT sum(subscriptions) FROM pcsync.license_totals t
                  WHERE t.tenant = p.name), 0)::bigint AS subscriptions,
                coalesce((SELECT sum(licenses) FROM pcsync.license_totals t
                  WHERE t.tenant = p.name), 0)::bigint AS licenses,
                (SELECT count(*) FROM pcsync.customer_health h
                  WHERE h.tenant = p.name AND h.listed AND h.status = 'failed') AS failing,
                (SELECT max(finished_at) FROM pcsync.sync_runs r
                  WHERE r.tenant = p.name AND r.status IN ('succeeded', 'partial')) AS last_good_pass
         FROM pcsync.partner_tenants p
         WHERE ($1::text IS NULL OR p.name = $1)
           AND EXISTS (SELECT 1 FROM pcsync.sync_runs r WHERE r.tenant = p.name)
         ORDER BY p.name",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let (customers, subscriptions, licenses): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT (tenant, customer_id)), coalesce(sum(subscriptions), 0)::bigint,
                coalesce(sum(licenses), 0)::bigint
         FROM pcsync.license_totals WHERE ($1::text IS NULL OR tenant = $1)",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let failing_customers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pcsync.customer_health
         WHERE ($1::text IS NULL OR tenant = $1) AND listed AND status = 'failed'",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let licenses_by_day = sqlx::query_as(
        "WITH top AS (
             SELECT offer_name FROM pcsync.license_totals
             WHERE offer_name IS NOT NULL AND ($1::text IS NULL OR tenant = $1)
             GROUP BY offer_name ORDER BY sum(licenses) DESC LIMIT 6
         )
         SELECT d::date, l.offer_name, sum(l.licenses)::bigint
         FROM generate_series(pcsync.clock_now()::date - 29, pcsync.clock_now()::date, interval '1 day') AS d
         CROSS JOIN LATERAL pcsync.license_counts_at(least(d + interval '1 day', pcsync.clock_now())) AS l
         WHERE l.offer_name IN (SELECT offer_name FROM top) AND ($1::text IS NULL OR l.tenant = $1)
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    // A customer's first load adds every object it owns: not a day of changes. Its additions
    // (the added events of the first pass that wrote any event for the customer) are counted
    // apart.
    let first_load = "WITH first AS (
             SELECT DISTINCT ON (tenant, customer_id) tenant, customer_id, run_id
             FROM pcsync.change_events WHERE ($1::text IS NULL OR tenant = $1)
             ORDER BY tenant, customer_id, detected_at, event_id
         ), recent AS (
             SELECT e.detected_at, e.kind,
                    (e.kind = 'added' AND f.run_id IS NOT NULL) AS first_load
             FROM pcsync.change_events e
             LEFT JOIN first f
                    ON f.tenant = e.tenant AND f.customer_id = e.customer_id AND f.run_id = e.run_id
             WHERE e.detected_at >= pcsync.clock_now()::date - 29
               AND ($1::text IS NULL OR e.tenant = $1)
         )";
    let changes_by_day = sqlx::query_as(&format!(
        "{first_load}
         SELECT detected_at::date, kind, count(*) FROM recent WHERE NOT first_load
         GROUP BY 1, 2 ORDER BY 1, 2"
    ))
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let first_load_additions: i64 = sqlx::query_scalar(&format!(
        "{first_load} SELECT count(*) FROM recent WHERE first_load"
    ))
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let decisions_by_week = sqlx::query_as(
        "SELECT date_trunc('week', ends_on)::date, decision, coalesce(sum(licenses), 0)::bigint
         FROM pcsync.renewal_decisions WHERE ($1::text IS NULL OR tenant = $1)
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let decisions = sqlx::query_as(
        "SELECT tenant, company_name, offer_name, term_duration, ends_on, days_left, decision,
                licenses, licenses_next_term
         FROM pcsync.renewal_decisions WHERE ($2::text IS NULL OR tenant = $2)
         ORDER BY ends_on, company_name, offer_name, tenant LIMIT $1",
    )
    .bind(TABLE_ROWS)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let unassigned_by_customer = sqlx::query_as(
        "SELECT coalesce(company_name, customer_id::text), sum(unassigned_beyond_spare)::bigint
         FROM pcsync.unassigned_seats
         WHERE CASE WHEN $1::text IS NULL THEN usage_counted ELSE tenant = $1 END
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let unassigned = sqlx::query_as(
        "SELECT company_name, sku_name, sku_part_number, active_units, consumed_units,
                unassigned_beyond_spare
         FROM pcsync.unassigned_seats
         WHERE CASE WHEN $2::text IS NULL THEN usage_counted ELSE tenant = $2 END
         ORDER BY unassigned_beyond_spare DESC, company_name, sku_part_number LIMIT $1",
    )
    .bind(TABLE_ROWS)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let windows = sqlx::query_as(
        "SELECT tenant, company_name, offer_name, refundable_quantity, allowed_until,
                hours_left::float8 AS hours_left
         FROM pcsync.cancellation_windows WHERE ($2::text IS NULL OR tenant = $2)
         ORDER BY allowed_until, company_name, tenant LIMIT $1",
    )
    .bind(TABLE_ROWS)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let largest_customers = sqlx::query_as(
        "SELECT coalesce(company_name, customer_id::text)
                    || CASE WHEN $1::text IS NULL AND (SELECT count(DISTINCT tenant) FROM pcsync.sync_runs) > 1
                            THEN ' (' || tenant || ')' ELSE '' END,
                sum(licenses)::bigint
         FROM pcsync.license_totals WHERE ($1::text IS NULL OR tenant = $1)
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let renewals = sqlx::query_as(
        "SELECT date_trunc('week', ends_on)::date, auto_renews, count(*),
                coalesce(sum(quantity), 0)::bigint
         FROM pcsync.upcoming_renewals WHERE days_left <= 90 AND ($1::text IS NULL OR tenant = $1)
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let runs = crate::status::last_runs(pool, 20, tenant).await?;
    Ok(ReportData {
        generated_at: clock.now(),
        tenant: tenant.map(str::to_string),
        tenants,
        customers,
        subscriptions,
        licenses,
        failing_customers,
        licenses_by_day,
        changes_by_day,
        largest_customers,
        renewals,
        decisions_by_week,
        decisions,
        windows,
        unassigned_by_customer,
        unassigned,
        first_load_additions,
        runs,
    })
}

/// Text for HTML and SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PALETTE: [&str; 8] = [
    "#2b6cb0", "#dd6b20", "#38a169", "#d53f8c", "#805ad5", "#718096", "#d69e2e", "#319795",
];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;

fn empty(message: &str) -> String {
    format!("<p class=\"empty\">{}</p>", esc(message))
}

fn legend(names: &[String]) -> String {
    let mut out = String::from("<p class=\"legend\">");
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[i % PALETTE.len()],
            esc(n)
        );
    }
    out.push_str("</p>");
    out
}

/// A line per series over the days, with a y axis from 0.
fn line_chart(points: &[(NaiveDate, String, i64)]) -> String {
    let mut days: Vec<NaiveDate> = points.iter().map(|p| p.0).collect();
    days.sort();
    days.dedup();
    let mut names: Vec<String> = points.iter().map(|p| p.1.clone()).collect();
    names.sort();
    names.dedup();
    if days.is_empty() {
        return empty("No license history yet: it starts with the first pass.");
    }
    let max = points.iter().map(|p| p.2).max().unwrap_or(0).max(1) as f64;
    let step = (WIDTH - LEFT - 10.0) / (days.len().max(2) - 1) as f64;
    let x = |d: &NaiveDate| LEFT + step * days.iter().position(|x| x == d).unwrap_or(0) as f64;
    let y = |v: i64| HEIGHT - BOTTOM - (HEIGHT - BOTTOM - 10.0) * v as f64 / max;
    let mut svg = axes(max, &days);
    for (i, name) in names.iter().enumerate() {
        let series: Vec<String> = points
            .iter()
            .filter(|p| &p.1 == name)
            .map(|p| format!("{:.1},{:.1}", x(&p.0), y(p.2)))
            .collect();
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            series.join(" "),
            esc(name)
        );
        for p in points.iter().filter(|p| &p.1 == name) {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"><title>{} {}: {} licenses</title></circle>",
                x(&p.0),
                y(p.2),
                esc(name),
                p.0,
                p.2
            );
        }
    }
    svg.push_str("</svg>");
    svg + &legend(&names)
}

/// The frame: y gridlines with values, first and last day under the x axis.
fn axes(max: f64, days: &[NaiveDate]) -> String {
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">"
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = HEIGHT - BOTTOM - (HEIGHT - BOTTOM - 10.0) * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 4.0,
            v.round()
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            "<text x=\"{LEFT}\" y=\"{:.1}\" class=\"tick\">{first}</text><text x=\"{WIDTH}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{last}</text>",
            HEIGHT - 8.0,
            HEIGHT - 8.0
        );
    }
    svg
}

/// Bars per day (or week), stacked by series.
fn stacked_bars(points: &[(NaiveDate, String, i64)], unit: &str) -> String {
    let mut days: Vec<NaiveDate> = points.iter().map(|p| p.0).collect();
    days.sort();
    days.dedup();
    let mut names: Vec<String> = points.iter().map(|p| p.1.clone()).collect();
    names.sort();
    names.dedup();
    if days.is_empty() {
        return empty(&format!("No {unit} in this period."));
    }
    let totals: Vec<i64> = days
        .iter()
        .map(|d| points.iter().filter(|p| &p.0 == d).map(|p| p.2).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = (WIDTH - LEFT - 10.0) / days.len() as f64;
    let bar = (slot * 0.7).max(2.0);
    let scale = (HEIGHT - BOTTOM - 10.0) / max;
    let mut svg = axes(max, &days);
    for (i, day) in days.iter().enumerate() {
        let mut top = HEIGHT - BOTTOM;
        for (k, name) in names.iter().enumerate() {
            let v: i64 = points
                .iter()
                .filter(|p| &p.0 == day && &p.1 == name)
                .map(|p| p.2)
                .sum();
            if v == 0 {
                continue;
            }
            let h = v as f64 * scale;
            top -= h;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{day} {}: {v} {unit}</title></rect>",
                LEFT + slot * i as f64 + (slot - bar) / 2.0,
                PALETTE[k % PALETTE.len()],
                esc(name)
            );
        }
    }
    svg.push_str("</svg>");
    svg + &legend(&names)
}

/// Horizontal bars, largest first, with their values.
fn horizontal_bars(rows: &[(String, i64)]) -> String {
    if rows.is_empty() {
        return empty("No licenses stored yet.");
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let row_h = 24.0;
    let label = 240.0;
    let height = row_h * rows.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\">"
    );
    for (i, (name, v)) in rows.iter().enumerate() {
        let y = row_h * i as f64 + 5.0;
        let w = (WIDTH - label - 80.0) * *v as f64 / max;
        let short: String = name.chars().take(34).collect();
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"label\" text-anchor=\"end\">{}</text><rect x=\"{label}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {v} licenses</title></rect><text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{v}</text>",
            label - 8.0,
            y + 15.0,
            esc(&short),
            row_h - 6.0,
            PALETTE[0],
            esc(name),
            label + w + 6.0,
            y + 15.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole report as one HTML document.
pub fn render(d: &ReportData) -> String {
    let renewals: Vec<(NaiveDate, String, i64)> = d
        .renewals
        .iter()
        .map(|(week, auto, _, licenses)| {
            let what = if *auto {
                "renews (auto-renew on)"
            } else {
                "ends (auto-renew off)"
            };
            (*week, what.to_string(), *licenses)
        })
        .collect();
    // Several tenants in one report: a section of theirs, and the tenant beside each row.
    let several = d.tenant.is_none() && d.tenants.len() > 1;
    let cell = |tenant: &str| {
        if several {
            format!("<td>{}</td>", esc(tenant))
        } else {
            String::new()
        }
    };
    let head = if several { "<th>tenant</th>" } else { "" };
    let mut tenants = String::new();
    if several {
        for t in &d.tenants {
            let _ = write!(
                tenants,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.tenant),
                t.customers,
                t.subscriptions,
                t.licenses,
                t.failing,
                t.last_good_pass.map_or("never".to_string(), |at| at
                    .format("%Y-%m-%d %H:%M UTC")
                    .to_string())
            );
        }
        tenants = format!(
            "<h2>Partner tenants</h2>\n<p class=\"muted\">A customer of two partner tenants is counted under each; its licence usage (its own tenant's) once, below. <code>pcsync report --tenant NAME</code> writes one tenant's report.</p>\n<table id=\"tenants\"><tr><th>tenant</th><th>customers</th><th>subscriptions</th><th>licenses</th><th>customers failing</th><th>last good pass</th></tr>\n{tenants}</table>"
        );
    }
    let mut decisions = String::new();
    for r in &d.decisions {
        let _ = write!(
            decisions,
            "<tr class=\"{}\">{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} → {}</td></tr>",
            esc(&r.decision.replace(' ', "-")),
            cell(&r.tenant),
            r.ends_on,
            r.days_left,
            esc(r.company_name.as_deref().unwrap_or("")),
            esc(r.offer_name.as_deref().unwrap_or("")),
            esc(r.term_duration.as_deref().unwrap_or("")),
            esc(&r.decision),
            r.licenses.unwrap_or(0),
            r.licenses_next_term.unwrap_or(0)
        );
    }
    let decisions = if d.decisions.is_empty() {
        empty("No term longer than a month ends in the next 90 days.")
    } else {
        format!(
            "<table id=\"decisions\"><tr>{head}<th>ends</th><th>days</th><th>customer</th><th>offer</th><th>term</th><th>decision</th><th>licenses → next term</th></tr>\n{decisions}</table>"
        )
    };
    let mut windows = String::new();
    for w in &d.windows {
        let _ = write!(
            windows,
            "<tr>{}<td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            cell(&w.tenant),
            w.allowed_until.format("%Y-%m-%d %H:%M UTC"),
            w.hours_left,
            esc(w.company_name.as_deref().unwrap_or("")),
            esc(w.offer_name.as_deref().unwrap_or("")),
            w.refundable_quantity.unwrap_or(0)
        );
    }
    let windows = if d.windows.is_empty() {
        empty("No refund window is open.")
    } else {
        format!(
            "<table id=\"windows\"><tr>{head}<th>closes</th><th>hours left</th><th>customer</th><th>offer</th><th>refundable seats</th></tr>\n{windows}</table>"
        )
    };
    let mut unassigned = String::new();
    for u in &d.unassigned {
        let _ = write!(
            unassigned,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(u.company_name.as_deref().unwrap_or("")),
            esc(u.sku_name.as_deref().unwrap_or("")),
            esc(u.sku_part_number.as_deref().unwrap_or("")),
            u.active_units.unwrap_or(0),
            u.consumed_units.unwrap_or(0),
            u.unassigned_beyond_spare.unwrap_or(0)
        );
    }
    let unassigned = if d.unassigned.is_empty() {
        empty("No seats unassigned beyond the allowance (or no licence usage fetched yet).")
    } else {
        format!(
            "<table id=\"unassigned\"><tr><th>customer</th><th>SKU</th><th>part number</th><th>active</th><th>assigned</th><th>unassigned</th></tr>\n{unassigned}</table>"
        )
    };
    let first_loads = if d.first_load_additions > 0 {
        format!(
            "<p class=\"muted\">Not drawn: {} objects added by customers' first loads (a first load is not a day of changes).</p>",
            d.first_load_additions
        )
    } else {
        String::new()
    };
    let mut runs = String::new();
    for r in &d.runs {
        let _ = write!(
            runs,
            "<tr class=\"{}\">{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.status),
            cell(&r.tenant),
            r.started_at.format("%Y-%m-%d %H:%M UTC"),
            esc(&r.kind),
            esc(&r.status),
            r.duration_secs
                .map_or("-".to_string(), |s| format!("{s:.1} s")),
            r.customers_succeeded,
            r.customers_failed,
            r.changes_detected
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pcsync report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 820px; color: #1a202c; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
.kpis {{ display: flex; gap: 12px; flex-wrap: wrap; }} .kpi {{ background: #f7fafc; border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px 14px; }}
.kpi b {{ display: block; font-size: 20px; }} .muted, .empty {{ color: #718096; }}
svg {{ width: 100%; height: auto; }} .grid {{ stroke: #e2e8f0; }} .tick, .label, .value {{ font-size: 11px; fill: #4a5568; }}
.legend span {{ margin-right: 14px; white-space: nowrap; }} .legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ padding: 3px 8px; border-bottom: 1px solid #edf2f7; text-align: left; }}
tr.failed td, tr.abandoned td, tr.ends td {{ color: #c53030; }} tr.partial td, tr.renews-with-changes td {{ color: #b7791f; }}
</style></head>
<body>
<h1>pcsync report{of_tenant}</h1>
<p class="muted">Generated {generated}. Numbers from the views current_subscriptions, license_totals, license_counts_at, upcoming_renewals, renewal_decisions, unassigned_seats, cancellation_windows, change_events and sync_runs.</p>
<div class="kpis">
<div class="kpi"><b>{customers}</b>customers</div>
<div class="kpi"><b>{subscriptions}</b>subscriptions</div>
<div class="kpi"><b id="total-licenses">{licenses}</b>licenses</div>
<div class="kpi"><b>{failing}</b>customers failing</div>
</div>
{tenants}
<h2>Licenses over time, largest offers (last 30 days)</h2>
{licenses_chart}
<h2>Changes per day by kind (last 30 days)</h2>
{changes_chart}
{first_loads}
<h2>Largest customers by licenses</h2>
{customers_chart}
<h2>Renewal calendar: licenses whose term ends, by week (next 90 days)</h2>
{renewals_chart}
<h2>Renewal decisions: terms longer than a month, by week (next 90 days)</h2>
<p class="muted">Once the date passes, the customer is committed for another term; seats can only be reduced at the end of a term. Monthly roll-overs are left out.</p>
{decisions_chart}
{decisions}
<h2>Unassigned seats: licences paid for and not assigned (after exclusions and the spare allowance)</h2>
{unassigned_chart}
{unassigned}
<h2>Open cancellation windows: seats that can still be returned with a refund</h2>
{windows}
<h2>Pass health (last 20 passes)</h2>
<table id="runs"><tr>{head}<th>started</th><th>kind</th><th>status</th><th>duration</th><th>customers ok</th><th>failed</th><th>changes</th></tr>
{runs}
</table>
</body></html>
"#,
        generated = d.generated_at.format("%Y-%m-%d %H:%M UTC"),
        of_tenant = d
            .tenant
            .as_deref()
            .map_or(String::new(), |t| format!(": partner tenant {}", esc(t))),
        customers = d.customers,
        subscriptions = d.subscriptions,
        licenses = d.licenses,
        failing = d.failing_customers,
        licenses_chart = line_chart(&d.licenses_by_day),
        changes_chart = stacked_bars(&d.changes_by_day, "changes"),
        customers_chart = horizontal_bars(&d.largest_customers),
        renewals_chart = stacked_bars(&renewals, "licenses ending"),
        decisions_chart = stacked_bars(&d.decisions_by_week, "licenses"),
        unassigned_chart = if d.unassigned_by_customer.is_empty() {
            String::new()
        } else {
            horizontal_bars(&d.unassigned_by_customer)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_empty_data_says_so() {
        let evil = "<script>alert(1)</script> & Co";
        let d = ReportData {
            largest_customers: vec![(evil.into(), 5)],
            decisions: vec![DecisionRow {
                tenant: "default".into(),
                company_name: Some(evil.into()),
                offer_name: Some("<b>E3</b>".into()),
                term_duration: Some("P1Y".into()),
                ends_on: NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default(),
                days_left: 20,
                decision: "renews with changes".into(),
                licenses: Some(40),
                licenses_next_term: Some(25),
            }],
            unassigned: vec![UnassignedRow {
                company_name: Some(evil.into()),
                sku_name: Some("<i>E3</i>".into()),
                sku_part_number: Some("SPE_E3".into()),
                active_units: Some(40),
                consumed_units: Some(30),
                unassigned_beyond_spare: Some(10),
            }],
            windows: vec![WindowRow {
                tenant: "default".into(),
                company_name: Some(evil.into()),
                offer_name: None,
                refundable_quantity: Some(3),
                allowed_until: DateTime::UNIX_EPOCH,
                hours_left: 5.0,
            }],
            ..ReportData::default()
        };
        let html = render(&d);
        assert!(!html.contains("<script>") && !html.contains("<b>E3"));
        let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co";
        assert!(!html.contains("<i>E3"));
        for table in ["id=\"decisions\"", "id=\"windows\"", "id=\"unassigned\""] {
            let at = html.find(table).expect(table);
            let end = html[at..].find("</table>").map_or(html.len(), |e| at + e);
            assert!(html[at..end].contains(escaped), "escaped in {table}");
        }
        assert!(html.contains("40 → 25"));
        assert!(html.contains("No license history yet"));
        assert!(html.contains("No changes in this period."));
    }
}
