"""When a report must be drawn again: a key over the final result and the code that draws it.

A reused (unchanged) student's report.html is rewritten only when its key changed, so a regrade
that executes nothing also leaves the reports alone unless their inputs moved.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from grader.results import StudentResult, result_json

# What a report.html is drawn with besides the result (relative to the grader package).
REPORT_CODE = ("report",)


@cache
def report_code_digest() -> str:
    """What reports are drawn with; a change re-renders every report (nothing is re-executed)."""
    base = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in REPORT_CODE:
        path = base / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(file.relative_to(base).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def report_key(result: StudentResult, code_digest: str) -> str:
    return hashlib.sha256((code_digest + result_json(result)).encode("utf-8")).hexdigest()[:32]
