"""Open a run report in headless Chromium (Debian's ``chromium``, driven by Playwright) and read
what a person would check: charts drawn, tables inside their boxes, which font drew a text."""

from __future__ import annotations

import contextlib
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it (Playwright's own builds are not used)
CJK_FAMILIES = ("Noto Sans CJK", "WenQuanYi", "Source Han Sans", "Droid Sans Fallback")


@contextlib.contextmanager
def open_page(path: Path, width: int = 1280):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.dialogs = []  # any alert() a page script would raise
            page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
            # a report is self-contained: it must not ask the network for anything
            page.requests = []
            page.on("request", lambda request: page.requests.append(request.url))
            page.goto(path.resolve().as_uri())
            yield page
        finally:
            browser.close()


def charts(page) -> list[dict]:
    """Each chart's id, drawn size and count of drawn shapes."""
    return page.eval_on_selector_all("figure.chart", """figures => figures.map(f => {
        const svg = f.querySelector('svg');
        const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
        return {id: f.id, width: box.width, height: box.height,
                shapes: svg ? svg.querySelectorAll('path, use, rect, image').length : 0};
    })""")


def glyph_fonts(page, chart_id: str) -> set[str]:
    """The fonts whose glyph outlines a chart carries (matplotlib names them <font>-<glyph>)."""
    return set(page.eval_on_selector_all(f"#{chart_id} svg defs path[id][d]", """paths => paths
        .filter(p => p.getAttribute('d').length > 20).map(p => p.id.replace(/-[0-9a-f]+$/, ''))"""))


def overflowing_tables(page) -> list[str]:
    """Tables wider than the box they sit in, or the page wider than the window."""
    return page.evaluate("""() => {
        const bad = [];
        document.querySelectorAll('table').forEach((t, i) => {
            const box = t.getBoundingClientRect(), parent = t.parentElement.getBoundingClientRect();
            if (box.width > 0 && (box.right > parent.right + 1 || t.scrollWidth > t.clientWidth + 1))
                bad.push(`table ${i} in #${t.closest('section')?.id}: ${box.right} > ${parent.right}`);
        });
        if (document.documentElement.scrollWidth > window.innerWidth)
            bad.push(`page ${document.documentElement.scrollWidth} > window ${window.innerWidth}`);
        return bad;
    }""")


def fonts_used(page, selector: str) -> dict[str, int]:
    """The platform fonts Chromium drew the element's text with, and how many glyphs each."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return {f["familyName"]: f["glyphCount"] for f in fonts}


def is_cjk(family: str) -> bool:
    return any(family.replace(" ", "").startswith(known.replace(" ", "")) for known in CJK_FAMILIES)
