"""The TA review web app (Flask, served by Werkzeug on 127.0.0.1 only).

Every request needs the session token (printed at start as `http://127.0.0.1:PORT/?token=…`, like
Jupyter): from the query string the first time, then from an HttpOnly SameSite=Strict cookie.
POSTs must also carry the token in the form, which another site cannot read, so they are
CSRF-safe. Pages: the class list (status, score, TA work left), one student (checks, the 考察,
manual points + comment, overrides with a reason, the review history) and the generated files
(report.html, index.html, grades.csv) under /files/. Every change is written to the gradebook
(manual_scores; overrides and review_log via grader.gradebook.reviews) and the student's report,
index.html and grades.csv are regenerated at once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template, request, send_from_directory, url_for
from werkzeug.serving import make_server

from grader.assignment.spec import AssignmentSpec, CheckSpec, load_spec
from grader.gradebook.final import Reviews
from grader.gradebook.publish import republish
from grader.gradebook.reviews import ReviewStore
from grader.gradebook.store import Gradebook
from grader.i18n import t
from grader.report.pages import STATUS_LABELS, STATUS_MARKS, late_text
from grader.results import STATUS_NAMES, CheckResult, StudentResult

COOKIE = "grader_review_token"
REVIEWER_COOKIE = "grader_reviewer"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def create_app(*, out: Path, project_root: Path, assignment: str, token: str, reviewer: str = "") -> Flask:
    spec = load_spec(project_root, assignment)
    app = Flask(__name__, template_folder=str(Path(__file__).parent.parent / "report" / "templates"))
    app.jinja_env.autoescape = True  # .j2 templates are not autoescaped by Flask's default rule
    app.jinja_env.globals["late_text"] = late_text
    app.jinja_env.globals["S"] = STATUS_NAMES
    app.jinja_env.globals["t"] = t
    app.jinja_env.globals["lang"] = "ja"  # the review app is Japanese (shared templates ask for a language)
    guard(app, token)
    review = ClassReview(out=out, project_root=project_root, assignment=assignment, spec=spec)
    reading_pages(app, review, token=token, reviewer=reviewer)
    saving_page(app, review, token=token)
    return app


def guard(app: Flask, token: str) -> None:
    """Every request needs the token (query string or cookie; POSTs also in the form); safe headers."""

    def authorised() -> bool:
        given = request.args.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), token.encode())

    @app.before_request
    def check_token():
        if not authorised():
            abort(403)
        if request.method == "POST" and not hmac.compare_digest(request.form.get("token", "").encode(),
                                                                token.encode()):
            abort(403)

    @app.after_request
    def headers(response):
        if request.args.get("token") and response.status_code < 400:
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        if not request.path.startswith("/files/"):  # generated reports carry their own CSP
            response.headers["Content-Security-Policy"] = CSP
        return response


@dataclass(frozen=True)
class ClassReview:
    """The graded class a review app serves: where it is and its spec."""

    out: Path
    project_root: Path
    assignment: str
    spec: AssignmentSpec

    def load(self) -> dict[str, StudentResult]:
        """Everyone's final result (manual scores and overrides applied), from the gradebook."""
        out, spec = self.out, self.spec
        reviews = Reviews.load(out, spec.id)
        with Gradebook.open(out) as book:
            current = book.submissions(spec.id)
            return {name: reviews.final(row.result) for name, row in book.results(spec.id).items()
                    if not current or name in current}

    def automatic(self, student: str) -> dict[str, CheckResult]:
        with Gradebook.open(self.out) as book:
            row = book.result(self.spec.id, student)
            return {c.id: c for c in row.result.checks} if row else {}


def reading_pages(app: Flask, review: ClassReview, *, token: str, reviewer: str) -> None:
    """The class list, one student, and the generated files."""
    out, spec, load, _automatic = review.out, review.spec, review.load, review.automatic

    @app.get("/")
    def index():
        results = load()
        return render_template("review_index.html.j2", ja=True, results=results.values(), labels=STATUS_LABELS["ja"],
                               title=spec.title.get("ja"), token=token)

    @app.get("/student/<student>")
    def student(student: str):
        results = load()
        if student not in results:
            abort(404)
        with Gradebook.open(out) as book, ReviewStore(out) as store:
            manual = book.manual_scores(spec.id).get(student, {})
            history = store.history(spec.id, student)
        automatic = _automatic(student)
        return render_template("review_student.html.j2", ja=True, r=results[student], auto=automatic, manual=manual,
                               history=history, labels=STATUS_LABELS["ja"], marks=STATUS_MARKS, token=token,
                               reviewer=request.cookies.get(REVIEWER_COOKIE) or reviewer,
                               errors=[], saved=request.args.get("saved"), title=spec.title.get("ja"))

    @app.get("/files/<path:name>")
    def files(name: str):
        if not (name.endswith((".html", ".csv", ".json")) or name.startswith("similarity/")):
            abort(404)
        return send_from_directory(out, name)


def saving_page(app: Flask, review: ClassReview, *, token: str) -> None:
    """A TA's manual points and overrides, written to the gradebook and republished at once."""
    out, spec, load, _automatic = review.out, review.spec, review.load, review.automatic
    project_root, assignment = review.project_root, review.assignment
    checks = {c.id: c for c in spec.checks}

    @app.post("/student/<student>")
    def save(student: str):
        results = load()
        if student not in results:
            abort(404)
        form = request.form
        name = form.get("reviewer", "").strip()
        automatic = _automatic(student)
        manual_changes, override_changes, errors = form_changes(form, checks, automatic)
        if (manual_changes or override_changes) and not name:
            errors.append("採点者の名前を入力してください")
        if errors:
            with Gradebook.open(out) as book, ReviewStore(out) as store:
                manual = book.manual_scores(spec.id).get(student, {})
                history = store.history(spec.id, student)
            return render_template("review_student.html.j2", ja=True, r=results[student], auto=automatic, manual=manual,
                                   history=history, labels=STATUS_LABELS["ja"], marks=STATUS_MARKS, token=token,
                                   reviewer=name, errors=errors, saved=None, title=spec.title.get("ja")), 400
        with Gradebook.open(out) as book, ReviewStore(out) as store:
            for check_id, points, comment in manual_changes:
                book.set_manual_score(spec.id, student, check_id, points, comment=comment, scorer=name)
                store.log_manual(spec.id, student, check_id, points, comment, name)
            for check_id, points, reason in override_changes:
                if points is None:
                    store.delete_override(spec.id, student, check_id, reviewer=name)
                else:
                    store.set_override(spec.id, student, check_id, points, reason=reason, reviewer=name)
        republish(out, project_root, assignment, [student])
        response = redirect(url_for("student", student=student, saved=1))
        if name:
            response.set_cookie(REVIEWER_COOKIE, name, httponly=True, samesite="Strict")
        return response


def form_changes(form: Any, checks: dict[str, CheckSpec],
                 automatic: dict[str, CheckResult]) -> tuple[list[tuple], list[tuple], list[str]]:
    """The manual scores and overrides a review form asks for, and what is wrong with it."""
    errors: list[str] = []
    manual_changes: list[tuple] = []
    override_changes: list[tuple] = []
    for check_id, check in checks.items():
        if check_id not in automatic:
            continue
        raw = form.get(f"manual_points__{check_id}", "").strip()
        if raw != "":
            try:
                points = max(0, min(int(float(raw)), check.points))
            except ValueError:
                errors.append(f"{check_id}: 点数は数字で入力してください")
            else:
                manual_changes.append((check_id, points, form.get(f"manual_comment__{check_id}", "").strip()))
        if form.get(f"override_clear__{check_id}"):
            override_changes.append((check_id, None, ""))
            continue
        raw = form.get(f"override_points__{check_id}", "").strip()
        reason = form.get(f"override_reason__{check_id}", "").strip()
        if raw != "" or reason:
            try:
                points = max(0, min(int(float(raw)), check.points))
            except ValueError:
                errors.append(f"{check_id}: 上書きの点数を数字で入力してください")
                continue
            if not reason:
                errors.append(f"{check_id}: 上書きには理由が必要です")
                continue
            override_changes.append((check_id, points, reason))
    return manual_changes, override_changes, errors


class ReviewServer:
    """The app on 127.0.0.1 (never another interface), in the calling thread or a background one."""

    def __init__(self, *, out: Path, project_root: Path, assignment: str, port: int = 0, reviewer: str = "",
                 token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.app = create_app(out=out, project_root=project_root, assignment=assignment, token=self.token,
                              reviewer=reviewer)
        self.server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.port = self.server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
