"""The final score: the one place that turns an automatic result into what everyone sees.

    the automatic result (the pipeline's, stored in the gradebook)
      → held while flagged and not accepted by a TA (grader.judge.integrity.hold_for_review: the
        automatic points do not count until a TA accepts the submission in the review app)
      → TA manual scores (the gradebook's `manual_scores`: a manual check's points replace its 0)
      → TA overrides (grader.gradebook.reviews: any check's points become the TA's value, clamped
        to 0…max; the check carries `override` = {points, automatic_points, automatic_status,
        reason, reviewer, at}, which the report shows)
      → the submission time and lateness (`grader pull`'s manifest, grader.gradebook.manifest)

`grade` (every student it publishes), `review` (the app and what it republishes), `manual` and
`similarity` (republishing) all go through `final_result`, so result.json, report.html, index.html,
grades.csv and the review app always agree. The stored automatic result is never changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.gradebook.manifest import read_manifest, with_submission
from grader.gradebook.reviews import Override, ReviewStore
from grader.gradebook.store import Gradebook, ManualScore
from grader.assignment.paths import course_timezone
from grader.i18n import t
from grader.i18n.times import when
from grader.judge.integrity import hold_for_review
from grader.results import FAIL, PASS, StudentResult


def final_result(automatic: StudentResult, *, manual: dict[str, ManualScore] | None = None,
                 overrides: dict[str, Override] | None = None,
                 submission: dict[str, Any] | None = None, decision: dict[str, Any] | None = None) -> StudentResult:
    """Automatic result → held while flagged → manual scores → overrides, with the submission's time and
    lateness. `decision`: a TA's accept/reject of a flagged submission (grader.gradebook.reviews)."""
    held = hold_for_review(automatic, decision)
    return with_submission(_apply_overrides(_apply_manual_scores(held, manual), overrides), submission)


@dataclass(frozen=True)
class Reviews:
    """What TAs and the LMS added to one class, read once: manual scores, overrides, hand-in times."""

    manual: dict[str, dict[str, ManualScore]]
    overrides: dict[str, dict[str, Override]]
    handed_in: dict[str, dict[str, Any]]
    decisions: dict[str, dict[str, Any]]  # a TA's accept/reject of flagged submissions, by student

    @classmethod
    def load(cls, out: Path, assignment: str) -> Reviews:
        """From the output folder: the gradebook's tables and the manifest `grade` copied there."""
        with Gradebook.open(out) as book, ReviewStore(out) as store:
            return cls(book.manual_scores(assignment), store.overrides(assignment), read_manifest(out),
                       store.integrity_decisions(assignment))

    def final(self, automatic: StudentResult) -> StudentResult:
        name = automatic.student
        return final_result(automatic, manual=self.manual.get(name), overrides=self.overrides.get(name),
                            submission=self.handed_in.get(name), decision=self.decisions.get(name))


def _apply_manual_scores(result: StudentResult, scores: dict[str, ManualScore] | None) -> StudentResult:
    """The TA's points replace the automatic ones for those checks (they live in the gradebook's own
    table, so every regrade applies them again)."""
    if not scores:
        return result
    result = copy.deepcopy(result)
    for check in result.checks:
        score = scores.get(check.id)
        if score is None:
            continue
        points = max(0, min(int(score.points), check.max_points))
        check.points = points
        check.status = PASS if points > 0 else FAIL
        check.ta_score = {"points": points, "comment": score.comment, "scorer": score.scorer, "at": score.updated_at}
        text = t("note.ta_score", result.lang, points=points, max_points=check.max_points)
        text += t("note.ta_comment", result.lang, comment=score.comment) if score.comment else ""
        check.message = check.public_message = text
        at = when(score.updated_at, result.lang, course_timezone())
        result.notes.append(f"{check.id}: {text}" + (f" — {score.scorer}, {at}" if score.scorer else f" — {at}"))
    result.score = sum(c.points for c in result.checks)
    return result


def _apply_overrides(result: StudentResult, overrides: dict[str, Override] | None) -> StudentResult:
    if not overrides:
        return result
    result = copy.deepcopy(result)
    for check in result.checks:
        o = overrides.get(check.id)
        if o is None:
            continue
        points = max(0, min(int(o.points), check.max_points))
        check.override = {"points": points, "automatic_points": check.points, "automatic_status": check.status,
                          "reason": o.reason, "reviewer": o.reviewer, "at": o.updated_at}
        check.points = points
        check.status = PASS if points > 0 else FAIL
        result.notes.append(t("note.override", result.lang, check=check.id, points=points, max_points=check.max_points,
                              reason=o.reason, reviewer=o.reviewer,
                              at=when(o.updated_at, result.lang, course_timezone())))
    result.score = sum(c.points for c in result.checks)
    return result
