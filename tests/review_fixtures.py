"""A graded class with a gradebook, for the review app tests (no kernels). Not a test module."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from report_fixtures import build_class
from grader import __version__
from grader.gradebook.store import Gradebook

ROOT = Path(__file__).resolve().parent.parent


def build_reviewable_class(folder: Path, built: tuple[Path, dict] | None = None) -> tuple[Path, dict]:
    """build_class's six students, recorded in OUT/gradebook.sqlite as `grader grade` does. With
    `built` (the session's report_class), its reports are copied instead of drawn again."""
    if built is None:
        out, results = build_class(folder)
    else:
        out, results = folder / "out", built[1]
        shutil.copytree(built[0], out)
    with Gradebook.open(out) as book:
        run_id = book.start_run(assignment="kadai8", budget="quick", jobs=1, threads=1, grader_version=__version__)
        for name, result in results.items():
            notebook = folder / "submissions" / f"{name}.ipynb"
            digest = hashlib.sha256(name.encode()).hexdigest()
            book.record_submission("kadai8", name, notebook, digest)
            book.record_result(run_id, result, fingerprint=digest[:32], seconds=1.0)
        book.finish_run(run_id, students=len(results), executed=len(results), reused=0, seconds=1.0)
    return out, results
