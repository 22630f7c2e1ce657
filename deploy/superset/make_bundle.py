#!/usr/bin/env python3
"""Writes the Superset import bundle of pcsync's dashboard into deploy/superset/bundle/.

The bundle is what `superset import-dashboards` loads (a database connection, datasets, charts,
one dashboard), as YAML files committed beside this script. Run it again after the pcsync_bi
views change, against a migrated pcsync database (the demo's will do):

    deploy/superset/make_bundle.py postgresql://postgres@127.0.0.1:5432/pcsync_demo

It reads the views' columns, types and comments from the database (column comments become
column descriptions in Superset), so datasets always match the schema. Every dataset is a view of
pcsync_bi. The licence counts carry a metric `licenses` = SUM(licenses) meant for the view's own
grain (month-end views at month grain, quarter-end at quarter grain): counts are semi-additive.
UUIDs are derived from names, so a bundle written twice is the same and a re-import updates in
place. The database URL in the bundle is a placeholder: `run` writes the user's into the zip it
imports.
"""

import json
import os
import sys
import uuid

import psycopg2
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLE = os.path.join(HERE, "bundle")
NAMESPACE = uuid.UUID("6a1f8a52-59a4-4d0e-9f6e-706373796e63")
DATABASE_URL_PLACEHOLDER = "postgresql://PCSYNC_DATABASE_URL"
VERSION = "1.0.0"


def uid(kind, name):
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{name}"))


DATABASE_UUID = uid("database", "pcsync")

# Metrics per dataset: name -> (SQL, description).
METRICS = {
    "license_counts_month_end": {
        "licenses": (
            "SUM(licenses)",
            "Licences at the end of each month. Chart at month grain only: a count is "
            "semi-additive (summing months adds the same licences up again).",
        ),
    },
    "license_counts_quarter_end": {
        "licenses": (
            "SUM(licenses)",
            "Licences at the end of each quarter. Chart at quarter grain only: a count is "
            "semi-additive.",
        ),
    },
    "license_counts_daily": {
        "licenses": (
            "SUM(licenses)",
            "Licences at the end of each day. Chart at day grain only (or use the month-end "
            "and quarter-end datasets): a count is semi-additive.",
        ),
    },
    "renewal_decisions": {
        "licenses": ("SUM(licenses)", "Licences of the subscriptions whose term ends."),
    },
    "unassigned_seats": {
        "unassigned_seats": (
            "SUM(unassigned_beyond_spare)",
            "Seats paid for and not assigned, beyond the spare allowance.",
        ),
    },
    "customer_health": {
        "failing_customers": (
            "COUNT(*) FILTER (WHERE failing_since IS NOT NULL)",
            "Customers whose last fetch failed.",
        ),
    },
    "sync_runs": {
        "customers_failed": ("SUM(customers_failed)", "Customer fetches that failed."),
    },
}


def time_column(grain_column, grain):
    return {
        "timeGrain": grain,
        "columnType": "BASE_AXIS",
        "sqlExpression": grain_column,
        "label": grain_column,
        "expressionType": "SQL",
    }


def query_context(form_data, columns, metrics, filters=(), orderby=None, row_limit=10000):
    """The query a chart's data API answers (GET /api/v1/chart/<id>/data/)."""
    return json.dumps(
        {
            "datasource": {"id": 0, "type": "table"},
            "force": False,
            "queries": [
                {
                    "filters": list(filters),
                    "extras": {"having": "", "where": ""},
                    "applied_time_extras": {},
                    "columns": columns,
                    "metrics": metrics,
                    "orderby": orderby if orderby is not None else [[metrics[0], False]],
                    "annotation_layers": [],
                    "row_limit": row_limit,
                    "series_limit": 0,
                    "order_desc": True,
                    "url_params": {},
                    "custom_params": {},
                    "custom_form_data": {},
                }
            ],
            "form_data": form_data,
            "result_format": "json",
            "result_type": "full",
        },
        sort_keys=True,
    )


def no_time_filter(column):
    return {"col": column, "op": "TEMPORAL_RANGE", "val": "No filter"}


def timeseries(name, dataset, viz, x, grain, metric, groupby=(), extra_filters=(), stack=False):
    form = {
        "viz_type": viz,
        "x_axis": x,
        "time_grain_sqla": grain,
        "metrics": [metric],
        "groupby": list(groupby),
        "adhoc_filters": [
            {
                "clause": "WHERE",
                "comparator": "No filter",
                "expressionType": "SIMPLE",
                "operator": "TEMPORAL_RANGE",
                "subject": x,
            }
        ]
        + [
            {"clause": "WHERE", "expressionType": "SQL", "sqlExpression": f}
            for f in extra_filters
        ],
        "row_limit": 10000,
        "show_legend": True,
        "legendOrientation": "top",
        "legendType": "scroll",
        "rich_tooltip": True,
        "x_axis_time_format": "smart_date",
        "color_scheme": "supersetColors",
        "stack": "Stack" if stack else None,
        "truncate_metric": True,
    }
    filters = [no_time_filter(x)]
    # Ordered by the time axis (the database's order of the buckets), as the chart draws them.
    qc = query_context(
        form,
        [time_column(x, grain)] + list(groupby),
        [metric],
        filters,
        orderby=[],
    )
    qc_obj = json.loads(qc)
    for f in extra_filters:
        qc_obj["queries"][0]["extras"]["where"] = (
            f if not qc_obj["queries"][0]["extras"]["where"]
            else qc_obj["queries"][0]["extras"]["where"] + " AND " + f
        )
    return chart(name, dataset, viz, form, json.dumps(qc_obj, sort_keys=True))


def chart(name, dataset, viz, form, qc):
    return {
        "slice_name": name,
        "description": None,
        "certified_by": None,
        "certification_details": None,
        "viz_type": viz,
        "params": form,
        "query_context": qc,
        "cache_timeout": None,
        "uuid": uid("chart", name),
        "version": VERSION,
        "dataset_uuid": uid("dataset", dataset),
    }


def charts():
    unassigned_form = {
        "viz_type": "table",
        "query_mode": "aggregate",
        "groupby": ["company_name"],
        "metrics": ["unassigned_seats"],
        "adhoc_filters": [],
        "row_limit": 15,
        "order_desc": True,
        "timeseries_limit_metric": "unassigned_seats",
        "table_timestamp_format": "smart_date",
        "show_cell_bars": True,
    }
    failing_form = {
        "viz_type": "big_number_total",
        "metric": "failing_customers",
        "adhoc_filters": [],
        "subheader": "customers whose last fetch failed",
        "y_axis_format": "SMART_NUMBER",
    }
    return [
        timeseries(
            "Licences over time by offer (month end)",
            "license_counts_month_end",
            "echarts_timeseries_line",
            "month",
            "P1M",
            "licenses",
            groupby=["offer_name"],
        ),
        timeseries(
            "Licences by quarter (quarter end)",
            "license_counts_quarter_end",
            "echarts_timeseries_bar",
            "quarter",
            "P3M",
            "licenses",
        ),
        timeseries(
            "Renewal decisions by week (next 90 days)",
            "renewal_decisions",
            "echarts_timeseries_bar",
            "ends_on",
            "P1W",
            "licenses",
            groupby=["decision"],
            stack=True,
        ),
        chart(
            "Unassigned seats by customer",
            "unassigned_seats",
            "table",
            unassigned_form,
            query_context(
                unassigned_form,
                ["company_name"],
                ["unassigned_seats"],
                row_limit=15,
            ),
        ),
        timeseries(
            "Changes per week by kind and field",
            "recent_changes",
            "echarts_timeseries_bar",
            "detected_at",
            "P1W",
            "count",
            groupby=["kind", "field"],
            extra_filters=["NOT first_load"],
            stack=True,
        ),
        timeseries(
            "Passes per day by status",
            "sync_runs",
            "echarts_timeseries_bar",
            "started_at",
            "P1D",
            "count",
            groupby=["status"],
            stack=True,
        ),
        chart(
            "Customers failing",
            "customer_health",
            "big_number_total",
            failing_form,
            query_context(failing_form, [], ["failing_customers"], orderby=[]),
        ),
    ]


def superset_type(pg_type):
    t = pg_type.upper()
    return {"CHARACTER VARYING": "VARCHAR"}.get(t, t)


def datasets(conn):
    cur = conn.cursor()
    cur.execute(
        """SELECT c.relname, obj_description(c.oid, 'pg_class')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'pcsync_bi' AND c.relkind = 'v' ORDER BY c.relname"""
    )
    views = cur.fetchall()
    if not views:
        sys.exit("no pcsync_bi views in this database: run pcsync migrate on it first")
    out = []
    for view, comment in views:
        cur.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod),
                      col_description(a.attrelid, a.attnum)
               FROM pg_attribute a
               WHERE a.attrelid = ('pcsync_bi.' || %s)::regclass AND a.attnum > 0
                 AND NOT a.attisdropped ORDER BY a.attnum""",
            (view,),
        )
        cols = cur.fetchall()
        temporal = [
            name for name, ty, _ in cols if ty == "date" or ty.startswith("timestamp")
        ]
        metrics = [
            {
                "metric_name": "count",
                "verbose_name": "COUNT(*)",
                "metric_type": "count",
                "expression": "COUNT(*)",
                "description": "Rows.",
                "d3format": None,
                "extra": None,
                "warning_text": None,
            }
        ]
        for name, (sql, description) in METRICS.get(view, {}).items():
            metrics.append(
                {
                    "metric_name": name,
                    "verbose_name": name.replace("_", " "),
                    "metric_type": None,
                    "expression": sql,
                    "description": description,
                    "d3format": None,
                    "extra": None,
                    "warning_text": description if "semi-additive" in description else None,
                }
            )
        out.append(
            (
                view,
                {
                    "table_name": view,
                    "main_dttm_col": temporal[0] if temporal else None,
                    "description": comment,
                    "default_endpoint": None,
                    "offset": 0,
                    "cache_timeout": None,
                    "schema": "pcsync_bi",
                    "catalog": None,
                    "sql": None,
                    "params": None,
                    "template_params": None,
                    "filter_select_enabled": True,
                    "fetch_values_predicate": None,
                    "extra": None,
                    "normalize_columns": False,
                    "always_filter_main_dttm": False,
                    "uuid": uid("dataset", view),
                    "metrics": metrics,
                    "columns": [
                        {
                            "column_name": name,
                            "verbose_name": None,
                            "is_dttm": name in temporal,
                            "is_active": True,
                            "type": superset_type(ty),
                            "advanced_data_type": None,
                            "groupby": True,
                            "filterable": True,
                            "expression": None,
                            "description": description,
                            "python_date_format": None,
                            "extra": None,
                        }
                        for name, ty, description in cols
                    ],
                    "version": VERSION,
                    "database_uuid": DATABASE_UUID,
                },
            )
        )
    return out


def dashboard(chart_list):
    layout = [
        ["Licences over time by offer (month end)", "Licences by quarter (quarter end)"],
        ["Renewal decisions by week (next 90 days)", "Unassigned seats by customer"],
        ["Changes per week by kind and field"],
        ["Passes per day by status", "Customers failing"],
    ]
    by_name = {c["slice_name"]: c for c in chart_list}
    position = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"children": ["GRID_ID"], "id": "ROOT_ID", "type": "ROOT"},
        "HEADER_ID": {"id": "HEADER_ID", "meta": {"text": "pcsync"}, "type": "HEADER"},
        "GRID_ID": {
            "children": [],
            "id": "GRID_ID",
            "parents": ["ROOT_ID"],
            "type": "GRID",
        },
    }
    for r, row in enumerate(layout, start=1):
        row_id = f"ROW-{r}"
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {
            "children": [],
            "id": row_id,
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
            "parents": ["ROOT_ID", "GRID_ID"],
            "type": "ROW",
        }
        for name in row:
            c = by_name[name]
            chart_id = "CHART-" + c["uuid"][:8]
            position[row_id]["children"].append(chart_id)
            position[chart_id] = {
                "children": [],
                "id": chart_id,
                "meta": {
                    "chartId": 0,
                    "height": 50,
                    "sliceName": name,
                    "uuid": c["uuid"],
                    "width": 12 // len(row),
                },
                "parents": ["ROOT_ID", "GRID_ID", row_id],
                "type": "CHART",
            }
    return {
        "dashboard_title": "pcsync",
        "description": None,
        "css": "",
        "slug": "pcsync",
        "certified_by": None,
        "certification_details": None,
        "published": True,
        "uuid": uid("dashboard", "pcsync"),
        "position": position,
        "metadata": {
            "color_scheme": "supersetColors",
            "refresh_frequency": 0,
            "expanded_slices": {},
            "label_colors": {},
            "shared_label_colors": [],
            "timed_refresh_immune_slices": [],
            "cross_filters_enabled": False,
            "native_filter_configuration": [],
            "chart_configuration": {},
            "default_filters": "{}",
        },
        "version": VERSION,
    }


def write(path, data):
    full = os.path.join(BUNDLE, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=True, allow_unicode=True, width=100)


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DATABASE_URL (a migrated pcsync database)")
    conn = psycopg2.connect(sys.argv[1])
    if os.path.isdir(BUNDLE):
        for root, _, files in os.walk(BUNDLE, topdown=False):
            for f in files:
                os.remove(os.path.join(root, f))
            os.rmdir(root)
    write(
        "metadata.yaml",
        {"version": VERSION, "type": "Dashboard", "timestamp": "2026-12-01T00:00:00+00:00"},
    )
    write(
        "databases/pcsync.yaml",
        {
            "database_name": "pcsync",
            "sqlalchemy_uri": DATABASE_URL_PLACEHOLDER,
            "cache_timeout": None,
            "expose_in_sqllab": True,
            "allow_run_async": False,
            "allow_ctas": False,
            "allow_cvas": False,
            "allow_dml": False,
            "allow_csv_upload": False,
            "extra": {"allows_virtual_table_explore": True},
            "uuid": DATABASE_UUID,
            "version": VERSION,
        },
    )
    for view, data in datasets(conn):
        write(f"datasets/pcsync/{view}.yaml", data)
    chart_list = charts()
    for c in chart_list:
        slug = "".join(ch if ch.isalnum() else "_" for ch in c["slice_name"]).strip("_")
        write(f"charts/{slug}.yaml", c)
    write("dashboards/pcsync.yaml", dashboard(chart_list))
    print(f"wrote {BUNDLE}")


if __name__ == "__main__":
    main()
