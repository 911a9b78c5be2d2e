"""When each notebook was handed in and whether it was late: written by `grader pull` as
`SUBMISSIONS/submissions.json`, read back by `grader grade`.

`grade` copies the manifest into the output folder, so the reports, the class page and grades.csv
can show submission time and lateness however often they are regenerated (by `grader review`,
`grader manual`, `grader similarity`) — the output folder holds everything a reviewed grade needs.
Without a manifest (submissions copied in by hand) nothing is shown and nothing is assumed.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from grader.results import StudentResult

MANIFEST = "submissions.json"
# What a result carries of the manifest's entry for its student (the rest stays in the manifest).
KEPT = ("submitted_at", "late", "late_by_s", "original_name")


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """{student: {submitted_at, late, late_by_s, original_name}}; {} when there is none or it is unreadable
    (a broken manifest must not stop grading: it only loses the lateness column)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        students = data.get("students", [])
        return {str(s["student"]): {k: s.get(k) for k in KEPT} for s in students if isinstance(s, dict) and "student" in s}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def keep_manifest(submissions: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Copy the submissions' manifest into `out` (or remove a stale copy) and return its entries."""
    source, copied = submissions / MANIFEST, out / MANIFEST
    if source.is_file():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copied)
    else:
        copied.unlink(missing_ok=True)
    return read_manifest(out)


def with_submission(result: StudentResult, entry: dict[str, Any] | None) -> StudentResult:
    """The result with its submission time and lateness (a copy; the stored automatic result is untouched)."""
    if not entry or result.submission == entry:
        return result
    result = copy.deepcopy(result)
    result.submission = dict(entry)
    return result
