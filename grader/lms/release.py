"""What `grader export` and `grader feedback` share: the graded class as its final results, and who
each student is in the LMS (from `grader pull`'s manifest, which the output folder keeps).

The scores are the final ones (grader.gradebook.final via grader.gradebook.publish.final_class), never
computed again here; whether one is final or provisional is `StudentResult.complete`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from grader.assignment.spec import AssignmentSpec, load_spec
from grader.errors import ConfigError, LmsMappingError, NotGradedError
from grader.gradebook.final import Reviews
from grader.gradebook.manifest import MANIFEST
from grader.gradebook.publish import final_class
from grader.gradebook.store import GRADEBOOK_FILE
from grader.i18n import both
from grader.lms.pull import MOODLE
from grader.results import StudentResult


@dataclass(frozen=True)
class LmsStudent:
    """One student as the LMS knows them; empty strings where `grader pull` learnt nothing."""

    layout: str = ""      # moodle | canvas | plain | "" (not pulled)
    lms_id: str = ""      # Moodle participant id / Canvas user id
    name: str = ""        # the name in the LMS's file or folder name
    folder: str = ""      # Moodle: the submission folder, e.g. `Full Name_12345_assignsubmission_file_`


@dataclass
class GradedClass:
    spec: AssignmentSpec
    results: dict[str, StudentResult]   # final results by student id
    reviews: Reviews
    lms: dict[str, LmsStudent]
    lang: str


def load_class(out: Path, project_root: Path, assignment: str, lang: str | None = None) -> GradedClass:
    """The graded class in `out`; `lang` (when given) must be the language it was graded in."""
    if not (out / GRADEBOOK_FILE).is_file():
        raise NotGradedError(both("release_not_graded", out=out))
    spec = load_spec(project_root, assignment)
    reviews = Reviews.load(out, spec.id)
    results = final_class(out, spec, reviews)
    if not results:
        raise NotGradedError(both("release_not_graded", out=out))
    graded_in = next(iter(results.values())).lang
    if lang is not None and lang != graded_in:  # a report in one language with messages in another would be worse
        raise ConfigError(both("release_wrong_language", lang=lang, graded=graded_in, out=out))
    return GradedClass(spec, results, reviews, read_lms_students(out), graded_in)


def read_lms_students(out: Path) -> dict[str, LmsStudent]:
    """From the manifest `grade` copied into `out`: {student: LmsStudent}; {} without one."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        entries = [e for e in data.get("students", []) if isinstance(e, dict) and "student" in e]
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(e["student"]): lms_student(e) for e in entries}


def lms_student(entry: dict[str, Any]) -> LmsStudent:
    """Moodle's folder name is the first part of the pulled file's path that has Moodle's form (a
    notebook inside a zip in that folder is recorded as `folder/x.zip!inner.ipynb`)."""
    layout, lms_id = str(entry.get("layout") or ""), str(entry.get("lms_id") or "")
    if layout != "moodle":
        return LmsStudent(layout, lms_id)
    source = PurePosixPath(str(entry.get("source") or "").split("!")[0])
    for part in source.parts[:-1]:
        match = MOODLE.match(part)
        if match:
            return LmsStudent(layout, match["lms_id"], match["name"], part)
    return LmsStudent(layout, lms_id)


def moodle_students(graded: GradedClass) -> dict[str, LmsStudent]:
    """Everyone's Moodle identity, or an error naming those without one (not from a Moodle pull)."""
    missing = sorted(s for s in graded.results if not graded.lms.get(s, LmsStudent()).folder)
    if missing:
        raise LmsMappingError(both("release_not_from_moodle", count=len(missing), students=", ".join(missing[:5])))
    return {s: graded.lms[s] for s in graded.results}


def last_modified(result: StudentResult, reviews: Reviews) -> str:
    """When this final grade last changed (graded, a TA's score or override), ISO 8601 in UTC."""
    times = [result.graded_at, *(m.updated_at for m in reviews.manual.get(result.student, {}).values()),
             *(o.updated_at for o in reviews.overrides.get(result.student, {}).values())]
    moments = []
    for text in times:
        try:
            moment = datetime.fromisoformat(text)
        except (TypeError, ValueError):
            continue
        moments.append(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    return max(moments).astimezone(timezone.utc).isoformat(timespec="seconds") if moments else ""


def ta_comments(result: StudentResult, reviews: Reviews) -> str:
    """The TA's comments on manual checks (what `grader manual --comment` / the review app say is for
    the student); override reasons stay with the TA (they may name other students)."""
    scores = reviews.manual.get(result.student, {})
    return " / ".join(scores[c.id].comment for c in result.checks if c.id in scores and scores[c.id].comment)
