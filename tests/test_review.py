"""The review store (overrides on top of manual scores) and the review app through Flask's test client."""

from __future__ import annotations

import csv
import re

import pytest

from review_fixtures import ROOT, build_reviewable_class
from grader.review_app import COOKIE, create_app
from grader.review_store import ReviewStore, republish

TOKEN = "test-token-123"
DISCUSSION = "discussion.answered"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return build_reviewable_class(tmp_path_factory.mktemp("review"))


@pytest.fixture
def client(graded):
    out, _ = graded
    app = create_app(out=out, project_root=ROOT, assignment="kadai8", token=TOKEN)
    return app.test_client()


def grades(out) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", encoding="utf-8-sig", newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def test_every_request_needs_the_token(client):
    assert client.get("/").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert client.get("/files/grades.csv").status_code == 403
    first = client.get(f"/?token={TOKEN}")
    assert first.status_code == 200 and COOKIE in first.headers.get("Set-Cookie", "")
    assert "s001_pass" in first.get_data(as_text=True)
    assert client.get("/student/s001_pass").status_code == 200  # the cookie from now on
    assert "default-src 'none'" in first.headers["Content-Security-Policy"]


def test_posts_need_the_token_in_the_form(client):
    client.get(f"/?token={TOKEN}")
    response = client.post("/student/s001_pass", data={"reviewer": "TA", f"manual_points__{DISCUSSION}": "5"})
    assert response.status_code == 403  # the cookie alone (a cross-site form) is not enough


def test_manual_score_and_override_with_reason(graded, client):
    out, results = graded
    before = results["s001_pass"]
    assert next(c for c in before.checks if c.id == DISCUSSION).status == "manual"
    client.get(f"/?token={TOKEN}")
    missing_reason = client.post("/student/s001_pass", data={
        "token": TOKEN, "reviewer": "佐藤TA", "override_points__data.shape": "0"})
    assert missing_reason.status_code == 400 and "理由" in missing_reason.get_data(as_text=True)
    response = client.post("/student/s001_pass", data={
        "token": TOKEN, "reviewer": "佐藤TA", f"manual_points__{DISCUSSION}": "10",
        f"manual_comment__{DISCUSSION}": "よく考察できています",
        "override_points__data.shape": "2", "override_reason__data.shape": "形は合っているが説明不足"})
    assert response.status_code == 302
    page = client.get("/student/s001_pass?saved=1").get_data(as_text=True)
    assert "形は合っているが説明不足" in page and "佐藤TA" in page
    row = grades(out)["s001_pass"]
    assert row[DISCUSSION] == "10"
    assert row["data.shape"] == "2"
    assert int(row["score"]) == before.score + 10 - 3
    report = (out / "s001_pass" / "report.html").read_text(encoding="utf-8")
    assert "TA による上書き" in report and "形は合っているが説明不足" in report and "佐藤TA" in report
    with ReviewStore(out) as store:
        assert [h["action"] for h in store.history("kadai8", "s001_pass")] == ["override", "manual"]
    # a regenerated class (as after `grader manual`) keeps the override
    again = republish(out, ROOT, "kadai8")
    assert again["s001_pass"].score == int(row["score"])
    clear = client.post("/student/s001_pass", data={"token": TOKEN, "reviewer": "佐藤TA",
                                                    "override_clear__data.shape": "1"})
    assert clear.status_code == 302 and grades(out)["s001_pass"]["data.shape"] == "5"


def test_student_text_is_escaped(graded, client):
    client.get(f"/?token={TOKEN}")
    client.post("/student/s002_fail", data={"token": TOKEN, "reviewer": "<b>x</b>",
                                           "override_points__data.shape": "1",
                                           "override_reason__data.shape": "<script>alert(1)</script>"})
    page = client.get("/student/s002_fail").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert not re.search(r"<b>x</b>", page)


@pytest.mark.parametrize("points", ["inf", "-inf", "1e400", "nan", "-1", "11", "2.5", "abc", "1e3"])
def test_non_finite_or_out_of_range_points_are_a_400_with_a_message(graded, client, points):
    out, _ = graded
    before = (out / "grades.csv").read_bytes()
    client.get(f"/?token={TOKEN}")
    for field in (f"manual_points__{DISCUSSION}", "override_points__data.shape"):
        response = client.post("/student/s002_fail", data={"token": TOKEN, "reviewer": "TA", field: points,
                                                           "override_reason__data.shape": "理由"})
        assert response.status_code == 400, (field, points)
        assert "点数は" in response.get_data(as_text=True)
    assert (out / "grades.csv").read_bytes() == before


def test_a_foreign_host_header_is_refused(graded):
    out, _ = graded
    app = create_app(out=out, project_root=ROOT, assignment="kadai8", token=TOKEN)
    app.config["ALLOWED_HOSTS"] = {"127.0.0.1:8808", "localhost:8808"}
    client = app.test_client()
    assert client.get(f"/?token={TOKEN}", headers={"Host": "evil.example:8808"}).status_code == 400
    assert client.get(f"/?token={TOKEN}", headers={"Host": "127.0.0.1:9999"}).status_code == 400
    assert client.get(f"/?token={TOKEN}", headers={"Host": "127.0.0.1:8808"}).status_code == 200
    assert client.get(f"/?token={TOKEN}", headers={"Host": "localhost:8808"}).status_code == 200


def test_files_serves_only_grader_pages_inline_and_data_as_downloads(graded, client):
    out, _ = graded
    client.get(f"/?token={TOKEN}")
    (out / "s001_pass" / "evidence").mkdir(exist_ok=True)
    (out / "s001_pass" / "evidence" / "page.html").write_text("<script>alert(1)</script>", encoding="utf-8")
    (out / "s001_pass" / "page.html").write_text("<script>alert(1)</script>", encoding="utf-8")
    for refused in ("s001_pass/evidence/page.html", "s001_pass/page.html", "s001_pass/evidence/events.jsonl",
                    "../gradebook.sqlite", "gradebook.sqlite", "s001_pass/../index.html", "submissions.json"):
        response = client.get(f"/files/{refused}")
        assert response.status_code == 404, refused
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = client.get("/files/s001_pass/report.html")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    download = client.get("/files/grades.csv")
    assert download.status_code == 200 and download.headers["Content-Disposition"].startswith("attachment")
    assert client.get("/files/s001_pass/result.json").headers["Content-Disposition"].startswith("attachment")
