"""The class page and reports in a real browser (Debian's headless Chromium through Playwright).

Opens the pages from file:// URLs, as a TA would from a shared folder: no console errors (a CSP
violation is one), every image decoded with a non-zero size, Japanese text rendered, links between
the class page and the reports working, the table sortable, no injected script run. Screenshots go
to build/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser(site):  # after `site`: Playwright's sync API keeps an event loop running while the browser is open
    if CHROMIUM is None:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail("chromium is missing on CI: `make setup` installs it (apt-get) when run as root")
        pytest.skip("Debian's chromium is not installed; `make setup` as root installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(report_class):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return report_class


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, java_script_enabled=True)
    page = context.new_page()
    page.problems = []  # console errors, page errors, dialogs: all must stay empty
    page.on("console", lambda m: page.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield page
    context.close()


def assert_images_drawn(page) -> int:
    sizes = page.eval_on_selector_all("img[src]", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])")
    assert sizes, "no images"
    for complete, width, height, shown in sizes:
        assert complete and width > 0 and height > 0 and shown > 0, sizes
    return len(sizes)


def column(page, n: int) -> list[str]:
    return page.eval_on_selector_all(f"#student-table tbody tr td:nth-child({n})", "cells => cells.map(c => c.textContent.trim())")


def test_class_page_in_a_browser(page, site):
    out, results = site
    page.goto((out / "index.html").as_uri())
    assert page.locator("h1").inner_text().startswith("課題8")
    assert "要確認" in page.locator("#attention").inner_text()
    assert page.evaluate("document.documentElement.lang") == "ja"
    assert assert_images_drawn(page) == 2
    page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)

    # sort by score: ascending, then descending; by student: back to the original order
    page.click("#student-table thead th:nth-child(3)")
    scores = [int(s.split("/")[0]) for s in column(page, 3)]
    assert scores == sorted(scores)
    page.click("#student-table thead th:nth-child(3)")
    assert [int(s.split("/")[0]) for s in column(page, 3)] == sorted(scores, reverse=True)
    page.click("#student-table thead th:nth-child(1)")
    assert column(page, 1) == sorted(results)
    assert page.problems == []


def test_reports_open_from_the_class_page_and_link_back(page, site):
    out, results = site
    page.goto((out / "index.html").as_uri())
    page.click('#student-table a[href="s002_fail/report.html"]')
    page.wait_for_load_state()
    assert page.url.endswith("/s002_fail/report.html")
    assert "採点結果" in page.locator("h1").inner_text() and "不合格" in page.locator("#checks + .table-scroll table.checks").inner_text()
    assert assert_images_drawn(page) >= 8  # 4 batches, curves, confusion, per class, the notebook's own PNG
    assert page.evaluate("typeof window.__xss") == "undefined"  # nothing from the notebook ran
    page.screenshot(path=str(SCREENSHOTS / "report_fail.png"), full_page=True)

    page.click("text=← クラス一覧")
    page.wait_for_load_state()
    assert page.url.endswith("/index.html")
    assert page.problems == []


@pytest.mark.parametrize("student", ["s001_pass", "s003_error", "s004_timeout", "s006_invalid"])
def test_each_kind_of_report_renders_cleanly(page, site, student):
    out, results = site
    page.goto((out / student / "report.html").as_uri())
    text = page.locator("body").inner_text()
    assert "チェック" in text and f"{results[student].score} / {results[student].max_score}" in text
    if student != "s006_invalid":
        assert assert_images_drawn(page) >= 1
    if student == "s003_error":  # the link in the verdict jumps to the failing cell, which is marked
        page.click("#verdict a[href='#cell-4']")
        assert page.evaluate("location.hash") == "#cell-4"
        assert "failed" in page.get_attribute("#cell-4", "class")
    page.screenshot(path=str(SCREENSHOTS / f"report_{student}.png"), full_page=True)
    assert page.problems == []


def test_reports_print_without_navigation(page, site):
    out, results = site
    page.goto((out / "s001_pass" / "report.html").as_uri())
    page.emulate_media(media="print")
    assert page.locator("nav.toc").is_hidden()
    assert page.locator("#verdict").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "report_print.png"), full_page=True)
    assert page.problems == []
