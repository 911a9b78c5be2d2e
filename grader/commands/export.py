"""`grader export`: the final grades as an upload-ready file (grader.lms.export does the work)."""

from __future__ import annotations

from pathlib import Path

from grader.lms.export import Exported, export


def main(*, out: Path, project_root: Path, assignment: str, format: str, to: Path | None = None,
         canvas_assignment_id: str | None = None) -> Exported:
    return export(out=out, project_root=project_root, assignment=assignment, format=format, to=to,
                  canvas_assignment_id=canvas_assignment_id)
