"""`grader similarity`: pairwise code similarity of a graded class (grader.similarity), then the class
page again so it lists the flagged pairs (nothing is executed)."""

from __future__ import annotations

import json
from pathlib import Path

from grader.assignment.paths import DEFAULT_ASSIGNMENT
from grader.assignment.spec import load_spec
from grader.batch.plan import find_submissions
from grader.gradebook.publish import republish
from grader.gradebook.store import GRADEBOOK_FILE
from grader.report.pages import write_class_outputs
from grader.results import StudentResult
from grader.similarity.compare import SimilarityReport
from grader.similarity.pages import write_similarity


def main(*, out: Path, submissions: Path, project_root: Path, assignment: str = DEFAULT_ASSIGNMENT,
         threshold: float | None = None) -> SimilarityReport:
    spec = load_spec(project_root, assignment)
    notebooks = {s.student: s.path for s in find_submissions(submissions)}
    results = [StudentResult.from_dict(json.loads(p.read_text(encoding="utf-8")))
               for p in sorted(out.glob("*/result.json"))]
    lang = results[0].lang if results else "ja"
    report = write_similarity(out=out, notebooks=notebooks, spec=spec, threshold=threshold, lang=lang)
    if (out / GRADEBOOK_FILE).is_file():
        republish(out, project_root, assignment, students=[])
    elif results:
        write_class_outputs(results, out, lang=lang, title=spec.title.get(lang), budget_summary="")
    return report
