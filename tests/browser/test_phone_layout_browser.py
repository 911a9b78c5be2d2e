"""The class page and every report on a phone (390 × 844, Chromium through Playwright).

The page itself must never scroll sideways: wide tables scroll inside their own box, the checks
table turns into one card per check. A failing check's "セル … を見る" link lands on that cell.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def phone(report_class):
    if CHROMIUM is None:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail("chromium is missing on CI: `make setup` installs it (apt-get) when run as root")
        pytest.skip("Debian's chromium is not installed; `make setup` as root installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        yield context.new_page()
        browser.close()


def page_width(page) -> int:
    return page.evaluate("document.scrollingElement.scrollWidth")


def test_class_page_and_every_report_fit_a_390_px_phone_without_sideways_scrolling(phone, report_class):
    out, results = report_class
    pages = [out / "index.html", *(out / student / "report.html" for student in results)]
    wide = {}
    for path in pages:
        phone.goto(path.as_uri())
        width = page_width(phone)
        if width > PHONE["width"]:
            wide[path.relative_to(out).as_posix()] = width
    assert not wide, f"pages wider than the phone: {wide}"
    phone.goto((out / "index.html").as_uri())  # the wide student table scrolls inside its own box
    box = phone.evaluate("(() => { const b = document.querySelector('#student-table').parentElement;"
                         " return [b.className, b.scrollWidth > b.clientWidth]; })()")
    assert box == ["table-scroll", True]


def test_a_failing_check_links_to_its_cell_on_the_phone(phone, report_class):
    out, _ = report_class
    phone.goto((out / "s002_fail" / "report.html").as_uri())
    row = phone.locator('tr[data-check="generator.length"]')
    assert "75 バッチ" in row.inner_text() and "38 バッチ" in row.inner_text()
    link = row.locator("a.cell-link")
    target = link.get_attribute("href")
    link.click()
    assert phone.evaluate("location.hash") == target
    top = phone.evaluate(f"document.querySelector('{target}').getBoundingClientRect().top")
    assert -2 <= top < PHONE["height"]  # scrolled to the cell (sub-pixel rounding)
    assert page_width(phone) <= PHONE["width"]
