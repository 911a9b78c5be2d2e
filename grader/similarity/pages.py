"""Similarity of a class on disk: OUT/similarity.json and OUT/similarity/<a>__<b>.html (side by side,
for flagged pairs), from grader.similarity.compare; the class page (grader.report) reads the JSON
and lists the flagged pairs. Nothing is executed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from markupsafe import Markup

from grader.assignment.spec import AssignmentSpec
from grader.report.pages import csp, render_page
from grader.similarity import compare as sim


def write_similarity(*, out: Path, notebooks: dict[str, Path], spec: AssignmentSpec, threshold: float | None,
                     lang: str) -> sim.SimilarityReport:
    """Compare every pair (the spec's template and reference code removed) and write the results."""
    report, codes, slices = sim.compare(notebooks, template=spec.template if spec.template.is_file() else None,
                                        given=[spec.reference] if spec.reference.is_file() else [],
                                        threshold=sim.THRESHOLD if threshold is None else threshold)
    folder = out / "similarity"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for pair in report.flagged:
        pair.html = f"similarity/{pair.a}__{pair.b}.html"
        slice_a, slice_b = slices[(pair.a, pair.b)]
        (out / pair.html).write_text(render_page(
            "similarity_pair.html.j2", pair=pair, lang=lang, csp=csp(), method=report.method,
            code_a=Markup(sim.highlighted(codes[pair.a], slice_a)),
            code_b=Markup(sim.highlighted(codes[pair.b], slice_b))), encoding="utf-8")
    (out / "similarity.json").write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n",
                                         encoding="utf-8")
    return report
