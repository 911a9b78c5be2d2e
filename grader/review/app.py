"""The TA review web app (Flask, served by Werkzeug on 127.0.0.1 only).

Every request needs the session token (printed at start as `http://127.0.0.1:PORT/?token=…`, like
Jupyter): from the query string the first time, then from an HttpOnly SameSite=Strict cookie.
POSTs must also carry the token in the form, which another site cannot read, so they are
CSRF-safe. Pages: the class list (status, score, TA work left), one student (checks, the 考察,
manual points + comment, overrides with a reason, the review history) and the generated files
(report.html, index.html, grades.csv) under /files/, and the scoring queue (/queue, grader.review.queue:
one written answer at a time, from the keyboard; its small script is the app's only one, allowed by its
hash). A refused save re-renders the form with what was typed and marks the fields at fault. A flagged
submission (grader.judge.integrity) shows its findings and a form to accept or reject it with a reason
(POST /student/<id>/integrity).
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
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template, request, send_from_directory, url_for
from werkzeug.serving import make_server

from grader.assignment import student_ids
from grader.assignment.spec import CheckSpec, load_spec
from grader.gradebook.reviews import INTEGRITY_DECISIONS, ReviewStore
from grader.gradebook.store import Gradebook
from grader.i18n import t
from grader.report.pages import SORT_SCRIPT, STATUS_LABELS, late_text, local_time
from grader.report.pages import csp as report_csp
from grader.results import STATUS_NAMES, CheckResult
from grader.review.queue import QUEUE_SCRIPT, queue_pages, script_hash
from grader.review.state import (LANG, REVIEWER_COOKIE, ClassReview, Publisher, Refusal, parse_points,
                                  remember_reviewer)

COOKIE = "grader_review_token"
# The app's pages run one script at most: the queue's keys (grader/review/queue.js), allowed by its hash.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       f"script-src {script_hash(QUEUE_SCRIPT)}; frame-ancestors 'none'; base-uri 'none'")
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
    publisher = app.extensions["review_publisher"] = Publisher(review)
    reading_pages(app, review, publisher, token=token, reviewer=reviewer)
    saving_page(app, review, publisher, token=token)
    integrity_page(app, review, publisher, token=token)
    queue_pages(app, review, publisher, token=token, reviewer=reviewer)
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


def reading_pages(app: Flask, review: ClassReview, publisher: Publisher, *, token: str, reviewer: str) -> None:
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
                                    reviewer=request.cookies.get(REVIEWER_COOKIE) or reviewer,
                                    saved=request.args.get("saved"))

    @app.get("/files/<path:name>")
    def files(name: str):
        """Only files the grader generated: its HTML pages inline (sanitized, under FILES_CSP), a few
        data files as downloads. Nothing a notebook wrote (evidence, outputs) is served at all."""
        kind = served_kind(name)
        if kind is None:
            abort(404)
        mimetype, inline = kind
        publisher.drain()  # the queue's last saves are in the files before anyone reads them
        return send_from_directory(out, name, mimetype=mimetype, as_attachment=not inline)


def saving_page(app: Flask, review: ClassReview, publisher: Publisher, *, token: str) -> None:
    """A TA's manual points and overrides, written to the gradebook and republished at once."""
    out, spec, load, _automatic = review.out, review.spec, review.load, review.automatic
    checks = {c.id: c for c in spec.checks}

    @app.post("/student/<student>")
    def save(student: str):
        results = load()
        if student not in results:
            abort(404)
        form = request.form
        name = form.get("reviewer", "").strip()
        manual_changes, override_changes, refusal = form_changes(form, checks, _automatic(student))
        if (manual_changes or override_changes) and not name:
            refusal.refuse("reviewer", t("review.reviewer_missing", LANG))
        if refusal.invalid:  # everything typed comes back, the fields at fault marked
            return review.student_page(student, results, token=token, reviewer=name, refusal=refusal), 400
        with Gradebook.open(out) as book, ReviewStore(out) as store:
            for check_id, points, comment in manual_changes:
                book.set_manual_score(spec.id, student, check_id, points, comment=comment, scorer=name)
                store.log_manual(spec.id, student, check_id, points, comment, name)
            for check_id, points, reason in override_changes:
                if points is None:
                    store.delete_override(spec.id, student, check_id, reviewer=name)
                else:
                    store.set_override(spec.id, student, check_id, points, reason=reason, reviewer=name)
        publisher.now([student])
        return remember_reviewer(redirect(url_for("student", student=student, saved=1)), name)


def integrity_page(app: Flask, review: ClassReview, publisher: Publisher, *, token: str) -> None:
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
        refusal = Refusal(submitted=form.to_dict())
        for missing, field, key in (
                (decision not in INTEGRITY_DECISIONS, "integrity_decision", "review.choose_a_decision"),
                (not reason, "integrity_reason", "review.decision_needs_a_reason"),
                (not name, "integrity_reviewer", "review.reviewer_missing")):
            if missing:
                refusal.refuse(field, t(key, LANG))
        if refusal.invalid:
            return review.student_page(student, results, token=token, reviewer=name, refusal=refusal), 400
        with ReviewStore(out) as store:
            key = (results[student].integrity or {})["key"]
            store.set_integrity_decision(spec.id, student, key=key, decision=decision, reason=reason, reviewer=name)
        publisher.now([student])
        return remember_reviewer(redirect(url_for("student", student=student, saved=1)), name)


def form_changes(form: Any, checks: dict[str, CheckSpec],
                 automatic: dict[str, CheckResult]) -> tuple[list[tuple], list[tuple], Refusal]:
    """The manual scores and overrides a review form asks for, and what is wrong with it (by field)."""
    refusal = Refusal(submitted=form.to_dict())
    manual_changes: list[tuple] = []
    override_changes: list[tuple] = []
    for check_id, check in checks.items():
        if check_id not in automatic:
            continue
        raw = form.get(f"manual_points__{check_id}", "").strip()
        if raw != "":
            points, problem = parse_points(raw, check.points)
            if problem:
                refusal.refuse(f"manual_points__{check_id}", f"{check_id}: {problem}")
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
                refusal.refuse(f"override_points__{check_id}",
                               f"{check_id}: {t('review.override_problem', LANG, problem=problem)}")
                continue
            if not reason:
                refusal.refuse(f"override_reason__{check_id}",
                               f"{check_id}: {t('review.override_needs_a_reason', LANG)}")
                continue
            override_changes.append((check_id, points, reason))
    return manual_changes, override_changes, refusal


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
        self.app.extensions["review_publisher"].drain()  # no save leaves without its report
        self.server.server_close()
