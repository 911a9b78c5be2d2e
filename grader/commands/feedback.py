"""`grader feedback`: each student's own report and executed notebook, as folders or Moodle's feedback
zip (grader.lms.feedback does the work)."""

from __future__ import annotations

from pathlib import Path

from grader.lms.feedback import Released, release


def main(*, out: Path, project_root: Path, assignment: str, format: str = "folder", to: Path | None = None,
         lang: str | None = None) -> Released:
    return release(out=out, project_root=project_root, assignment=assignment, format=format, to=to, lang=lang)
