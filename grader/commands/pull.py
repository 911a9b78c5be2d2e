"""`grader pull`: an LMS download into SUBMISSIONS/<id>.ipynb and a manifest (grader.lms.pull does the work)."""

from __future__ import annotations

from pathlib import Path

from grader.lms.pull import PullSummary, ZipLimits, pull


def main(*, source: Path, submissions: Path, roster: Path | None = None, deadline: str | None = None,
         limits: ZipLimits | None = None) -> PullSummary:
    return pull(source=source, submissions=submissions, roster=roster, deadline=deadline, limits=limits)
