#!/usr/bin/env python3
"""Checks a running Superset that `run` set up: the pcsync dashboard works for a user.

    venv/bin/python deploy/superset/check.py --url http://127.0.0.1:8088 \
        --password-file ~/.cache/pcsync-superset/admin_password \
        --database-url postgresql://postgres@127.0.0.1:5432/pcsync_demo [--screenshot dash.png]

1. Superset's chart-data API answers every chart of the dashboard without error and with rows.
2. The quarter chart's licences equal pcsync_bi.license_counts_quarter_end, quarter by quarter.
3. The dashboard page renders in headless Chromium (chromedriver): every chart container holds a
   chart (a canvas, a table or a big number), none an error, and the browser console shows no
   error beyond those of a fresh Superset's welcome page (its telemetry pixel, offline).

Prints what it checked; exits 1 with the reasons when something fails.
"""

import argparse
import datetime
import json
import sys
import time
import urllib.error
import urllib.request

import psycopg2

QUARTER_CHART = "Licences by quarter (quarter end)"
failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def call(base, method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, method=method, data=data)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:800]


def chart_data(args, password):
    status, login = call(
        args.url,
        "POST",
        "/api/v1/security/login",
        {"username": "admin", "password": password, "provider": "db", "refresh": False},
    )
    if status != 200:
        sys.exit(f"cannot log in to Superset as admin: {status} {login}")
    token = login["access_token"]
    status, charts = call(args.url, "GET", "/api/v1/dashboard/pcsync/charts", token=token)
    if status != 200:
        sys.exit(f"no dashboard pcsync: {status} {charts}")
    charts = charts["result"]
    print(f"dashboard pcsync: {len(charts)} charts")
    if len(charts) < 7:
        fail(f"the dashboard has {len(charts)} charts, expected 7")
    quarter_rows = None
    for c in charts:
        status, answer = call(args.url, "GET", f"/api/v1/chart/{c['id']}/data/", token=token)
        if status != 200:
            fail(f"chart {c['slice_name']!r}: {status} {answer}")
            continue
        rows = sum(r.get("rowcount", 0) for r in answer["result"])
        errors = [r.get("error") for r in answer["result"] if r.get("error")]
        if errors:
            fail(f"chart {c['slice_name']!r}: {errors}")
        elif rows == 0:
            fail(f"chart {c['slice_name']!r}: no rows")
        else:
            print(f"ok   chart {c['slice_name']!r}: {rows} rows")
        if c["slice_name"] == QUARTER_CHART:
            quarter_rows = answer["result"][0]["data"]
    if quarter_rows is None:
        fail(f"no chart {QUARTER_CHART!r}")
        return
    charted = {
        datetime.datetime.fromtimestamp(r["quarter"] / 1000, datetime.timezone.utc).date(): r[
            "licenses"
        ]
        for r in quarter_rows
    }
    conn = psycopg2.connect(args.database_url)
    cur = conn.cursor()
    cur.execute(
        "SELECT quarter, sum(licenses) FROM pcsync_bi.license_counts_quarter_end GROUP BY quarter"
    )
    stored = {q: int(n) for q, n in cur.fetchall()}
    if charted != stored:
        fail(f"the quarter chart shows {charted}, license_counts_quarter_end holds {stored}")
    else:
        print(f"ok   the quarter chart equals license_counts_quarter_end: {stored}")


def render(args, password):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2100"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
    try:
        driver.get(args.url + "/login/")
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "username"))
        driver.find_element(By.ID, "username").send_keys("admin")
        driver.find_element(By.ID, "password").send_keys(password + "\n")
        WebDriverWait(driver, 60).until(lambda d: "/login" not in d.current_url)
        driver.get(args.url + "/superset/welcome/")
        time.sleep(5)
        errors = lambda: {  # noqa: E731
            l["message"] for l in driver.get_log("browser") if l["level"] == "SEVERE"
        }
        welcome = errors()
        print(f"the welcome page's console errors (allowed): {sorted(welcome)}")
        driver.get(args.url + "/superset/dashboard/pcsync/")

        def drawn(d):
            holders = d.find_elements(By.CSS_SELECTOR, ".dashboard-component-chart-holder")
            return len(holders) >= 7 and all(
                h.find_elements(By.CSS_SELECTOR, "canvas, table, .header-line")
                or h.find_elements(By.CSS_SELECTOR, "[role=alert]")
                for h in holders
            )

        try:
            WebDriverWait(driver, 90).until(drawn)
        except Exception:  # noqa: BLE001 - reported below, chart by chart
            pass
        time.sleep(3)
        holders = driver.find_elements(By.CSS_SELECTOR, ".dashboard-component-chart-holder")
        if len(holders) < 7:
            fail(f"the dashboard page shows {len(holders)} chart containers, expected 7")
        for h in holders:
            title = (h.text.split("\n") or ["?"])[0]
            if h.find_elements(By.CSS_SELECTOR, "[role=alert]"):
                fail(f"chart {title!r} shows an error: {h.text[:300]!r}")
            elif not h.find_elements(By.CSS_SELECTOR, "canvas, table, .header-line"):
                fail(f"chart {title!r} drew nothing: {h.text[:300]!r}")
            else:
                print(f"ok   chart {title!r} drawn")
        extra = errors() - welcome
        if extra:
            fail(f"console errors on the dashboard page: {sorted(extra)}")
        else:
            print("ok   no console error beyond the welcome page's")
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
            print(f"screenshot: {args.screenshot}")
    finally:
        driver.quit()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    p.add_argument("--screenshot")
    args = p.parse_args()
    with open(args.password_file, encoding="utf-8") as f:
        password = f.read().strip()
    chart_data(args, password)
    render(args, password)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("every check passed")


if __name__ == "__main__":
    main()
