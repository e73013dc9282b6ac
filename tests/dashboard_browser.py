"""Open the Superset dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright) as an
analyst would: sign in on the login form, open the dashboard, wait for every chart, and read what
each one shows, both what its query returned and what it drew."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .report_browser import CHROMIUM


@dataclass
class DashboardView:
    charts: dict[str, dict] = field(default_factory=dict)      # slice name -> what the holder drew
    queries: list[dict] = field(default_factory=list)          # every /api/v1/chart/data answer
    errors: list[str] = field(default_factory=list)            # error texts shown on the page
    console_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)  # blocked: the page may only ask the server
    seconds_to_render: float = 0.0


# What each chart holder on the page drew: the ECharts canvas size, table rows, the big number's
# text, and any empty-state or error message Superset shows instead of a chart.
_READ_CHARTS = """() => [...document.querySelectorAll('[data-test="dashboard-component-chart-holder"]')].map(h => {
    const title = h.querySelector('[data-test="editable-title"], .editable-title, .header-title');
    const canvas = [...h.querySelectorAll('canvas')].filter(c => c.width > 0 && c.height > 0);
    const svg = h.querySelectorAll('svg path, svg rect');
    return {
        title: title ? title.textContent.trim() : h.innerText.split('\\n')[0].trim(),
        canvases: canvas.length,
        svg_shapes: svg.length,
        table_rows: h.querySelectorAll('table tbody tr').length,
        big_number: (h.querySelector('.header-line') || {}).textContent || '',
        empty: /No results were returned|No data/i.test(h.innerText),
        error: !!h.querySelector('[role="alert"], .alert-danger, [data-test="error-alert"]'),
        loading: !!h.querySelector('.loading, [data-test="loading-indicator"]'),
        text: h.innerText.slice(0, 5000),
    };
})"""


def open_dashboard(base_url: str, path: str, user: str, password: str, expected_charts: int,
                   screenshot: Path, timeout: float = 150) -> DashboardView:
    from playwright.sync_api import sync_playwright

    view = DashboardView()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2400}, locale="zh-CN")
            page.on("console", lambda m: view.console_errors.append(m.text) if m.type == "error" else None)
            # loopback only: anything the page would fetch from elsewhere is refused and recorded
            page.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]|data:|blob:)"),
                       lambda route: (view.outside_requests.append(route.request.url), route.abort()))

            def on_response(response):
                if "/api/v1/chart/data" in response.url and response.request.method == "POST":
                    try:
                        body = response.json()
                    except Exception as exc:  # noqa: BLE001 (recorded, asserted by the test)
                        body = {"message": f"unreadable answer: {exc}"}
                    results = body.get("result") or [{}]
                    view.queries.append({"status": response.status, "rows": sum(r.get("rowcount") or 0 for r in results),
                                         "error": body.get("message") or next(
                                             (r.get("error") for r in results if r.get("error")), None)})

            page.on("response", on_response)
            page.goto(f"{base_url}/login/", timeout=timeout * 1000)
            page.fill('[data-test="username-input"]', user)
            page.fill('[data-test="password-input"]', password)
            page.click('[data-test="login-button"]')
            page.wait_for_url(lambda url: "/login" not in url, timeout=timeout * 1000)
            started = time.monotonic()
            page.goto(f"{base_url}{path}", timeout=timeout * 1000)
            deadline = started + timeout

            def drawn() -> None:
                # bounded wait: every chart queried and drawn, nothing still loading
                while time.monotonic() < deadline:
                    holders = page.evaluate(_READ_CHARTS)
                    if (len(view.queries) >= expected_charts and len(holders) >= expected_charts
                            and not any(h["loading"] for h in holders)):
                        break
                    page.wait_for_timeout(500)
                page.wait_for_timeout(1500)  # ECharts animates its first frame

            drawn()
            # the whole dashboard in the viewport before it is read: a full-page screenshot of a
            # shorter one resizes the page, Superset lays the grid out again, and the picture
            # caught it empty
            height = page.evaluate("() => document.documentElement.scrollHeight")
            if height > page.viewport_size["height"]:
                page.set_viewport_size({"width": page.viewport_size["width"], "height": height})
                drawn()
            view.seconds_to_render = time.monotonic() - started
            view.charts = {h["title"]: h for h in page.evaluate(_READ_CHARTS)}
            view.errors = page.eval_on_selector_all('[role="alert"]', "els => els.map(e => e.innerText)")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return view
