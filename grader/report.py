"""Write what a student, a TA and an instructor read: report.html, index.html, grades.csv.

Reports are single self-contained files (figures as data: URIs, inline CSS, no external
anything, a Content-Security-Policy that forbids it), Japanese first. Student-controlled text is
escaped by Jinja or sanitized by `render_notebook`; figures come from evidence and the grader's
own numbers only (`grader.figures`).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import nbformat
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from grader import figures
from grader.evidence import Evidence
from grader.render_notebook import RenderedNotebook, render_notebook
from grader.results import StudentResult

STATUS_LABELS = {
    "ja": {"pass": "合格", "fail": "不合格", "error": "エラー", "not_run": "未実行", "manual": "TA採点待ち",
           "graded": "採点済み", "timeout": "時間切れ", "kernel_died": "カーネル停止", "invalid": "無効",
           "grader_error": "採点システムエラー", "flagged": "確認中"},
    "en": {"pass": "pass", "fail": "fail", "error": "error", "not_run": "not run", "manual": "manual (TA)",
           "graded": "graded", "timeout": "timeout", "kernel_died": "kernel died", "invalid": "invalid",
           "grader_error": "grader error", "flagged": "under review"},
}
STATUS_MARKS = {"pass": "✓", "fail": "✗", "error": "!", "not_run": "–", "manual": "?"}
ATTENTION = {"error", "timeout", "kernel_died", "invalid", "grader_error", "flagged"}
# Flagged first: a TA must decide before the held points count (grader.integrity).
SEVERITY = {"flagged": -1, "grader_error": 0, "invalid": 1, "kernel_died": 2, "timeout": 3, "error": 4, "graded": 5}
AUTO_FAILED = {"fail", "error", "not_run"}
MAX_BATCH_FIGURES = 4

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
    env = Environment(loader=PackageLoader("grader", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["compact"] = lambda v: "—" if v is None else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.0%}"
    env.filters["acc"] = lambda v: "—" if v is None else f"{v:.3f}"
    env.filters["when"] = _when
    env.globals["late_text"] = late_text
    return env


def _when(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso or "—"
    return moment.strftime("%Y-%m-%d %H:%M ") + (moment.tzname() or "")


def _t(ja: bool, ja_text: str, en_text: str) -> str:
    return ja_text if ja else en_text


def late_text(result: StudentResult, ja: bool) -> str:
    """"期限後（2 時間 5 分）" for a late submission, "" otherwise (lateness comes from `grader pull`)."""
    if not result.late:
        return ""
    seconds = (result.submission or {}).get("late_by_s")
    if not isinstance(seconds, int):  # Canvas marked it late; no deadline was given to pull
        return _t(ja, "期限後（LMS の記録）", "late (as the LMS recorded)")
    days, rest = divmod(max(seconds, 60), 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    if ja:
        parts = [f"{days} 日" if days else "", f"{hours} 時間" if hours else "", f"{minutes} 分" if minutes and not days else ""]
        return "期限後（" + " ".join(p for p in parts if p) + "）"
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes and not days else ""]
    return "late by " + " ".join(p for p in parts if p)


# ---------------------------------------------------------------- per student
def write_student_report(result: StudentResult, out_dir: Path) -> Path:
    """result.json and report.html for one student; returns the report path.

    Figures and the rendered notebook are read from `out_dir` (evidence/, executed.ipynb).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    path = out_dir / "report.html"
    path.write_text(render_student_report(result, out_dir), encoding="utf-8")
    return path


def render_student_report(result: StudentResult, folder: Path) -> str:
    ja = result.lang != "en"
    evidence = Evidence.load(folder / "evidence") if (folder / "evidence").is_dir() else None
    notebook = read_executed(folder / "executed.ipynb")
    cells = cell_links(notebook)
    stopped = result.status in ("timeout", "kernel_died")
    rendered = render_notebook(notebook, result.lang, stopped=stopped) if notebook is not None else None
    fig_lang = figures.label_lang(result.lang)
    return _environment().get_template("report.html.j2").render(
        r=result, ja=ja, labels=STATUS_LABELS[result.lang], marks=STATUS_MARKS, csp=csp(),
        verdict=verdict_line(result), budget_line=budget_line(result), fit_budget=training_fit_budget(result),
        batches=batch_pictures(evidence, fig_lang, ja, cells) if evidence else [],
        curves=curve_picture(evidence, result, fig_lang, ja) if evidence else None,
        test=test_pictures(result, fig_lang, ja),
        notebook=rendered, notes=[*result.notes, *render_notes(rendered, result, ja)],
        kernel_log=(folder / "kernel.log").is_file(),
        has_notebook=(folder / "executed.ipynb").is_file(),
        auto_checks=[c for c in result.checks if c.status != "manual"],
    )


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
    ja = result.lang != "en"
    failed = [c.title or c.id for c in result.checks if c.status in AUTO_FAILED]
    manual = [c.title or c.id for c in result.checks if c.status == "manual"]
    if result.status == "invalid":
        return _t(ja, f"ノートブックを読み込めないため採点できませんでした。{result.message}",
                  f"The notebook could not be read, so it was not graded. {result.message}")
    if result.status == "grader_error":
        return _t(ja, "採点システム側の問題で採点できませんでした。TA に連絡してください。",
                  "The grader failed on this notebook; please contact a TA.")
    if result.status == "flagged":  # the student learns only that it is under review, never why
        return result.message
    parts = [result.message] if result.status in ATTENTION and result.message else []
    if result.status in ATTENTION:
        parts.append(_t(ja, "まず印の付いたセルを直してください。", "Fix the marked cell first."))
    if failed:
        parts.append(_t(ja, f"自動チェック {len(failed)} 件が未達成：{'、'.join(failed[:4])}{' ほか' if len(failed) > 4 else ''}。",
                        f"{len(failed)} automatic checks not met: {', '.join(failed[:4])}{' …' if len(failed) > 4 else ''}."))
    else:
        parts.append(_t(ja, "自動チェックはすべて合格です。", "All automatic checks passed."))
    if manual:
        parts.append(_t(ja, f"TA の採点待ち：{'、'.join(manual)}。", f"Waiting for a TA: {', '.join(manual)}."))
    return " ".join(parts)


def training_fit_budget(result: StudentResult) -> dict[str, Any] | None:
    fits = result.budget.get("fits") or []
    wanted = (result.evaluation or {}).get("fit")
    return next((f for f in fits if f.get("fit") == wanted), fits[-1] if fits else None)


def budget_line(result: StudentResult) -> str:
    """e.g. "standard: 2 / 50 エポック, 150 / 750 ステップ" (effective / as written in the notebook)."""
    ja = result.lang != "en"
    name = result.execution.get("budget") or result.budget.get("name", "")
    fit = training_fit_budget(result)
    if fit is None:
        return f"{name}: {result.budget.get('summary', '')}"
    steps = fit.get("requested_steps") or fit.get("natural_steps")

    def pair(effective: Any, requested: Any) -> str:
        return f"{effective if effective is not None else '?'} / {requested if requested is not None else '?'}"

    return (f"{name}: {pair(fit.get('effective_epochs'), fit.get('requested_epochs'))} {_t(ja, 'エポック', 'epochs')}, "
            f"{pair(fit.get('effective_steps'), steps)} {_t(ja, 'ステップ', 'steps')}")


def describe_datagen(evidence: Evidence, number: Any) -> str:
    params = (evidence.datagen(number) or {}).get("params") or {}
    shown = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in list(params.items())[:6])
    return f"ImageDataGenerator({shown})"


def batch_pictures(evidence: Evidence, fig_lang: str, ja: bool, cells: dict[int, int]) -> list[Picture]:
    """Each generator's first batch (as a 4×4 grid) beside the images it came from."""
    pictures = []
    for batch in evidence.of("batch"):
        if len(pictures) >= MAX_BATCH_FIGURES:
            break
        arrays = evidence.arrays(batch.get("file"))
        uri = figures.batch_grid(arrays.get("x"), arrays.get("x_orig"), arrays.get("y_orig"), fig_lang) if arrays else None
        if uri is None:
            continue
        flow = evidence.flow(batch.get("flow")) or {}
        where = f" · {_t(ja, 'セル', 'cell')} [{batch.get('cell')}]" if batch.get("cell") else ""
        size = flow.get("batch_size")
        pictures.append(Picture(
            title=f"flow #{batch.get('flow')} — {describe_datagen(evidence, flow.get('datagen'))}{where}",
            uri=uri,
            caption=_t(ja, f"左：flow() に渡した元の画像、右：最初のバッチ（batch_size={size}、先頭 16 枚）。文字は元のラベル。",
                       f"Left: the images given to flow(); right: the first batch (batch_size={size}, first 16). Labels are the originals'."),
            cell=cells.get(batch.get("cell")),
        ))
    return pictures


def curve_picture(evidence: Evidence, result: StudentResult, fig_lang: str, ja: bool) -> Picture | None:
    fit = (result.evaluation or {}).get("fit")
    if fit is None:
        fit = (evidence.training_fit() or {}).get("fit")
    history = evidence.history(fit) if fit is not None else {}
    uri = figures.learning_curves(history, fig_lang) if history else None
    if uri is None:
        return None
    caption = _t(ja, f"model.fit #{fit} の記録（{budget_line(result)}）。", f"Recorded from model.fit #{fit} ({budget_line(result)}).")
    acc, val = history.get("accuracy") or [None], history.get("val_accuracy") or [None]
    if (augmented_fit(evidence, fit) and isinstance(acc[-1], (int, float)) and isinstance(val[-1], (int, float))
            and val[-1] > acc[-1]):
        caption += _t(ja, " 検証の正解率が訓練より高いのは、訓練データだけが拡張（回転・反転）されて難しくなっているためです。",
                      " Validation accuracy is above training accuracy because only the training images are augmented.")
    return Picture(_t(ja, "学習曲線", "Learning curves"), uri, caption)


def augmented_fit(evidence: Evidence, fit_number: Any) -> bool:
    """Was this fit fed by flow() of a generator configured to augment?"""
    fit = next((f for f in evidence.of("fit_start") if f.get("fit") == fit_number), None) or {}
    source = fit.get("input") or {}
    flow = evidence.flow(source.get("flow")) if source.get("kind") == "flow" else None
    return bool(flow and any((evidence.datagen(flow.get("datagen")) or {}).get("params", {}).values()))


def test_pictures(result: StudentResult, fig_lang: str, ja: bool) -> dict[str, Any] | None:
    """Confusion matrix and per-class accuracy on the grader's test set, with the slides' point."""
    evaluation = result.evaluation or {}
    matrix = figures.valid_confusion(evaluation.get("confusion"))
    per_class = evaluation.get("per_class") or []
    if matrix is None or len(per_class) != 10:
        return None
    names = figures.CLASS_NAMES["ja" if ja else "en"]
    means = {group: statistics.fmean(per_class[i] for i in members)
             for group, members in (("shoes", figures.SHOES), ("clothes", figures.CLOTHES), ("bag", figures.BAG))}
    off = matrix.copy()
    for i in range(10):
        off[i, i] = 0
    true, predicted = divmod(int(off.argmax()), 10)
    confusion_note = _t(ja, f"いちばん多い間違い：{names[true]} を {names[predicted]} と予測（{off[true, predicted]} 枚）。",
                        f"Most frequent mistake: {names[true]} predicted as {names[predicted]} ({off[true, predicted]} images).")
    slides = _t(ja, "スライドのとおり、Fashion-MNIST の靴は常に左向き、衣服はほぼ左右対称です。上下反転や 90° 回転で拡張すると、"
                    "テストには現れない向きの画像で学習することになり、テスト正解率が下がることがあります。",
                "As the slides point out, shoes in Fashion-MNIST always face left and clothes are symmetric: vertical flips "
                "and 90° rotations teach orientations the test set never shows, which can lower test accuracy.")
    groups = _t(ja, f"このモデルのクラス別正解率の平均：衣服 {means['clothes']:.2f}、靴 {means['shoes']:.2f}、バッグ {means['bag']:.2f}。",
                f"Mean per-class accuracy of this model: clothes {means['clothes']:.2f}, shoes {means['shoes']:.2f}, bag {means['bag']:.2f}.")
    return {
        "accuracy": evaluation.get("accuracy"),
        "n": int(matrix.sum()),
        "confusion": Picture(_t(ja, "混同行列", "Confusion matrix"), figures.confusion_matrix(matrix, fig_lang), confusion_note),
        "per_class": Picture(_t(ja, "クラス別正解率", "Accuracy per class"),
                             figures.per_class_accuracy(per_class, fig_lang), groups),
        "slides": slides,
    }


def render_notes(rendered: RenderedNotebook | None, result: StudentResult, ja: bool) -> list[str]:
    notes = []
    cut = sorted(set(result.execution.get("truncated_cells") or []) | set(rendered.truncated_cells if rendered else []))
    if cut:
        notes.append(_t(ja, f"出力が大きすぎるため、{len(cut)} 個のセルの出力を省略しました。",
                        f"Output of {len(cut)} cells was truncated (too large)."))
    if rendered and rendered.dropped:
        notes.append(_t(ja, f"安全のため表示していない出力：{', '.join(rendered.dropped)}",
                        f"Outputs not shown for safety: {', '.join(rendered.dropped)}"))
    if rendered and rendered.stopped_at is not None:
        notes.append(_t(ja, "実行はセルの途中で止まりました。それ以降のセルは採点時に実行されていません（出力は表示しません）。",
                        "The run stopped inside a cell; later cells did not run during grading (their outputs are not shown)."))
    return notes


# ---------------------------------------------------------------- the class
def write_class_outputs(results: Iterable[StudentResult], out_dir: Path, *, lang: str, title: str,
                        budget_summary: str, refused: Iterable[tuple[str, str]] = ()) -> None:
    """index.html and grades.csv; `refused`: handed-in names that were not graded, and why."""
    results = sorted(results, key=lambda r: (not r.flagged, r.student))  # flagged students first
    out_dir.mkdir(parents=True, exist_ok=True)
    similarity = out_dir / "similarity.json"  # written by `grader similarity` (grader.similarity)
    similar = json.loads(similarity.read_text(encoding="utf-8")) if similarity.is_file() else None
    (out_dir / "index.html").write_text(render_class_page(results, lang=lang, title=title,
                                                          budget_summary=budget_summary, similarity=similar,
                                                          refused=list(refused)),
                                        encoding="utf-8")
    write_grades_csv(results, out_dir / "grades.csv")


def render_class_page(results: list[StudentResult], *, lang: str, title: str, budget_summary: str,
                      similarity: dict[str, Any] | None = None, refused: list[tuple[str, str]] = ()) -> str:
    ja = lang != "en"
    fig_lang = figures.label_lang(lang)
    checks = results[0].checks if results else []
    reference = next((r.reference for r in results if r.reference), {})
    threshold, ref_accuracy = reference.get("threshold"), reference.get("accuracy")
    accuracies = [(r.student, accuracy_of(r)) for r in results if accuracy_of(r) is not None]
    max_score = results[0].max_score if results else 0
    scores = [r.score for r in results]
    return _environment().get_template("index.html.j2").render(
        results=results, ja=ja, labels=STATUS_LABELS[lang], marks=STATUS_MARKS, title=title,
        budget_summary=budget_summary, csp=csp(SORT_SCRIPT), sort_script=Markup(SORT_SCRIPT),
        attention=attention_list(results, ja), checks=checks, rates=pass_rates(results),
        threshold=threshold, reference_accuracy=ref_accuracy, max_score=max_score,
        accuracy_of=accuracy_of, below=lambda r: below_threshold(r, threshold),
        no_accuracy=[r.student for r in results if accuracy_of(r) is None],
        stats={"mean": statistics.fmean(scores) if scores else None,
               "median": statistics.median(scores) if scores else None,
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


def attention_list(results: list[StudentResult], ja: bool) -> list[dict[str, Any]]:
    """Who needs help and why, most urgent first: broken runs, then failed checks, then TA work."""
    entries = []
    for r in results:
        if not needs_attention(r):
            continue
        failed = [c.title or c.id for c in r.checks if c.status in AUTO_FAILED]
        manual = [c.title or c.id for c in r.checks if c.status == "manual"]
        reasons = []
        if r.status == "flagged":
            reasons += flagged_reasons(r, ja)
        elif r.status in ATTENTION:
            reasons.append(r.message or STATUS_LABELS["ja" if ja else "en"][r.status])
        if failed and r.status not in ("invalid", "grader_error"):
            reasons.append(_t(ja, f"未達成 {len(failed)} 件：", f"{len(failed)} not met: ") + _t(ja, "、", ", ").join(failed))
        if r.late:
            reasons.append(late_text(r, ja) + _t(ja, f" — 提出 {_when(r.submission.get('submitted_at'))}",
                                                  f" — handed in {_when(r.submission.get('submitted_at'))}"))
        entries.append({"r": r, "reasons": reasons, "manual": manual, "urgent": r.status in ATTENTION,
                        "order": (SEVERITY.get(r.status, 5), -len(failed), r.student)})
    return sorted(entries, key=lambda e: e["order"])


def flagged_reasons(result: StudentResult, ja: bool) -> list[str]:
    """For the TA (class page): what was found, and what is held until someone decides."""
    integrity = result.integrity or {}
    findings = integrity.get("findings") or []
    lines = [_t(ja, f"不正の疑い（所見 {len(findings)} 件、自動採点 {integrity.get('held_points', 0)} 点を保留）："
                    "レビュー画面で承認または却下してください",
                f"possible tampering ({len(findings)} findings, {integrity.get('held_points', 0)} automatic points "
                "held): accept or reject it in the review app")]
    lines += [f"· {f.get('message', f.get('id', ''))}"[:300] for f in findings[:4]]
    if len(findings) > 4:
        lines.append(_t(ja, f"· ほか {len(findings) - 4} 件", f"· {len(findings) - 4} more"))
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
                         "submitted_at", "late", "late_by_minutes"])
        for r in results:
            by_id = {c.id: c for c in r.checks}
            cells = [("" if i not in by_id else "manual" if by_id[i].status == "manual" else by_id[i].points)
                     for i in check_ids]
            accuracy = accuracy_of(r)
            writer.writerow([_csv_safe(r.student), r.status, r.score, r.max_score, *cells, _csv_safe(r.message),
                             "" if accuracy is None else f"{accuracy:.4f}", *submission_cells(r)])


def submission_cells(result: StudentResult) -> list[Any]:
    """submitted_at, late (1/0), minutes late — empty where `grader pull` recorded nothing."""
    handed_in = result.submission or {}
    late, late_by = handed_in.get("late"), handed_in.get("late_by_s")
    return [handed_in.get("submitted_at") or "", "" if late is None else int(bool(late)),
            "" if not isinstance(late_by, int) else -(-late_by // 60)]
