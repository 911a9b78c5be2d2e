"""Write what a student, a TA and an instructor read: report.html, index.html, grades.csv.

Reports are single self-contained files (figures as data: URIs, inline CSS, no external
anything, a Content-Security-Policy that forbids it), Japanese first. Student-controlled text is
escaped by Jinja or sanitized by `render_notebook`; figures come from evidence and the grader's
own numbers only (`grader.report.figures`).
"""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import json
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import nbformat
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from grader.assignment.content import Content
from grader.assignment.paths import course_timezone
from grader.evidence.reader import Evidence
from grader.i18n.times import when
from grader.judge.cells import check_cell
from grader.report import figures
from grader.report.phrases import actual_text, expected_text
from grader.report.render_notebook import RenderedNotebook, render_notebook
from grader.i18n import LANGS, listing, t
from grader.results import (
    CheckResult, CHECK_STATUSES, ERROR, FAIL, FLAGGED, GRADED, GRADER_ERROR, INVALID, KERNEL_DIED, MANUAL, NOT_RUN, PASS, STATUS_NAMES,
    STUDENT_STATUSES, TIMEOUT, StudentResult,
)

# Words for each status, by language (the catalogue's `status.*`).
STATUS_LABELS = {lang: {status: t(f"status.{status}", lang) for status in (*CHECK_STATUSES, *STUDENT_STATUSES)}
                 for lang in LANGS}
STATUS_MARKS = {PASS: "✓", FAIL: "✗", ERROR: "!", NOT_RUN: "–", MANUAL: "?"}
ATTENTION = {ERROR, TIMEOUT, KERNEL_DIED, INVALID, GRADER_ERROR, FLAGGED}
# Flagged first: a TA must decide before the held points count (grader.judge.integrity).
SEVERITY = {FLAGGED: -1, GRADER_ERROR: 0, INVALID: 1, KERNEL_DIED: 2, TIMEOUT: 3, ERROR: 4, GRADED: 5}
AUTO_FAILED = {FAIL, ERROR, NOT_RUN}
MAX_BATCH_FIGURES = 4
# Who reads a student's report (render_student_report): the TA's copy, or the feedback given back.
TA, STUDENT = "ta", "student"

# Sorting for the class page's table; allowed by its hash in the Content-Security-Policy.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
    function sort() {
      var up = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column], value = cell.getAttribute("data-sort");
        return value === null ? cell.textContent.trim() : value;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y, "ja");
        return up ? d : -d;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    }
    th.tabIndex = 0;
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
  });
});
"""


def csp(script: str | None = None) -> Markup:
    """No network, no plugins, no frames; inline styles, data: images, and at most our own script."""
    scripts = "'none'"
    if script is not None:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
        scripts = f"'sha256-{digest}'"
    return Markup(f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {scripts}; "
                  "base-uri 'none'; form-action 'none'")  # constant text: safe inside the attribute


@dataclass
class Picture:
    title: str
    uri: str
    caption: str = ""
    cell: int | None = None  # index of the notebook cell it comes from, for a link


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("grader.report", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["compact"] = lambda v: "—" if v is None else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.0%}"
    env.filters["acc"] = lambda v: "—" if v is None else f"{v:.3f}"
    env.filters["when"] = local_time
    env.filters["epoch"] = epoch
    env.globals["late_text"] = late_text
    env.globals["S"] = STATUS_NAMES
    env.globals["t"] = t  # {{ t('page.…', lang) }}: the page's words come from the catalogue too
    return env


def render_page(template: str, **context: Any) -> str:
    """One of the report templates rendered (other pages, such as similarity pairs, share the look)."""
    return _environment().get_template(template).render(**context)


def local_time(iso: Any, lang: str) -> str:
    """A stored (UTC) moment in the course's time zone: "2026年11月29日 17:20 (JST)" / "29 Nov 2026 17:20 JST"."""
    return when(iso, lang, course_timezone())


def epoch(iso: Any) -> str:
    """Seconds since 1970 of an ISO moment ("" for none): a sort key that is not a time to read."""
    try:
        moment = datetime.fromisoformat(str(iso))
    except ValueError:
        return ""
    return str(int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()))


def late_text(result: StudentResult, lang: str) -> str:
    """"期限後（2 時間 5 分）" for a late submission, "" otherwise (lateness comes from `grader pull`)."""
    if not result.late:
        return ""
    seconds = (result.submission or {}).get("late_by_s")
    if not isinstance(seconds, int):  # Canvas marked it late; no deadline was given to pull
        return t("late.lms", lang)
    days, rest = divmod(max(seconds, 60), 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    parts = [t("late.days", lang, n=days) if days else "", t("late.hours", lang, n=hours) if hours else "",
             t("late.minutes", lang, n=minutes) if minutes and not days else ""]
    return t("late.by", lang, duration=" ".join(p for p in parts if p))


# ---------------------------------------------------------------- per student
def write_student_report(result: StudentResult, out_dir: Path, content: Content | None = None) -> Path:
    """result.json and report.html for one student; returns the report path.

    Figures and the rendered notebook are read from `out_dir` (evidence/, executed.ipynb); class
    names and the slides' commentary from the assignment's `content` (assignments/<id>/content.toml).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    path = out_dir / "report.html"
    path.write_text(render_student_report(result, out_dir, content or Content()), encoding="utf-8")
    return path


def render_student_report(result: StudentResult, folder: Path, content: Content, *, audience: str = TA,
                          notebook_file: str | None = None, selfcheck: dict[str, Any] | None = None) -> str:
    """The report as `audience` reads it: TA (everything, links to the class page and the TA's files) or
    STUDENT (grader feedback: no class page, no result.json, no TA-only parts; see `for_student`).
    `notebook_file`: the executed notebook's name beside a student's copy, for a link. `selfcheck`: the
    page is a self-check's (grader.selfcheck.page): its findings, hidden-check count, budget and time;
    no links to the class page or the TA's files."""
    if audience == STUDENT:
        result = for_student(result)
    evidence = Evidence.load(folder / "evidence") if (folder / "evidence").is_dir() else None
    notebook = read_executed(folder / "executed.ipynb")
    cells = cell_links(notebook)
    stopped = result.status in (TIMEOUT, KERNEL_DIED)
    rendered = render_notebook(notebook, result.lang, stopped=stopped) if notebook is not None else None
    fig_lang = figures.label_lang(result.lang)
    return _environment().get_template("report.html.j2").render(
        r=result, labels=STATUS_LABELS[result.lang], marks=STATUS_MARKS, csp=csp(),
        verdict=verdict_line(result), budget_line=budget_line(result), fit_budget=training_fit_budget(result),
        batches=batch_pictures(evidence, fig_lang, result.lang, cells, content) if evidence else [],
        curves=curve_picture(evidence, result, fig_lang, content) if evidence else None,
        test=test_pictures(result, fig_lang, content), dataset=content.dataset, lang=result.lang,
        notebook=rendered, notes=[*result.notes, *render_notes(rendered, result)],
        kernel_log=(folder / "kernel.log").is_file(),
        has_notebook=(folder / "executed.ipynb").is_file(),
        auto_checks=[c for c in result.checks if c.status != MANUAL],
        for_student=audience == STUDENT, notebook_file=notebook_file,
        rows=check_rows(result, evidence, cells, first_error_cell(result, rendered)),
        selfcheck=selfcheck,
    )


def for_student(result: StudentResult) -> StudentResult:
    """What a student may read of a final result. Hidden checks already carry only their public message
    (the template never shows their expected values); here go the TA's notes (manual scores with the
    scorer's name, overrides with their reasons, which may name other students), and while the result is
    provisional the TA's scores and comments so far (the 考察 shows as "確認中" until the grade is final)."""
    shown = copy.deepcopy(result)
    ta_note = tuple(f"{c.id}: " for c in shown.checks)
    shown.notes = [n for n in shown.notes if not n.startswith(ta_note)]
    if not shown.complete:
        for check in shown.checks:
            if check.id in shown.answers and check.status != MANUAL:
                check.status, check.points, check.override, check.ta_score = MANUAL, 0, None, None
                check.message = check.public_message = t("feedback_pending", shown.lang)
    return shown


@dataclass
class CheckRow:
    """One check as the report's table shows it: values in words, one cause said once, its cell."""

    check: CheckResult
    expected: str
    actual: str
    same_cause_as: CheckResult | None = None  # an earlier check whose message this one repeats
    same_cause_row: int = 0  # its row number (the anchor #check-N)
    cell: int | None = None  # index of the notebook cell to look at (an anchor of the rendered notebook)
    cell_label: str = ""  # how the reader finds that cell: its prompt number [7], else its position


def check_rows(result: StudentResult, evidence: Evidence | None, cells: dict[int, int],
               error_cell: int | None) -> list[CheckRow]:
    """Each check with its phrases; a failing one also with the cell behind it (else the failing cell)
    and, when its message is word for word an earlier failing check's, a pointer to that check."""
    rows: list[CheckRow] = []
    said: dict[str, int] = {}
    counts = {index: count for count, index in cells.items()}
    for number, check in enumerate(result.checks, start=1):
        row = CheckRow(check, expected_text(check, result.lang), actual_text(check, result.lang))
        if check.status in AUTO_FAILED and not check.override:
            count = check_cell(check.kind, evidence) if evidence is not None and check.visible else None
            row.cell = cells.get(count, error_cell) if count is not None else error_cell
            if row.cell is not None:
                row.cell_label = f"[{counts[row.cell]}]" if row.cell in counts else str(row.cell + 1)
            shown = check.message if check.visible else check.public_message
            if shown and shown in said:
                row.same_cause_row = said[shown]
                row.same_cause_as = result.checks[said[shown] - 1]
            elif shown:
                said[shown] = number
        rows.append(row)
    return rows


def first_error_cell(result: StudentResult, rendered: RenderedNotebook | None) -> int | None:
    """The cell where the run went wrong (an error, or where it stopped): where a check without
    its own record should send the reader."""
    for error in result.execution.get("errors") or []:
        if isinstance(error.get("cell_index"), int):
            return int(error["cell_index"])
    return rendered.stopped_at if rendered is not None else None


def read_executed(path: Path) -> Any:
    """The executed notebook as data, or None (missing, a link, too large, unreadable)."""
    if not path.is_file() or path.is_symlink() or path.stat().st_size > 60_000_000:
        return None
    try:
        return nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable notebook only loses its rendering
        return None


def cell_links(notebook: Any) -> dict[int, int]:
    """execution_count → cell index, to link evidence and errors to the rendered cell."""
    cells = getattr(notebook, "cells", None) or []
    return {c.get("execution_count"): i for i, c in enumerate(cells)
            if c.get("cell_type") == "code" and isinstance(c.get("execution_count"), int)}


def verdict_line(result: StudentResult) -> str:
    """One sentence at the top: what happened and what to do first."""
    lang = result.lang
    failed = [c.title or c.id for c in result.checks if c.status in AUTO_FAILED]
    manual = [c.title or c.id for c in result.checks if c.status == MANUAL]
    if result.status == INVALID:
        return t("verdict.invalid", lang, message=result.message)
    if result.status == GRADER_ERROR:
        return t("verdict.grader_error", lang)
    if result.status == FLAGGED:  # the student learns only that it is under review, never why
        return result.message
    parts = [result.message] if result.status in ATTENTION and result.message else []
    if result.status in ATTENTION:
        parts.append(t("verdict.fix_marked_cell", lang))
    if failed:
        parts.append(t("verdict.not_met", lang, count=len(failed), listed=listing(failed[:4], lang),
                       more=t("list.more", lang) if len(failed) > 4 else ""))
    else:
        parts.append(t("verdict.all_passed", lang))
    if manual:
        parts.append(t("verdict.waiting_for_ta", lang, listed=listing(manual, lang)))
    return " ".join(parts)


def training_fit_budget(result: StudentResult) -> dict[str, Any] | None:
    fits = result.budget.get("fits") or []
    wanted = (result.evaluation or {}).get("fit")
    return next((f for f in fits if f.get("fit") == wanted), fits[-1] if fits else None)


def budget_line(result: StudentResult) -> str:
    """e.g. "standard: 2 / 50 エポック, 150 / 750 ステップ" (effective / as written in the notebook)."""
    lang = result.lang
    name = result.execution.get("budget") or result.budget.get("name", "")
    fit = training_fit_budget(result)
    if fit is None:
        return f"{name}: {result.budget.get('summary', '')}"
    steps = fit.get("requested_steps") or fit.get("natural_steps")

    def pair(effective: Any, requested: Any) -> str:
        return f"{effective if effective is not None else '?'} / {requested if requested is not None else '?'}"

    return (f"{name}: {pair(fit.get('effective_epochs'), fit.get('requested_epochs'))} {t('unit.epochs', lang)}, "
            f"{pair(fit.get('effective_steps'), steps)} {t('unit.steps', lang)}")


def describe_datagen(evidence: Evidence, number: Any) -> str:
    params = (evidence.datagen(number) or {}).get("params") or {}
    shown = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in list(params.items())[:6])
    return f"ImageDataGenerator({shown})"


def batch_pictures(evidence: Evidence, fig_lang: str, lang: str, cells: dict[int, int], content: Content) -> list[Picture]:
    """Each generator's first batch (as a 4×4 grid) beside the images it came from."""
    names = content.class_names(fig_lang, content.size)
    pictures = []
    for batch in evidence.of("batch"):
        if len(pictures) >= MAX_BATCH_FIGURES:
            break
        arrays = evidence.arrays(batch.get("file"))
        uri = figures.batch_grid(arrays.get("x"), arrays.get("x_orig"), arrays.get("y_orig"), fig_lang, names) if arrays else None
        if uri is None:
            continue
        flow = evidence.flow(batch.get("flow")) or {}
        where = f" · {t('unit.cell', lang)} [{batch.get('cell')}]" if batch.get("cell") else ""
        size = flow.get("batch_size")
        pictures.append(Picture(
            title=f"flow #{batch.get('flow')} — {describe_datagen(evidence, flow.get('datagen'))}{where}",
            uri=uri,
            caption=t("caption.batch", lang, size=size),
            cell=cells.get(batch.get("cell")),
        ))
    return pictures


def curve_picture(evidence: Evidence, result: StudentResult, fig_lang: str, content: Content) -> Picture | None:
    fit = (result.evaluation or {}).get("fit")
    if fit is None:
        fit = (evidence.training_fit() or {}).get("fit")
    history = evidence.history(fit) if fit is not None else {}
    uri = figures.learning_curves(history, fig_lang) if history else None
    if uri is None:
        return None
    caption = t("caption.curves", result.lang, fit=fit, budget=budget_line(result))
    acc, val = history.get("accuracy") or [None], history.get("val_accuracy") or [None]
    if (augmented_fit(evidence, fit) and isinstance(acc[-1], (int, float)) and isinstance(val[-1], (int, float))
            and val[-1] > acc[-1] and content.comment("augmented_validation", result.lang)):
        caption += " " + content.comment("augmented_validation", result.lang)
    return Picture(t("title.curves", result.lang), uri, caption)


def augmented_fit(evidence: Evidence, fit_number: Any) -> bool:
    """Was this fit fed by flow() of a generator configured to augment?"""
    fit = next((f for f in evidence.of("fit_start") if f.get("fit") == fit_number), None) or {}
    source = fit.get("input") or {}
    flow = evidence.flow(source.get("flow")) if source.get("kind") == "flow" else None
    return bool(flow and any((evidence.datagen(flow.get("datagen")) or {}).get("params", {}).values()))


def test_pictures(result: StudentResult, fig_lang: str, content: Content) -> dict[str, Any] | None:
    """Confusion matrix and per-class accuracy on the grader's test set, with the slides' point."""
    evaluation = result.evaluation or {}
    per_class = evaluation.get("per_class") or []
    classes = len(per_class)
    matrix = figures.valid_confusion(evaluation.get("confusion"), classes) if classes else None
    if matrix is None:
        return None
    lang = result.lang
    names = content.class_names(lang, classes)
    means = [(g.name.get(lang), statistics.fmean(per_class[i] for i in g.members if i < classes))
             for g in content.groups if any(i < classes for i in g.members)]
    off = matrix.copy()
    for i in range(classes):
        off[i, i] = 0
    true, predicted = divmod(int(off.argmax()), classes)
    confusion_note = t("caption.most_frequent_mistake", lang, true=names[true], predicted=names[predicted],
                       count=off[true, predicted])
    groups = t("caption.group_means", lang, listed=listing([f"{name} {mean:.2f}" for name, mean in means], lang)) \
        if means else ""
    legend = [(g.legend.get(fig_lang), g.color, g.members) for g in content.groups]
    return {
        "accuracy": evaluation.get("accuracy"),
        "n": int(matrix.sum()),
        "confusion": Picture(t("title.confusion", lang),
                             figures.confusion_matrix(matrix, fig_lang, content.class_names(fig_lang, classes)),
                             confusion_note),
        "per_class": Picture(t("title.per_class", lang),
                             figures.per_class_accuracy(per_class, fig_lang, content.class_names(fig_lang, classes),
                                                        legend), groups),
        "slides": content.comment("test_set", lang),
    }


def render_notes(rendered: RenderedNotebook | None, result: StudentResult) -> list[str]:
    notes = []
    cut = sorted(set(result.execution.get("truncated_cells") or []) | set(rendered.truncated_cells if rendered else []))
    if cut:
        notes.append(t("note.cells_truncated", result.lang, count=len(cut)))
    if rendered and rendered.dropped:
        notes.append(t("note.outputs_dropped", result.lang, types=", ".join(rendered.dropped)))
    if rendered and rendered.stopped_at is not None:
        notes.append(t("note.stopped_inside_cell", result.lang))
    return notes


# ---------------------------------------------------------------- the class
def write_class_outputs(results: Iterable[StudentResult], out_dir: Path, *, lang: str, title: str,
                        budget_summary: str, refused: Iterable[tuple[str, str]] = ()) -> None:
    """index.html and grades.csv; `refused`: handed-in names that were not graded, and why."""
    results = sorted(results, key=lambda r: (not r.flagged, r.student))  # flagged students first
    out_dir.mkdir(parents=True, exist_ok=True)
    similarity = out_dir / "similarity.json"  # written by `grader similarity` (grader.similarity.compare)
    similar = json.loads(similarity.read_text(encoding="utf-8")) if similarity.is_file() else None
    (out_dir / "index.html").write_text(render_class_page(results, lang=lang, title=title,
                                                          budget_summary=budget_summary, similarity=similar,
                                                          refused=list(refused)),
                                        encoding="utf-8")
    write_grades_csv(results, out_dir / "grades.csv")


def render_class_page(results: list[StudentResult], *, lang: str, title: str, budget_summary: str,
                      similarity: dict[str, Any] | None = None, refused: Iterable[tuple[str, str]] = ()) -> str:
    fig_lang = figures.label_lang(lang)
    checks = results[0].checks if results else []
    reference = next((r.reference for r in results if r.reference), {})
    threshold, ref_accuracy = reference.get("threshold"), reference.get("accuracy")
    accuracies = [(r.student, accuracy_of(r)) for r in results if accuracy_of(r) is not None]
    max_score = results[0].max_score if results else 0
    scores = [r.score for r in results]
    final = [r.score for r in results if r.complete]  # statistics of final scores; provisional ones apart
    return _environment().get_template("index.html.j2").render(
        results=results, labels=STATUS_LABELS[lang], marks=STATUS_MARKS, title=title,
        budget_summary=budget_summary, csp=csp(SORT_SCRIPT), sort_script=Markup(SORT_SCRIPT),
        attention=attention_list(results, lang), lang=lang, checks=checks, rates=pass_rates(results),
        threshold=threshold, reference_accuracy=ref_accuracy, max_score=max_score,
        accuracy_of=accuracy_of, below=lambda r: below_threshold(r, threshold),
        no_accuracy=[r.student for r in results if accuracy_of(r) is None],
        stats={"mean": statistics.fmean(final) if final else None,
               "median": statistics.median(final) if final else None,
               "provisional": len(scores) - len(final), "mean_all": statistics.fmean(scores) if scores else None,
               "statuses": {s: sum(1 for r in results if r.status == s) for s in SEVERITY if any(r.status == s for r in results)},
               "below": sum(1 for r in results if below_threshold(r, threshold))},
        score_figure=figures.score_histogram(scores, max_score, fig_lang),
        accuracy_figure=figures.accuracy_distribution(accuracies, threshold, ref_accuracy, fig_lang),
        graded_at=max((r.graded_at for r in results), default=""),
        versions=results[0].versions if results else {},
        similarity=similarity,
        handed_in=any(r.submission for r in results),
        refused=list(refused),
    )


def accuracy_of(result: StudentResult) -> float | None:
    value = (result.evaluation or {}).get("accuracy")
    return float(value) if isinstance(value, (int, float)) else None


def below_threshold(result: StudentResult, threshold: float | None) -> bool:
    accuracy = accuracy_of(result)
    return threshold is not None and accuracy is not None and accuracy < threshold


def needs_attention(result: StudentResult) -> bool:
    return result.status in ATTENTION or result.pending_manual > 0 or result.late


def attention_list(results: list[StudentResult], lang: str) -> list[dict[str, Any]]:
    """Who needs help and why, most urgent first: broken runs, then failed checks, then TA work."""
    entries = []
    for r in results:
        if not needs_attention(r):
            continue
        failed = [c.title or c.id for c in r.checks if c.status in AUTO_FAILED]
        manual = [c.title or c.id for c in r.checks if c.status == MANUAL]
        reasons = []
        if r.status == FLAGGED:
            reasons += flagged_reasons(r, lang)
        elif r.status in ATTENTION:
            reasons.append(r.message or t(f"status.{r.status}", lang))
        if failed and r.status not in (INVALID, GRADER_ERROR):
            reasons.append(t("attention.not_met", lang, count=len(failed), listed=listing(failed, lang)))
        if r.late:
            reasons.append(late_text(r, lang) + t("attention.handed_in", lang,
                                                  when=local_time((r.submission or {}).get("submitted_at"), lang)))
        entries.append({"r": r, "reasons": reasons, "manual": manual, "urgent": r.status in ATTENTION,
                        "order": (SEVERITY.get(r.status, 5), -len(failed), r.student)})
    return sorted(entries, key=lambda e: e["order"])


def flagged_reasons(result: StudentResult, lang: str) -> list[str]:
    """For the TA (class page): what was found, and what is held until someone decides."""
    integrity = result.integrity or {}
    findings = integrity.get("findings") or []
    lines = [t("attention.flagged", lang, count=len(findings), held=integrity.get("held_points", 0))]
    lines += [f"· {f.get('message', f.get('id', ''))}"[:300] for f in findings[:4]]
    if len(findings) > 4:
        lines.append(t("attention.more_findings", lang, count=len(findings) - 4))
    return lines


def pass_rates(results: list[StudentResult]) -> list[dict[str, Any]]:
    rows = []
    for index, check in enumerate(results[0].checks if results else []):
        counts = {s: 0 for s in STATUS_MARKS}
        for r in results:
            status = r.checks[index].status if index < len(r.checks) else "not_run"
            counts[status] = counts.get(status, 0) + 1
        rows.append({"number": index + 1, "check": check, "counts": counts,
                     "rate": counts["pass"] / len(results) if results else 0.0})
    return rows


def _csv_safe(value: Any) -> Any:
    """Text cells that Excel would read as a formula get a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_grades_csv(results: list[StudentResult], path: Path) -> None:
    """UTF-8 with BOM so Excel on Japanese Windows opens it correctly; one row per student."""
    check_ids = [c.id for c in results[0].checks] if results else []
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(["student", "status", "score", "max_score", *check_ids, "message", "test_accuracy",
                         "submitted_at", "late", "late_by_minutes", "complete"])
        for r in results:
            by_id = {c.id: c for c in r.checks}
            cells = [("" if i not in by_id else MANUAL if by_id[i].status == MANUAL else by_id[i].points)
                     for i in check_ids]
            accuracy = accuracy_of(r)
            writer.writerow([_csv_safe(r.student), r.status, r.score, r.max_score, *cells, _csv_safe(r.message),
                             "" if accuracy is None else f"{accuracy:.4f}", *submission_cells(r), int(r.complete)])


def submission_cells(result: StudentResult) -> list[Any]:
    """submitted_at, late (1/0), minutes late — empty where `grader pull` recorded nothing."""
    handed_in = result.submission or {}
    late, late_by = handed_in.get("late"), handed_in.get("late_by_s")
    return [handed_in.get("submitted_at") or "", "" if late is None else int(bool(late)),
            "" if not isinstance(late_by, int) else -(-late_by // 60)]
