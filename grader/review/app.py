"""The TA review web app (Flask, served by Werkzeug on 127.0.0.1 only).

Every request needs the session token (printed at start as `http://127.0.0.1:PORT/?token=…`, like
Jupyter): from the query string the first time, then from an HttpOnly SameSite=Strict cookie.
POSTs must also carry the token in the form, which another site cannot read, so they are
CSRF-safe. Pages: the class list (status, score, TA work left), one student (checks, the 考察,
manual points + comment, overrides with a reason, the review history) and the generated files
(report.html, index.html, grades.csv) under /files/. A flagged submission (grader.judge.integrity) shows its
findings and a form to accept or reject it with a reason (POST /student/<id>/integrity).
Every change is written to the gradebook
(manual_scores; overrides, integrity decisions and review_log via grader.gradebook.reviews) and the student's report,
index.html and grades.csv are regenerated at once.

Nothing a student wrote can drive the app (notebook outputs and evidence are the student's):
  * /files/ serves only what the grader generated (`served_kind`): index.html, report.html and the
    similarity pages inline — sanitized, under a CSP whose only script is the class page's own
    sort script — and grades.csv, result.json, executed.ipynb and the logs as downloads
    (Content-Disposition: attachment). Evidence and anything else in OUT: 404;
  * every response carries a CSP, `X-Content-Type-Options: nosniff` and no-referrer;
  * the Host header must be 127.0.0.1:PORT or localhost:PORT (a DNS-rebinding page cannot talk to us);
  * student ids in URLs follow grader.assignment.student_ids; points must be whole numbers 0…max (400 otherwise).
"""

from __future__ import annotations

import hmac
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template, request, send_from_directory, url_for
from werkzeug.serving import make_server

from grader.assignment import student_ids
from grader.assignment.spec import AssignmentSpec, CheckSpec, load_spec
from grader.gradebook.final import Reviews
from grader.gradebook.publish import republish
from grader.gradebook.reviews import INTEGRITY_DECISIONS, ReviewStore
from grader.gradebook.store import Gradebook
from grader.i18n import t
from grader.report.pages import SORT_SCRIPT, STATUS_LABELS, STATUS_MARKS, late_text, local_time
from grader.report.pages import csp as report_csp
from grader.results import STATUS_NAMES, CheckResult, StudentResult

LANG = "ja"  # the review app is Japanese (shared templates and the catalogue ask for a language)
COOKIE = "grader_review_token"
REVIEWER_COOKIE = "grader_reviewer"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# The generated pages' own policy (grader.report.csp, the class page's sort script its only script),
# sent as a header too, so it holds even for a page whose <meta> a student could push out of <head>.
FILES_CSP = f"{report_csp(SORT_SCRIPT)}; frame-ancestors 'none'"


def create_app(*, out: Path, project_root: Path, assignment: str, token: str, reviewer: str = "") -> Flask:
    spec = load_spec(project_root, assignment)
    app = Flask(__name__, template_folder=str(Path(__file__).parent.parent / "report" / "templates"))
    app.jinja_env.autoescape = True  # .j2 templates are not autoescaped by Flask's default rule
    app.jinja_env.globals["late_text"] = late_text
    app.jinja_env.filters["when"] = local_time  # shared templates show times in the course's zone
    app.jinja_env.globals["S"] = STATUS_NAMES
    app.jinja_env.globals["t"] = t
    app.jinja_env.globals["lang"] = LANG
    guard(app, token)
    review = ClassReview(out=out, project_root=project_root, assignment=assignment, spec=spec)
    reading_pages(app, review, token=token, reviewer=reviewer)
    saving_page(app, review, token=token)
    integrity_page(app, review, token=token)
    return app


def guard(app: Flask, token: str) -> None:
    """Every request needs the token (query string or cookie; POSTs also in the form); safe headers."""

    def authorised() -> bool:
        given = request.args.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), token.encode())

    app.config["ALLOWED_HOSTS"] = {"127.0.0.1", "localhost"}  # ReviewServer adds the port once bound

    @app.before_request
    def check_token():
        if request.host not in app.config["ALLOWED_HOSTS"]:  # DNS rebinding: evil.example → 127.0.0.1
            abort(400, "unexpected Host header")
        if request.view_args is not None and "student" in request.view_args \
                and not student_ids.is_valid(request.view_args["student"]):
            abort(404)
        if not authorised():
            abort(403)
        if request.method == "POST" and not hmac.compare_digest(request.form.get("token", "").encode(),
                                                                token.encode()):
            abort(403)

    @app.after_request
    def headers(response):
        if request.args.get("token") and response.status_code < 400:
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        # Every response, errors and /files/ included: at most the grader's own page script runs.
        response.headers["Content-Security-Policy"] = FILES_CSP if request.path.startswith("/files/") else CSP
        return response


@dataclass(frozen=True)
class ClassReview:
    """The graded class a review app serves: where it is and its spec."""

    out: Path
    project_root: Path
    assignment: str
    spec: AssignmentSpec

    def load(self) -> dict[str, StudentResult]:
        """Everyone's final result (held while flagged, manual scores and overrides applied), from the gradebook."""
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

    def student_page(self, student: str, results: dict[str, StudentResult], *, token: str, reviewer: str,
                     errors: list[str], saved: str | None = None) -> str:
        """One student's page: checks, findings, the 考察, manual points, overrides and the history."""
        with Gradebook.open(self.out) as book, ReviewStore(self.out) as store:
            manual = book.manual_scores(self.spec.id).get(student, {})
            history = store.history(self.spec.id, student)
        return render_template("review_student.html.j2", ja=True, r=results[student], auto=self.automatic(student),
                               manual=manual, history=history, labels=STATUS_LABELS[LANG], marks=STATUS_MARKS,
                               token=token, reviewer=reviewer, errors=errors, saved=saved,
                               title=self.spec.title.get(LANG))


def reading_pages(app: Flask, review: ClassReview, *, token: str, reviewer: str) -> None:
    """The class list (flagged submissions first), one student, and the generated files."""
    out, spec, load = review.out, review.spec, review.load

    @app.get("/")
    def index():
        results = sorted(load().values(), key=lambda r: (not r.flagged, r.student))  # flagged first
        return render_template("review_index.html.j2", ja=True, results=results, labels=STATUS_LABELS[LANG],
                               title=spec.title.get(LANG), token=token)

    @app.get("/student/<student>")
    def student(student: str):
        results = load()
        if student not in results:
            abort(404)
        return review.student_page(student, results, token=token,
                                    reviewer=request.cookies.get(REVIEWER_COOKIE) or reviewer, errors=[],
                                    saved=request.args.get("saved"))

    @app.get("/files/<path:name>")
    def files(name: str):
        """Only files the grader generated: its HTML pages inline (sanitized, under FILES_CSP), a few
        data files as downloads. Nothing a notebook wrote (evidence, outputs) is served at all."""
        kind = served_kind(name)
        if kind is None:
            abort(404)
        mimetype, inline = kind
        return send_from_directory(out, name, mimetype=mimetype, as_attachment=not inline)


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
        manual_changes, override_changes, errors = form_changes(form, checks, _automatic(student))
        if (manual_changes or override_changes) and not name:
            errors.append(t("review.reviewer_missing", LANG))
        if errors:
            return review.student_page(student, results, token=token, reviewer=name, errors=errors), 400
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


def integrity_page(app: Flask, review: ClassReview, *, token: str) -> None:
    """A TA's decision on a flagged submission (grader.judge.integrity), with a reason, republished at once."""
    out, spec, load = review.out, review.spec, review.load

    @app.post("/student/<student>/integrity")
    def decide_integrity(student: str):
        """Accept (the automatic points count again) or reject (they stay held) a flagged submission."""
        results = load()
        if student not in results or not (results[student].integrity or {}).get("findings"):
            abort(404)
        form = request.form
        name, reason, decision = (form.get("reviewer", "").strip(), form.get("integrity_reason", "").strip(),
                                  form.get("integrity_decision", ""))
        errors = [t(key, LANG) for missing, key in ((decision not in INTEGRITY_DECISIONS, "review.choose_a_decision"),
                                                    (not reason, "review.decision_needs_a_reason"),
                                                    (not name, "review.reviewer_missing")) if missing]
        if errors:
            return review.student_page(student, results, token=token, reviewer=name, errors=errors), 400
        with ReviewStore(out) as store:
            key = (results[student].integrity or {})["key"]
            store.set_integrity_decision(spec.id, student, key=key, decision=decision, reason=reason, reviewer=name)
        republish(out, review.project_root, review.assignment, [student])
        response = redirect(url_for("student", student=student, saved=1))
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
            points, problem = parse_points(raw, check.points)
            if problem:
                errors.append(f"{check_id}: {problem}")
            else:
                manual_changes.append((check_id, points, form.get(f"manual_comment__{check_id}", "").strip()))
        if form.get(f"override_clear__{check_id}"):
            override_changes.append((check_id, None, ""))
            continue
        raw = form.get(f"override_points__{check_id}", "").strip()
        reason = form.get(f"override_reason__{check_id}", "").strip()
        if raw != "" or reason:
            points, problem = parse_points(raw, check.points)
            if problem:
                errors.append(f"{check_id}: {t('review.override_problem', LANG, problem=problem)}")
                continue
            if not reason:
                errors.append(f"{check_id}: {t('review.override_needs_a_reason', LANG)}")
                continue
            override_changes.append((check_id, points, reason))
    return manual_changes, override_changes, errors


# What /files/ serves: (OUT-relative pattern, mimetype, inline). Student folders are checked with
# grader.assignment.student_ids, so a name is never a path trick; anything else is 404.
GENERATED_PAGES = ("index.html", "similarity/{pair}.html", "{student}/report.html")
DOWNLOADS = {"grades.csv": "text/csv", "similarity.json": "application/json", "{student}/result.json":
             "application/json", "{student}/executed.ipynb": "application/x-ipynb+json",
             "{student}/kernel.log": "text/plain", "{student}/predict.log": "text/plain"}


def served_kind(name: str) -> tuple[str, bool] | None:
    """(mimetype, inline) for a file /files/ may serve, or None."""
    parts = name.split("/")
    if len(parts) == 1:
        if name == "index.html":
            return "text/html", True
        return (DOWNLOADS[name], False) if name in DOWNLOADS else None
    if len(parts) != 2:
        return None
    folder, file = parts
    if folder == "similarity":
        pair = file.removesuffix(".html")
        ids = pair.split("__")
        return ("text/html", True) if file.endswith(".html") and len(ids) == 2 and all(map(student_ids.is_valid, ids)) \
            else None
    if not student_ids.is_valid(folder):
        return None
    if file == "report.html":
        return "text/html", True
    pattern = "{student}/" + file
    return (DOWNLOADS[pattern], False) if pattern in DOWNLOADS else None


def parse_points(raw: str, maximum: int) -> tuple[int | None, str | None]:
    """A whole number of points from 0 to `maximum` (7.0 is 7), or why not (inf, nan, 1e400, -1, …)."""
    try:
        value = float(raw)
    except ValueError:
        return None, t("review.points_not_a_number", LANG)
    if not math.isfinite(value) or value != int(value):
        return None, t("review.points_not_whole", LANG, maximum=maximum)
    if not 0 <= value <= maximum:
        return None, t("review.points_out_of_range", LANG, maximum=maximum)
    return int(value), None


class ReviewServer:
    """The app on 127.0.0.1 (never another interface), in the calling thread or a background one."""

    def __init__(self, *, out: Path, project_root: Path, assignment: str, port: int = 0, reviewer: str = "",
                 token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.app = create_app(out=out, project_root=project_root, assignment=assignment, token=self.token,
                              reviewer=reviewer)
        self.server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.port = self.server.server_port
        self.app.config["ALLOWED_HOSTS"] = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
