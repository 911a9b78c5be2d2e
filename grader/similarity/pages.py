"""`grader similarity`: pairwise code similarity of a class (grader.similarity.compare), written to
OUT/similarity.json, OUT/similarity/<a>__<b>.html (side by side, flagged pairs) and a section of
OUT/index.html (the class page is re-rendered; nothing is executed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from markupsafe import Markup

from grader.similarity import compare as sim
from grader.gradebook.store import GRADEBOOK_FILE
from grader.results import StudentResult
from grader.assignment.spec import load_spec


def main(*, out: Path, submissions: Path, project_root: Path, assignment: str = "kadai8",
         threshold: float | None = None) -> sim.SimilarityReport:
    from grader.batch.grade import find_submissions
    from grader.report.pages import _environment, csp, write_class_outputs

    spec = load_spec(project_root, assignment)
    notebooks = {s.student: s.path for s in find_submissions(submissions)}
    template = project_root / "assignments" / spec.id / "template.ipynb"
    report, codes, slices = sim.compare(notebooks, template=template if template.is_file() else None,
                                        given=[spec.reference] if spec.reference.is_file() else [],
                                        threshold=sim.THRESHOLD if threshold is None else threshold)
    folder = out / "similarity"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    lang = "ja"
    results = [StudentResult.from_dict(json.loads(p.read_text(encoding="utf-8")))
               for p in sorted(out.glob("*/result.json"))]
    if results:
        lang = results[0].lang
    template_page = _environment().get_template("similarity_pair.html.j2")
    for pair in report.flagged:
        pair.html = f"similarity/{pair.a}__{pair.b}.html"
        slice_a, slice_b = slices[(pair.a, pair.b)]
        (out / pair.html).write_text(template_page.render(
            pair=pair, ja=lang != "en", csp=csp(), method=report.method,
            code_a=Markup(sim.highlighted(codes[pair.a], slice_a)),
            code_b=Markup(sim.highlighted(codes[pair.b], slice_b))), encoding="utf-8")
    (out / "similarity.json").write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n",
                                         encoding="utf-8")
    if (out / GRADEBOOK_FILE).is_file():
        from grader.review.store import republish

        republish(out, project_root, assignment, students=[])
    elif results:
        write_class_outputs(results, out, lang=lang, title=spec.title.get(lang), budget_summary="")
    return report
