"""Scores a notebook cannot forge, through real sandboxed kernels on the tiny synthetic data set.

One batch grades the forgery notebooks (tests/fixtures/forgery/, built by build_forgery.py: the harness
reached through a closure with forged signed events, extra fits on x_test, train_on_batch on x_test,
perturbed test copies, model.save swapped, a pathological model), two honest variants and the sample
class in submissions/. Each hostile notebook gets its specific outcome; no honest notebook is flagged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from conftest import FIXTURES, REALISTIC, ROOT
from grader.assignment.data import load_dataset
from grader.evidence.evaluate import ModelEvaluation
from grader.evidence.reader import Evidence
from grader.judge.integrity import check_integrity
from grader.evidence.known_data import GraderData
from grader.assignment.spec import load_spec

pytestmark = pytest.mark.slow
FORGERY = ROOT / "tests" / "fixtures" / "forgery"
SAMPLE_CLASS = sorted((ROOT / "submissions").glob("*.ipynb"))
HONEST_VARIANTS = ("honest_extras", "lazy")


@pytest.fixture(scope="session")
def forgery_batch(tmp_path_factory, tiny_keras_home, test_project, reference_cache):
    from grader.commands import grade

    submissions = tmp_path_factory.mktemp("forgery-submissions")
    for notebook in [*FORGERY.glob("*.ipynb"), *SAMPLE_CLASS]:
        shutil.copy(notebook, submissions / notebook.name)
    out = tmp_path_factory.mktemp("forgery-out")
    summary = grade.main(assignment="kadai8", submissions=submissions, out=out, budget="quick", jobs=2,
                         project_root=test_project, keras_home=tiny_keras_home, cache_root=reference_cache)
    return {r.student: r for r in summary.results}, summary


def finding_ids(result) -> set[str]:
    return {f["id"] for f in (result.integrity or {}).get("findings", [])}


def check(result, check_id: str):
    return next(c for c in result.checks if c.id == check_id)


def events(summary, student: str, kind: str) -> list[dict]:
    return Evidence.load(summary.out_dir / student / "evidence").of(kind)


def test_the_harness_reached_through_a_closure_scores_no_more_than_without_it(forgery_batch):
    results, _ = forgery_batch
    forged, lazy = results["harness_closure"], results["lazy"]
    assert forged.status == "flagged" and forged.integrity["status_before"] == "graded"
    assert {"code.introspect", "accuracy.gap", "model.untraced_steps", "model.beyond_budget"} <= finding_ids(forged)
    assert forged.evaluation["model"]["optimizer_iterations"] == 150  # what the saved file says, not the events
    # Without a TA's acceptance the forged notebook scores no more than the same notebook without the cell;
    # the points it would have had are held, and more than that.
    assert forged.score <= lazy.score < forged.integrity["held_points"]
    assert "確認中" in forged.message and "closure" not in forged.message
    report = (forgery_batch[1].out_dir / "harness_closure" / "report.html").read_text(encoding="utf-8")
    assert "確認中" in report and "__closure__" not in report.split('id="notebook"')[0]


def test_extra_fits_on_the_test_set_are_flagged_and_bounded_by_the_total_budget(forgery_batch):
    results, summary = forgery_batch
    result = results["extra_fits"]
    assert result.status == "flagged"
    assert {"accuracy.gap", "evidence.trained_on_test"} <= finding_ids(result)
    assert result.evaluation["gap_z"] > 4 and result.evaluation["public_accuracy"] > result.evaluation["accuracy"]
    assert check(result, "data.no_test_leak").status == "fail"
    (exhausted, *_) = events(summary, "extra_fits", "budget_exhausted")
    assert exhausted["route"] == "fit" and exhausted["steps"] == 90
    assert result.evaluation["model"]["optimizer_iterations"] <= 90  # 25 fits asked for far more


def test_train_on_batch_on_the_test_set_is_traced_budgeted_and_flagged(forgery_batch):
    results, summary = forgery_batch
    result = results["train_on_batch"]
    assert result.status == "flagged"
    assert {"accuracy.gap", "evidence.trained_on_test"} <= finding_ids(result)
    traced = [e for e in events(summary, "train_on_batch", "batch_training") if e["route"] == "train_on_batch"]
    assert sum(e["steps"] for e in traced) == 75 and sum(e["samples"] for e in traced) == 2256  # 75 batches of x_test (200 images, 32 at a time)
    assert result.evaluation["model"]["optimizer_iterations"] == 90  # the flow fit got what was left
    fit = next(f for f in result.budget["fits"] if f["fit"] == result.evaluation["fit"])
    assert fit["effective_steps"] == 15 and fit["effective_epochs"] == 1


def test_perturbed_test_copies_are_found_as_near_duplicates(forgery_batch):
    results, _ = forgery_batch
    result = results["perturbed_copies"]
    assert result.status == "flagged" and "evidence.trained_on_test" in finding_ids(result)
    found = next(f for f in result.integrity["findings"] if f["id"] == "evidence.trained_on_test")
    assert found["detail"]["count"] == 200  # every public image, though not one pixel matches exactly
    leak = check(result, "data.no_test_leak")
    assert leak.status == "fail" and leak.actual == 200


def test_a_swapped_model_save_cannot_change_the_evaluated_model(forgery_batch):
    results, summary = forgery_batch
    result = results["save_swapped"]
    assert result.status == "flagged" and finding_ids(result) == {"code.patch"}
    facts = result.evaluation["model"]
    fit = next(e for e in events(summary, "save_swapped", "fit_start") if e["fit"] == result.evaluation["fit"])
    assert facts["params_count"] == fit["params_count"] == 144_266  # the trained CNN, not the 7,850-parameter stand-in
    assert facts["zero_bias_layers"] == 0 and facts["optimizer_iterations"] > 0
    accuracy = check(result, "model.test_accuracy")
    assert accuracy.status == "pass" and accuracy.held == {"points": 10, "status": "pass"}  # held, not lost


def test_a_pathological_model_is_stopped_within_about_a_minute(forgery_batch):
    results, _ = forgery_batch
    result = results["slow_model"]
    evaluation = result.evaluation
    assert evaluation["predict_timed_out"] and evaluation["accuracy"] is None
    assert 60 <= evaluation["predict_timeout_s"] <= 180  # 5 × the reference's own prediction, within 60–180 s
    assert evaluation["predict_seconds"] <= evaluation["predict_timeout_s"] + 15
    accuracy = check(result, "model.test_accuracy")
    assert accuracy.status == "not_run" and "打ち切りました" in accuracy.message
    assert result.status != "flagged"  # slow is not tampering: reported, not flagged


def test_honest_variants_are_not_flagged(forgery_batch):
    results, summary = forgery_batch
    extras = results["honest_extras"]
    assert extras.status == "graded" and extras.integrity["ok"], extras.integrity
    assert check(extras, "model.test_accuracy").status == "pass"
    ends = events(summary, "honest_extras", "fit_end")
    assert [e["steps"] for e in ends] == [15, 15] and ends[-1]["total_steps"] == 30  # a baseline fit fits the budget
    assert results["lazy"].status == "graded" and results["lazy"].integrity["ok"]
    split = extras.versions["data_split"]  # the split every score rests on, named in the result and report
    assert split.startswith("public ") and "/ private " in split
    assert split in (summary.out_dir / "honest_extras" / "report.html").read_text(encoding="utf-8")


def reference_integrity(reference_cache: Path, keras_home: Path, project: Path) -> dict:
    """The reference run's own evidence and evaluation, cross-checked the same way as a student's."""
    (folder,) = [p.parent for p in reference_cache.rglob("reference.json") if "quick" in p.parent.name][:1]
    info = json.loads((folder / "reference.json").read_text(encoding="utf-8"))
    spec = load_spec(project, "kadai8")
    return check_integrity(
        notebook=nbformat.read(spec.reference, as_version=4), evidence=Evidence.load(folder / "evidence"),
        evaluation=ModelEvaluation(**info["evaluation"]), data=GraderData.from_dataset(load_dataset(keras_home)),
        budget=spec.budget("quick").caps(), params=spec.integrity).to_dict()


def test_no_honest_notebook_is_ever_flagged(forgery_batch, graded_batch, realistic_batch, reference_cache,
                                            tiny_keras_home, test_project):
    """The flag rate on every honest notebook we have: the test fixtures, the real-style notebooks, the
    sample class, the honest variants and the reference. It must be 0."""
    results, _ = forgery_batch
    fixtures, _ = graded_batch
    realistic, _ = realistic_batch
    honest = {**{f"fixture:{k}": v for k, v in fixtures.items()}, **{f"realistic:{k}": v for k, v in realistic.items()},
              **{name: results[name] for name in (*HONEST_VARIANTS, *(p.stem for p in SAMPLE_CLASS))}}
    assert len(honest) == (len(list(FIXTURES.glob("*.ipynb"))) + len(list(REALISTIC.glob("*.ipynb")))
                           + len(HONEST_VARIANTS) + len(SAMPLE_CLASS))
    flagged = {name: r.integrity for name, r in honest.items() if r.status == "flagged"
               or (r.integrity is not None and not r.integrity["ok"])}
    assert flagged == {}
    ran = [r for r in honest.values() if r.integrity is not None]
    assert len(ran) >= len(honest) - 1  # all but the unreadable not_json.ipynb were cross-checked
    assert reference_integrity(reference_cache, tiny_keras_home, test_project)["findings"] == []
