"""The review app's scoring queue and refused saves, through Flask's test client (no kernels); the
rubric in the spec ([[checks.rubric]]). The keys themselves are tried in Chromium
(tests/browser/test_review_queue_browser.py)."""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import re
import tomllib

import pytest

from review_fixtures import ROOT, build_queue_class
from grader.assignment.spec import load_spec, parse_spec
from grader.errors import ConfigError
from grader.gradebook.reviews import ReviewStore
from grader.gradebook.store import Gradebook
from grader.review.app import create_app
from grader.review.state import REVIEWER_COOKIE
from grader.selfcheck.engine import public_spec

TOKEN = "queue-token-1"
DISCUSSION = "discussion.answered"


@pytest.fixture(scope="module")
def queue_class(tmp_path_factory, report_class):
    return build_queue_class(tmp_path_factory.mktemp("queue"), report_class)


@pytest.fixture
def client(queue_class):
    out, _ = queue_class
    client = create_app(out=out, project_root=ROOT, assignment="kadai8", token=TOKEN).test_client()
    client.get(f"/?token={TOKEN}")
    yield client
    drain(client)


def drain(client) -> None:
    """Wait for the app's background republish: nothing of one test may still run in the next (its
    matplotlib figures use `ast`, which CPython 3.11 does not allow in two threads at once:
    "AST constructor recursion depth mismatch" in a later test's ast.parse)."""
    client.application.extensions["review_publisher"].drain()


def manual(out) -> dict:
    with Gradebook.open(out) as book:
        return {name: scores[DISCUSSION] for name, scores in book.manual_scores("kadai8").items() if DISCUSSION in scores}


def progress(page: str) -> tuple[int, int]:
    found = re.search(r"(\d+) / (\d+) 採点済み", page)
    assert found, page[:500]
    return int(found[1]), int(found[2])


def save(client, student: str, **fields: str):
    return client.post(f"/queue/{student}?check={DISCUSSION}",
                       data={"token": TOKEN, "check": DISCUSSION, **fields})


def test_the_queue_shows_the_question_the_answer_escaped_and_the_rubric_with_its_keys(client, queue_class):
    first = client.get("/queue")
    assert first.status_code == 302 and "/queue/" in first.headers["Location"]
    page = client.get("/queue/s2601010").get_data(as_text=True)  # this answer holds a <script> tag
    assert "なぜ回転 (rotation) や上下反転 (vertical_flip) の拡張は" in page  # the template's question
    assert "&lt;script&gt;alert(&#39;queue&#39;)&lt;/script&gt;" in page and "<script>alert" not in page
    assert page.count('class="rubric-item"') == 4 and 'data-points="7"' in page and "<kbd>4</kbd>" in page
    assert re.search(r'<input type="number" id="points"[^>]*\bautofocus', page)
    assert "キー操作" in page and "Ctrl+Enter" in page
    assert client.get("/queue?check=no.such.check").status_code == 404
    assert f'href="/queue/s2601010?check={DISCUSSION}"' in client.get("/student/s2601010").get_data(as_text=True)


def test_the_only_script_is_the_queues_own_allowed_by_its_hash(client):
    response = client.get("/queue/s2601001")
    page = response.get_data(as_text=True)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in response.headers["Content-Security-Policy"]


def test_a_save_goes_to_the_next_unscored_student_and_the_queue_skips_scored_ones(client, queue_class):
    out, names = queue_class
    before = progress(client.get("/queue/s2601003").get_data(as_text=True))
    saved = save(client, "s2601003", points="7", comment="よく書けています。", reviewer="佐藤TA")
    assert saved.status_code == 302 and saved.headers["Location"].startswith("/queue/s2601004")
    assert REVIEWER_COOKIE in saved.headers["Set-Cookie"] and "Max-Age=" in saved.headers["Set-Cookie"]
    score = manual(out)["s2601003"]
    assert (score.points, score.comment, score.scorer) == (7, "よく書けています。", "佐藤TA")
    with ReviewStore(out) as store:
        assert [h["action"] for h in store.history("kadai8", "s2601003")] == ["manual"]
    grades = client.get("/files/grades.csv").get_data(as_text=True).lstrip("\ufeff")  # waits for the republish
    assert next(r for r in csv.DictReader(grades.splitlines()) if r["student"] == "s2601003")[DISCUSSION] == "7"
    assert "よく書けています。" in (out / "s2601003" / "report.html").read_text(encoding="utf-8")
    page = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert progress(page) == (before[0] + 1, before[1])
    assert "s2601003 を 7 / 10 点で保存しました" in page
    assert 'value="佐藤TA"' in page  # the reviewer's name, from the cookie
    # s2601004 scored too: from s2601002 the next unscored is s2601005
    save(client, "s2601004", points="4", comment="", reviewer="佐藤TA")
    assert save(client, "s2601002", points="10", reviewer="佐藤TA").headers["Location"].startswith("/queue/s2601005")
    drain(client)


def test_a_refused_save_keeps_what_was_typed_and_marks_the_field(client, queue_class):
    out, _ = queue_class
    before = manual(out).get("s2601006")
    for fields, bad in (({"points": "12", "comment": "途中まで書いたコメント", "reviewer": "TA"}, "points"),
                        ({"points": "", "comment": "途中まで書いたコメント", "reviewer": "TA"}, "points"),
                        ({"points": "6", "comment": "途中まで書いたコメント", "reviewer": ""}, "reviewer")):
        response = save(client, "s2601006", **fields)
        page = response.get_data(as_text=True)
        assert response.status_code == 422, fields
        assert ">途中まで書いたコメント</textarea>" in page
        assert re.search(rf'id="{bad}"[^>]*aria-invalid="true" aria-describedby="error-{bad}"', page)
        assert f'id="error-{bad}"' in page
        if fields["points"]:
            assert f'value="{fields["points"]}"' in page
    assert manual(out).get("s2601006") == before


def test_when_everyone_is_scored_the_queue_says_so(tmp_path, report_class):
    out, names = build_queue_class(tmp_path, report_class, count=2)
    client = create_app(out=out, project_root=ROOT, assignment="kadai8", token=TOKEN).test_client()
    client.get(f"/?token={TOKEN}")
    location = client.get("/queue").headers["Location"]
    while "/queue/" in location:
        student = location.split("/queue/")[1].split("?")[0]
        location = save(client, student, points="5", reviewer="TA").headers["Location"]
    page = client.get(location).get_data(as_text=True)
    scored, total = progress(page)
    assert scored == total and "すべて採点済みです" in page and 'id="queue-form"' not in page
    assert client.get("/queue/s001_pass").status_code == 200  # a scored answer can still be opened and changed
    assert client.get("/queue/s006_invalid").status_code == 404  # nothing for a TA to score there
    drain(client)


def test_a_refused_override_on_the_student_page_keeps_the_typed_score_and_comment(client, queue_class):
    out, _ = queue_class
    response = client.post("/student/s2601007", data={
        "token": TOKEN, "reviewer": "佐藤TA", f"manual_points__{DISCUSSION}": "8",
        f"manual_comment__{DISCUSSION}": "向きの説明が的確", "override_points__data.shape": "0"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f'name="manual_points__{DISCUSSION}" value="8"' in page and ">向きの説明が的確</textarea>" in page
    assert re.search(r'name="override_points__data.shape" value="0"', page)
    assert re.search(r'name="override_reason__data.shape" value=""[^>]*aria-invalid="true"', page)
    assert "s2601007" not in manual(out)


# ---------------------------------------------------------------- the rubric in the spec
def raw_spec() -> dict:
    return tomllib.loads((ROOT / "assignments" / "kadai8" / "spec.toml").read_text(encoding="utf-8"))


def with_rubric(items: list[dict]) -> dict:
    raw = raw_spec()
    next(c for c in raw["checks"] if c["id"] == DISCUSSION)["rubric"] = items
    return raw


def parse(raw: dict):
    return parse_spec(raw, root=ROOT / "assignments" / "kadai8", project_root=ROOT)


def test_the_assignments_rubric_is_typed_and_within_the_checks_points():
    check = next(c for c in load_spec(ROOT, "kadai8").checks if c.id == DISCUSSION)
    assert [i.points for i in check.rubric] == [10, 7, 4, 1]
    assert all(i.description.ja and i.description.en and i.comment.ja and i.comment.en for i in check.rubric)
    assert check.question and all(c.rubric == () for c in load_spec(ROOT, "kadai8").checks if c.id != DISCUSSION)


@pytest.mark.parametrize("items, problem", [
    ([{"key": "a", "points": 11}], "from 0 to the check's 10"),
    ([{"key": "a", "points": -1}], "from 0 to the check's 10"),
    ([{"key": "a", "points": 2.5}], "whole number"),
    ([{"key": "a", "points": 1}, {"key": "a", "points": 2}], "duplicate keys"),
    ([{"points": 1}], "missing key"),
    ([{"key": str(n), "points": 1} for n in range(10)], "at most 9"),
])
def test_a_rubric_item_out_of_range_or_repeated_is_refused(items, problem):
    with pytest.raises(ConfigError, match=problem):
        parse(with_rubric(copy.deepcopy(items)))


def test_the_rubric_does_not_ship_in_the_students_self_check():
    shipped = public_spec(raw_spec())
    assert all("rubric" not in c and "question" not in c for c in shipped["checks"])
