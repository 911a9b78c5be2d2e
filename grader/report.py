"""Write what a student, a TA and an instructor read: report.html, index.html, grades.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

from jinja2 import Environment, PackageLoader, select_autoescape

from grader.results import StudentResult

STATUS_LABELS = {
    "ja": {"pass": "合格", "fail": "不合格", "error": "エラー", "not_run": "未実行", "manual": "TA採点待ち",
           "graded": "採点済み", "timeout": "時間切れ", "kernel_died": "カーネル停止", "invalid": "無効",
           "grader_error": "採点システムエラー"},
    "en": {"pass": "pass", "fail": "fail", "error": "error", "not_run": "not run", "manual": "manual (TA)",
           "graded": "graded", "timeout": "timeout", "kernel_died": "kernel died", "invalid": "invalid",
           "grader_error": "grader error"},
}
ATTENTION = {"error", "timeout", "kernel_died", "invalid", "grader_error"}


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("grader", "templates"), autoescape=select_autoescape(["j2", "html"]))
    env.filters["compact"] = lambda v: "—" if v is None else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
    return env


def write_student_report(result: StudentResult, out_dir: Path) -> Path:
    """result.json and report.html for one student; returns the report path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    html = _environment().get_template("report.html.j2").render(
        r=result, labels=STATUS_LABELS[result.lang], ja=result.lang != "en")
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def write_class_outputs(results: Iterable[StudentResult], out_dir: Path, *, lang: str, title: str,
                        budget_summary: str) -> None:
    results = sorted(results, key=lambda r: r.student)
    html = _environment().get_template("index.html.j2").render(
        results=results, labels=STATUS_LABELS[lang], ja=lang != "en", title=title,
        budget_summary=budget_summary, attention=[r for r in results if needs_attention(r)],
        check_ids=[c.id for c in results[0].checks] if results else [])
    (out_dir / "index.html").write_text(html, encoding="utf-8")
    write_grades_csv(results, out_dir / "grades.csv")


def needs_attention(result: StudentResult) -> bool:
    return result.status in ATTENTION or result.pending_manual > 0


def write_grades_csv(results: list[StudentResult], path: Path) -> None:
    """UTF-8 with BOM so Excel on Japanese Windows opens it correctly."""
    check_ids = [c.id for c in results[0].checks] if results else []
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "status", "score", "max_score", *check_ids, "message"])
        for r in results:
            by_id = {c.id: c for c in r.checks}
            cells = [f"{by_id[i].points}" if by_id[i].status != "manual" else "manual" for i in check_ids]
            writer.writerow([r.student, r.status, r.score, r.max_score, *cells, r.message])
