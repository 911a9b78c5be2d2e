"""The review app in a real browser (Debian's headless Chromium through Playwright): open the token
URL, click a student, enter the 考察's points and comment and an override with a reason, save, and
find the new score in the page and in grades.csv; without the token the server answers 403."""

from __future__ import annotations

import csv
import os
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from review_fixtures import ROOT, build_reviewable_class
from grader.review.app import ReviewServer

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory, report_class):
    out, results = build_reviewable_class(tmp_path_factory.mktemp("review-browser"), report_class)
    server = ReviewServer(out=out, project_root=ROOT, assignment="kadai8", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, out, results
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(server):
    if CHROMIUM is None:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail("chromium is missing on CI: `make setup` installs it (apt-get) when run as root")
        pytest.skip("Debian's chromium is not installed; `make setup` as root installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def test_without_the_token_the_server_refuses(server):
    srv, _, _ = server
    assert srv.server.server_address[0] == "127.0.0.1"
    for path in ("/", "/student/s001_pass", "/files/grades.csv", "/?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{path}", timeout=10)
        assert refused.value.code == 403


def test_ta_scores_the_discussion_and_overrides_a_check(server, browser):
    srv, out, results = server
    before = results["s001_pass"].score
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(srv.url)
    assert "TA レビュー" in page.title()
    page.click("a.student-link:has-text('s001_pass')")
    page.wait_for_url("**/student/s001_pass")
    page.fill("#reviewer", "佐藤TA")
    page.fill("input[name='manual_points__discussion.answered']", "8")
    page.fill("textarea[name='manual_comment__discussion.answered']", "左向きの靴の説明が的確")
    page.fill("input[name='override_points__split.shapes']", "0")
    page.fill("input[name='override_reason__split.shapes']", "test_size を手で書き換えていた")
    page.click("#save")
    page.wait_for_selector("#saved")
    expected = before + 8 - 5
    assert page.inner_text("#total") == f"{expected} / {results['s001_pass'].max_score}"
    override = page.inner_text("[data-check='split.shapes'] .override")
    assert "佐藤TA" in override and "test_size を手で書き換えていた" in override
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "review-student.png"), full_page=True)
    with open(out / "grades.csv", encoding="utf-8-sig", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["student"] == "s001_pass")
    assert row["score"] == str(expected) and row["discussion.answered"] == "8" and row["split.shapes"] == "0"
    page.click("text=← 一覧へ")
    assert page.inner_text("tr[data-student='s001_pass'] .score") == f"{expected} / {results['s001_pass'].max_score}"
    page.click("tr[data-student='s001_pass'] a:has-text('report.html')")
    assert "test_size を手で書き換えていた" in page.inner_text("body")
    assert not problems, problems
    context.close()


def test_nothing_a_notebook_wrote_can_script_the_review_app(attack_run, test_project, browser):
    """The review_script notebook left a script in its outputs, an HTML page in its evidence (vouched for
    by the recorder) and links to that page. The TA opens the class, the student, the report and clicks
    the link: the gradebook is unchanged and no script of the student's ran."""
    from grader.gradebook.store import Gradebook
    from grader.gradebook.reviews import ReviewStore

    out = attack_run.summary.out_dir
    planted = out / "review_script" / "evidence" / "evil.html"  # as if an older grader had exported it
    planted.write_text("<script>document.title = 'PWNED'</script>", encoding="utf-8")

    def state():
        with Gradebook.open(out) as book, ReviewStore(out) as store:
            return (book.manual_scores("kadai8"), store.overrides("kadai8"), store.history("kadai8", "honest"),
                    (out / "grades.csv").read_bytes())

    before = state()
    srv = ReviewServer(out=out, project_root=test_project, assignment="kadai8", port=attack_run.review_port)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        context = browser.new_context()
        page = context.new_page()
        titles, dialogs, statuses = [], [], {}
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("response", lambda r: statuses.__setitem__(r.url, r.status))
        page.goto(srv.url)
        page.click("a.student-link:has-text('review_script')")
        page.wait_for_url("**/student/review_script")
        titles.append(page.title())
        page.click("text=レポートを開く")
        page.wait_for_url("**/files/review_script/report.html")
        page.wait_for_timeout(500)
        titles.append(page.title())
        links = page.locator("a[href$='/files/review_script/evidence/evil.html']")
        assert links.count() >= 2  # the markdown cell's and the HTML output's: sanitized, but links stay
        with page.expect_navigation():
            links.first.click()
        page.wait_for_timeout(1500)  # time for any script that could have run
        titles.append(page.title())
        evil = f"http://127.0.0.1:{srv.port}/files/review_script/evidence/evil.html"
        assert statuses[evil] == 404
        for path in ("/files/review_script/evidence/evil.html", "/files/review_script/evidence/events.jsonl"):
            assert page.goto(f"http://127.0.0.1:{srv.port}{path}").status == 404
        page.goto(f"http://127.0.0.1:{srv.port}/files/review_script/report.html")
        page.wait_for_timeout(500)
        titles.append(page.title())
        context.close()
    finally:
        srv.shutdown()
        thread.join(timeout=10)
        planted.unlink()  # the batch is shared: leave its evidence as the grader exported it
    assert "PWNED" not in titles and not dialogs
    assert state() == before  # no manual score, no override, no history, grades.csv byte for byte
