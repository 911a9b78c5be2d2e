"""Which notebooks a `grade` run finds, and which of them it executes (the plan).

A student is executed again only when the *input fingerprint* changed (grader.gradebook.store:
notebook, spec, reference, harness, versions, data, budget); `--force` and `--student` regrade on
purpose, and grader_error results are always retried. Everyone else's stored result is reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from grader.assignment.spec import AssignmentSpec
from grader.assignment.student_ids import Refusal, escaped, group_sources
from grader.engine.pipeline import Submission
from grader.errors import SubmissionsNotFoundError
from grader.gradebook.store import ResultRow
from grader.i18n import both, t
from grader.isolation.machine import gpu_available

log = logging.getLogger("grader.grade")


@dataclass(frozen=True)
class Planned:
    """What happens to one student in this batch, and why."""

    submission: Submission
    fingerprint: str
    run: bool
    reason: str  # new | changed | forced | selected | retry | language | unchanged | not selected
    previous: ResultRow | None = None


@dataclass
class SubmissionScan:
    """What a submissions folder holds: the notebooks to grade, and the names refused (with why)."""

    submissions: list[Submission]
    refused: list[Refusal] = field(default_factory=list)


def scan_submissions(folder: Path) -> SubmissionScan:
    """`DIR/<id>.ipynb` → id is the file stem; `DIR/<id>/<name>.ipynb` → id is the folder name.

    Ids follow grader.assignment.student_ids: kept as written (NFC); a name the rules refuse, or two names
    that would be one id, are not graded and come back as refusals, never as a crash.
    """
    if folder.is_file():  # most often the LMS's bulk download itself
        raise SubmissionsNotFoundError(both("cli_error.submissions_is_a_file", path=folder))
    if not folder.is_dir():
        raise SubmissionsNotFoundError(both("cli_error.submissions_not_found", path=folder))
    named: dict[str, list[str]] = {}
    notebook_of: dict[str, Path] = {}
    links: list[Refusal] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_symlink():  # it could point anywhere the grader may read
            if path.suffix == ".ipynb" or path.is_dir():
                links.append(Refusal(escaped(path.name), t("refusal.link", "ja") + " / " + t("refusal.link", "en")))
            continue
        if path.is_file() and path.suffix == ".ipynb":
            named.setdefault(path.stem, []).append(path.name)
            notebook_of[path.stem] = path
        elif path.is_dir():
            notebooks = sorted(p for p in path.glob("*.ipynb") if not p.name.startswith(".") and p.is_file())
            if notebooks:  # several: the most recently saved is the submission
                named.setdefault(path.name, []).append(path.name + "/")
                notebook_of[path.name] = max(notebooks, key=lambda p: (p.stat().st_mtime, p.name))
    usable, refused = group_sources(named)
    refused = sorted(refused + links, key=lambda r: r.name)
    for refusal in refused:
        log.warning("not graded: %s — %s", refusal.name, refusal.reason)
    return SubmissionScan([Submission(student, notebook_of[raw]) for student, raw in sorted(usable.items())], refused)


def find_submissions(folder: Path) -> list[Submission]:
    """The submissions a folder holds that can be graded (refused names: see scan_submissions)."""
    return scan_submissions(folder).submissions


def default_budget(spec: AssignmentSpec) -> str:
    """The spec's default, or `full` when TensorFlow sees a GPU (and the spec defines `full`)."""
    if "full" in spec.budgets and spec.default_budget != "full" and gpu_available():
        log.info("TensorFlow sees a GPU: default budget full")
        return "full"
    return spec.default_budget


def plan_batch(found: list[Submission], fingerprints: dict[str, str], previous: dict[str, ResultRow], *,
               force: bool = False, only: Iterable[str] | None = None) -> list[Planned]:
    """Who runs and who is reused. `only`: run just these (on purpose); the others keep their last
    result whatever changed, and those never graded are left out."""
    selected = set(only) if only else None
    plan = []
    for submission in found:
        student, key = submission.student, fingerprints[submission.student]
        old = previous.get(student)
        if selected is not None and student not in selected:
            if old is not None:
                plan.append(Planned(submission, key, False, "not selected", old))
            continue
        if selected is not None:
            reason = "selected"
        elif force:
            reason = "forced"
        elif old is None:
            reason = "new"
        elif not old.reusable:
            reason = "retry"
        elif old.fingerprint != key:
            reason = "changed"
        else:
            plan.append(Planned(submission, key, False, "unchanged", old))
            continue
        plan.append(Planned(submission, key, True, reason, old))
    return plan
