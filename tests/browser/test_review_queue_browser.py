"""The scoring queue in a real browser (Debian's headless Chromium through Playwright), keyboard only:
no mouse click anywhere. A TA scores students with the number keys, the arrows, Tab and Enter; the
gradebook gets the points and comments, the progress count moves, the queue skips an answer already
scored, a refused save keeps the typed comment and marks the field. Then ten answers in a row, timed
(printed, not asserted: the machine may be loaded)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from review_fixtures import ROOT, build_queue_class
from grader.gradebook.store import Gradebook
from grader.review.app import ReviewServer
from test_review_browser import ARGS, CHROMIUM, SCREENSHOTS

pytestmark = pytest.mark.slow

DISCUSSION = "discussion.answered"


@pytest.fixture(scope="module")
def server(tmp_path_factory, report_class):
    out, names = build_queue_class(tmp_path_factory.mktemp("queue-browser"), report_class)
    server = ReviewServer(out=out, project_root=ROOT, assignment="kadai8", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, out, names
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(server):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed; `make setup` as root installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def scores(out) -> dict:
    with Gradebook.open(out) as book:
        return {name: s[DISCUSSION] for name, s in book.manual_scores("kadai8").items() if DISCUSSION in s}


def student_of(page) -> str:
    return re.search(r"/queue/([^/?]+)", page.url)[1]


def progress(page) -> tuple[int, int]:
    found = re.search(r"(\d+) / (\d+) 採点済み", page.inner_text("#progress"))
    return int(found[1]), int(found[2])


def focused(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def press_and_wait(page, key: str) -> None:
    with page.expect_navigation():
        page.keyboard.press(key)


def test_a_ta_scores_three_answers_by_keyboard_only(server, browser):
    srv, out, names = server
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "422" not in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(srv.url)  # the token link the app prints
    page.goto(f"http://127.0.0.1:{srv.port}/queue")
    first = student_of(page)
    skipped = re.search(r"/queue/([^/?]+)", page.get_attribute("#next", "href"))[1]
    with Gradebook.open(out) as book:  # the next answer in order is scored meanwhile: the queue must skip it
        book.set_manual_score("kadai8", skipped, DISCUSSION, 6, comment="前回", scorer="別のTA")
    done, total = progress(page)
    assert focused(page) == "points"  # the points box has focus on load: no Tab needed
    stock = page.get_attribute(".rubric-item[data-key='2']", "data-comment")

    # 1st: rubric item 2 (7 points + its stock comment), a remark of one's own, the name, Enter
    page.keyboard.press("2")
    assert page.input_value("#points") == "7" and page.input_value("#comment") == stock
    page.keyboard.press("Tab")
    assert focused(page) == "comment"
    page.keyboard.press("Control+End")
    page.keyboard.type(" 図1の説明も良い")  # a digit typed in the comment is text, not a rubric pick
    page.keyboard.press("Tab")
    page.keyboard.type("佐藤TA")
    press_and_wait(page, "Enter")
    second = student_of(page)
    assert second not in (first, skipped)  # the answer scored meanwhile is skipped
    assert progress(page) == (done + 2, total)
    assert page.input_value("#reviewer") == "佐藤TA"  # remembered
    assert focused(page) == "points"

    # 2nd: item 3 (4 points), one up with ↑, Enter from the points box
    page.keyboard.press("3")
    page.keyboard.press("ArrowUp")
    assert page.input_value("#points") == "5"
    press_and_wait(page, "Enter")
    third = student_of(page)

    # 3rd: item 1 (10), then a refused save (the name erased): the typed comment stays, the name is marked
    page.keyboard.press("1")
    page.keyboard.press("Tab")
    page.keyboard.press("Control+End")
    page.keyboard.type(" とても良い")
    page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.press("Backspace")
    press_and_wait(page, "Enter")
    assert student_of(page) == third
    assert page.get_attribute("#reviewer", "aria-invalid") == "true" and page.is_visible("#error-reviewer")
    assert page.input_value("#comment").endswith(" とても良い") and page.input_value("#points") == "10"
    assert focused(page) == "reviewer"  # straight to the field at fault
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "review-queue-refused.png"), full_page=True)
    page.keyboard.type("佐藤TA")
    page.keyboard.press("Shift+Tab")  # back to the comment: Ctrl+Enter saves from there
    press_and_wait(page, "Control+Enter")
    assert progress(page) == (done + 4, total)
    page.screenshot(path=str(SCREENSHOTS / "review-queue.png"), full_page=True)

    got = scores(out)
    assert (got[first].points, got[first].comment, got[first].scorer) == (7, stock + " 図1の説明も良い", "佐藤TA")
    assert (got[second].points, got[third].points) == (5, 10)
    assert got[third].comment.endswith(" とても良い") and got[third].scorer == "佐藤TA"
    assert (got[skipped].points, got[skipped].scorer) == (6, "別のTA")  # untouched
    assert not problems, problems
    context.close()


def test_ten_answers_scored_by_keyboard_timed(server, browser):
    srv, out, _ = server
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(srv.url)
    page.goto(f"http://127.0.0.1:{srv.port}/queue")
    page.wait_for_selector("#points:focus")
    if not page.input_value("#reviewer"):
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.type("田中TA")
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")
    done, total = progress(page)
    assert total - done >= 10
    scored = []
    started = time.perf_counter()
    for n in range(10):
        scored.append(student_of(page))
        page.keyboard.press(str(n % 4 + 1))
        press_and_wait(page, "Enter")
    elapsed = time.perf_counter() - started
    print(f"\nscoring ten answers by keyboard in the queue took {elapsed:.1f} s "
          f"({elapsed / 10:.2f} s per answer: a digit, Enter, the save, the next page; the files regenerate in the background)")
    assert progress(page)[0] == done + 10 or page.is_visible("#done")
    got = scores(out)
    assert [got[name].points for name in scored] == [(10, 7, 4, 1)[n % 4] for n in range(10)]
    assert len(set(scored)) == 10
    context.close()
