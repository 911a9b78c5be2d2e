"""The self-check's HTML page, written by `grader check` and by selfcheck.py alike.

It is the grader's own student report (grader.report.pages: the same template, phrases, augmented-batch
pictures, learning curves and executed notebook as `grader grade` writes), with what only a self-check
says on top: its findings, that the budget was short, and how many hidden checks it leaves out.
The page must be written while the run's folder (evidence/, executed.ipynb) still exists.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from grader.assignment.content import Content
from grader.report.pages import render_student_report
from grader.selfcheck.diagnose import Finding
from grader.selfcheck.engine import SELF_CHECK_BUDGET, Outcome


def page_path(notebook: Path) -> Path:
    """Where the page goes by default: beside the notebook, `<stem>.selfcheck.html`."""
    return notebook.with_name(f"{notebook.stem}.selfcheck.html")


def render_page(outcome: Outcome, *, notebook: Path, findings: list[Finding], content: Content,
                sandbox: str = "") -> str:
    result = dataclasses.replace(outcome.result, student=notebook.name)
    header: dict[str, Any] = {"findings": list(findings), "hidden": dict(outcome.hidden), "sandbox": sandbox,
                              "seconds": round(outcome.seconds, 1), "budget": SELF_CHECK_BUDGET}
    return render_student_report(result, outcome.run.out_dir, content, selfcheck=header)


def write_page(outcome: Outcome, *, notebook: Path, target: Path, findings: list[Finding], content: Content,
               sandbox: str = "") -> Path:
    target.write_text(render_page(outcome, notebook=notebook, findings=findings, content=content, sandbox=sandbox),
                      encoding="utf-8")
    return target
