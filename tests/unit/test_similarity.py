"""Code similarity (grader.similarity.compare, copydetect winnowing): renamed copies flag, the template and
independent solutions do not; the command writes similarity.json, side-by-side pages and a class-page section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


from conftest import renamed
from grader.similarity import compare as sim
from grader.commands import similarity as command
from grader.results import StudentResult

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "assignments" / "kadai8" / "template.ipynb"
REFERENCE = ROOT / "reference" / "kadai8" / "reference.ipynb"
SAMPLES = ROOT / "submissions"


def pair(report, a, b):
    return next(p for p in report.pairs if {p.a, p.b} == {a, b})


def test_renamed_copy_flags_template_and_independent_do_not(tmp_path):
    copy = renamed(SAMPLES / "s2601002.ipynb", tmp_path / "copycat.ipynb")
    assert "renamed_x_tr_v" in copy.read_text(encoding="utf-8")
    notebooks = {"s2601001": SAMPLES / "s2601001.ipynb", "s2601002": SAMPLES / "s2601002.ipynb",
                 "copycat": copy, "blank1": TEMPLATE, "blank2": TEMPLATE}
    report, codes, _ = sim.compare(notebooks, template=TEMPLATE, given=[REFERENCE])
    copied = pair(report, "s2601002", "copycat")
    assert copied.flagged and copied.similarity > 0.9
    assert not pair(report, "blank1", "blank2").flagged and pair(report, "blank1", "blank2").similarity == 0
    assert codes["blank1"] == ""  # the template's own lines are all removed
    independent = pair(report, "s2601001", "s2601002")
    assert not independent.flagged and independent.similarity < sim.THRESHOLD / 2
    assert [ (p.a, p.b) for p in report.flagged] == [("copycat", "s2601002")]


def test_independent_sample_pair_stays_below_without_the_lecture_code_too():
    report, _, _ = sim.compare({"s2601001": SAMPLES / "s2601001.ipynb", "s2601002": SAMPLES / "s2601002.ipynb"},
                               template=TEMPLATE)
    assert report.pairs[0].similarity < sim.THRESHOLD


def test_highlight_escapes_code():
    text = "x = '<script>'\ny = 1"
    assert sim.highlighted(text, ([0], [5])) == "<mark>x = &#x27;</mark>&lt;script&gt;&#x27;\ny = 1"


def test_command_writes_json_pages_and_class_section(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    for name in ("s2601001", "s2601002"):
        shutil.copy(SAMPLES / f"{name}.ipynb", subs / f"{name}.ipynb")
    renamed(SAMPLES / "s2601002.ipynb", subs / "s2601099.ipynb")
    for name in ("s2601001", "s2601002", "s2601099"):
        (out / name).mkdir(parents=True)
        result = StudentResult(student=name, assignment="kadai8", status="graded", message="", score=0, max_score=100)
        (out / name / "result.json").write_text(json.dumps(result.to_dict()), encoding="utf-8")
    report = command.main(out=out, submissions=subs, project_root=ROOT, assignment="kadai8")
    assert [(p.a, p.b) for p in report.flagged] == [("s2601002", "s2601099")]
    data = json.loads((out / "similarity.json").read_text(encoding="utf-8"))
    assert data["threshold"] == sim.THRESHOLD and len(data["pairs"]) == 3
    page = (out / "similarity" / "s2601002__s2601099.html").read_text(encoding="utf-8")
    assert "<mark>" in page and "renamed_x_tr_v" in page and "default-src 'none'" in page
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="similarity"' in index and 'href="similarity/s2601002__s2601099.html"' in index
