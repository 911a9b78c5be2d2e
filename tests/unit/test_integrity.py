"""Tamper evidence without kernels: the public/private gap statistic, near-copy search, the cross-checks of
kernel evidence and of the saved model, and the hold on a flagged result until a TA accepts or rejects it
(the review store, the review app, the class page and the student's report)."""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil

import numpy as np
import pytest

from evidence_builder import EvidenceBuilder, Data, one_hot, pipeline, preprocess, synthetic_data
from review_fixtures import ROOT, build_reviewable_class
from grader.evidence.evaluate import ModelEvaluation, gap_statistic, predict_timeout
from grader.gradebook.store import Gradebook
from grader.judge.integrity import accuracy_gap, check_integrity, evidence_findings, hold_for_review, model_findings
from grader.kernel.grader_kernel import image_hashes, image_signatures
from grader.evidence.known_data import GraderData, nearest
from grader.assignment.content import load_content

from grader.report.pages import render_student_report
from grader.review.app import create_app
from grader.gradebook.reviews import ReviewStore
from grader.gradebook.publish import republish

QUICK = {"name": "quick", "max_epochs": 1, "max_steps_per_epoch": 30, "max_validation_samples": 500, "max_total_steps": 90}
PARAMS = {"gap_z": 4.0, "trained_on_test_min": 10}
TOKEN = "integrity-token"


def grader_data(data: Data) -> GraderData:
    return GraderData(data.x_test, data.y_test, None, None, data.x_train)


def ids(findings) -> list[str]:
    return [f.id for f in findings]


# ---------------------------------------------------------------- the gap
def test_gap_statistic_is_the_pooled_two_proportion_z() -> None:
    p = (180 + 110) / 400
    expected = (0.9 - 0.55) / math.sqrt(p * (1 - p) * (1 / 200 + 1 / 200))
    assert gap_statistic(180, 200, 110, 200) == pytest.approx(expected, abs=1e-3)
    assert gap_statistic(110, 200, 112, 200) < 0  # one-sided: a lower public accuracy is no evidence
    assert gap_statistic(200, 200, 200, 200) is None and gap_statistic(5, 0, 5, 10) is None


def test_a_gap_beyond_the_bound_is_a_finding_and_chance_is_not() -> None:
    trained = ModelEvaluation(fit=1, accuracy=0.55, public_accuracy=0.9, n_public=200, n_private=200,
                              gap_z=gap_statistic(180, 200, 110, 200))
    honest = ModelEvaluation(fit=1, accuracy=0.55, public_accuracy=0.58, n_public=200, n_private=200,
                             gap_z=gap_statistic(116, 200, 110, 200))
    assert ids(accuracy_gap(trained, 4.0, "ja")) == ["accuracy.gap"]
    assert accuracy_gap(honest, 4.0, "ja") == []
    # The bound's false-flag rate for a model that saw neither part: P(Z > 4) ≈ 3.2e-5.
    assert 0.5 * math.erfc(4 / math.sqrt(2)) < 4e-5


def test_prediction_limit_scales_with_the_reference() -> None:
    assert predict_timeout(15.0, min_s=60, factor=5, max_s=180) == 75.0
    assert predict_timeout(2.0, min_s=60, factor=5, max_s=180) == 60.0
    assert predict_timeout(60.0, min_s=60, factor=5, max_s=180) == 180.0
    assert predict_timeout(None, min_s=60, factor=5) == 300.0  # the reference run itself


# ---------------------------------------------------------------- near copies
def test_signatures_find_perturbed_and_rescaled_copies_but_not_other_images() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    pool = image_signatures(images).astype(np.float32) / 255
    nudged = np.clip(images / 255 + rng.choice([-1, 1], images.shape) / 255, 0, 1)
    for copy_of in (nudged, images / 255 + 1 / 255, (images / 255 - 0.3) / 0.35, images.reshape(-1, 28, 28, 1)):
        found = nearest(image_signatures(copy_of).astype(np.float32) / 255, pool, 0.012)
        np.testing.assert_array_equal(found, np.arange(300))
    others = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    assert (nearest(image_signatures(others).astype(np.float32) / 255, pool, 0.012) == -1).all()
    assert image_signatures(np.zeros((3, 32, 32))) is None


def test_grader_data_tells_train_public_and_near_public_apart() -> None:
    data = synthetic_data()
    known = grader_data(data)
    assert known.is_train(image_hashes(data.x_train[:5] / 255)).all()
    assert (known.public_index(image_hashes(data.x_test[[3, 7]])) == [3, 7]).all()
    assert (known.public_index(image_hashes(data.x_train[:2])) == -1).all()
    nudged = np.clip(data.x_test[:4] / 255 + 1 / 255, 0, 1)
    assert (known.near_public(image_signatures(nudged)) == [0, 1, 2, 3]).all()


# ---------------------------------------------------------------- evidence cross-checks
def test_an_honest_pipeline_has_no_finding(tmp_path) -> None:
    data = synthetic_data()
    evidence = pipeline(tmp_path, data).build()
    assert evidence_findings(evidence, grader_data(data), QUICK, PARAMS, "ja") == []


def test_training_on_test_images_is_a_finding_at_the_threshold(tmp_path) -> None:
    data = synthetic_data()
    few = pipeline(tmp_path / "few", data, leak=5).build()
    many = pipeline(tmp_path / "many", data, leak=25).build()
    assert evidence_findings(few, grader_data(data), QUICK, PARAMS, "ja") == []
    (finding,) = evidence_findings(many, grader_data(data), QUICK, PARAMS, "ja")
    assert finding.id == "evidence.trained_on_test" and finding.detail == {"count": 25}


def test_forged_batches_lengths_splits_and_budgets_are_findings(tmp_path) -> None:
    data = synthetic_data()
    x = preprocess(data.x_train)
    y = one_hot(data.y_train)
    b = EvidenceBuilder(tmp_path).harness_ready().datagen(1, rotation_range=90)
    b.flow(1, datagen=1, x=x, y=y, batch_size=16, shuffle=False)
    noise = np.random.default_rng(9).random((16, 28, 28, 1))
    b.batch(1, x_orig=noise, x=noise)  # originals that are not images of the data set
    b.flow(2, datagen=1, x=x, y=y, batch_size=16, shuffle=False)
    b.batch(2, x=np.asarray(x[:16] * 3, dtype=np.float32))  # brighter than the originals: no rotation does that
    b.event("flow", flow=3, datagen=1, batch_size=16, shuffle=False, length=3750, x={"shape": [1200, 28, 28, 1]})
    b.split([x, y], [x[:960], x[:100], y[:960], y[:100]])
    b.fit(1, flow=1, steps_per_epoch=75, budget={**QUICK, "max_steps_per_epoch": 75})
    found = ids(evidence_findings(b.build(), grader_data(data), QUICK, PARAMS, "ja"))
    assert found == ["evidence.batch_not_from_data", "evidence.batch_not_a_transform", "evidence.flow_length",
                     "evidence.split_sizes", "evidence.beyond_budget"]


def test_the_saved_model_must_agree_with_the_fit_events(tmp_path) -> None:
    b = EvidenceBuilder(tmp_path).harness_ready()
    b.fit(1, x=preprocess(synthetic_data().x_train), batch_size=64)
    for event in b.events:
        if event["kind"] == "fit_end":
            event.update(steps=19, iterations=19, total_steps=19)
        if event["kind"] == "model_saved":
            event["iterations"] = 19
    evidence = b.build()
    honest = ModelEvaluation(fit=1, model={"params_count": 144_266, "optimizer_iterations": 19, "bias_layers": 3,
                                           "zero_bias_layers": 0})
    assert model_findings(evidence, honest, QUICK, "ja") == []
    forged = ModelEvaluation(fit=1, model={"params_count": 7_850, "optimizer_iterations": 300, "bias_layers": 3,
                                           "zero_bias_layers": 3})
    assert ids(model_findings(evidence, forged, QUICK, "ja")) == [
        "model.params", "model.saved_steps", "model.untraced_steps", "model.beyond_budget", "model.untrained"]


def test_check_integrity_reports_every_source_and_a_stable_key(tmp_path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import gc\ngc.get_objects()")])
    data = synthetic_data()
    evaluation = ModelEvaluation(fit=1, accuracy=0.5, public_accuracy=0.95, n_public=200, n_private=200,
                                 gap_z=gap_statistic(190, 200, 100, 200))
    report = check_integrity(notebook=notebook, evidence=pipeline(tmp_path, data).build(), evaluation=evaluation,
                             data=grader_data(data), budget=QUICK, params=PARAMS)
    as_dict = report.to_dict()
    assert not as_dict["ok"] and as_dict["checked"] == ["code", "accuracy", "evidence"]
    assert [f["id"] for f in as_dict["findings"]] == ["code.introspect", "accuracy.gap"]
    again = check_integrity(notebook=notebook, evidence=pipeline(tmp_path / "again", data).build(),
                            evaluation=evaluation, data=grader_data(data), budget=QUICK, params=PARAMS).to_dict()
    assert again["key"] == as_dict["key"]


# ---------------------------------------------------------------- the hold and the TA's decision
FINDING = {"id": "code.introspect", "source": "code", "message": "コード（セル 3、1 行目）：…", "detail": {}}


def flagged(result):
    result = copy.deepcopy(result)
    result.integrity = {"ok": False, "findings": [FINDING], "checked": ["code"], "seconds": 0.01, "key": "k1"}
    return result


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """build_class's six students with a gradebook (no kernels), built once for this module."""
    folder = tmp_path_factory.mktemp("integrity-class")
    return folder, *build_reviewable_class(folder)


def test_a_flagged_result_holds_every_automatic_point_and_says_only_under_review(graded_class) -> None:
    _, _, results = graded_class
    automatic = flagged(results["s001_pass"])
    held = hold_for_review(automatic)
    assert held.status == "flagged" and held.score == 0 and held.integrity["held_points"] == automatic.score
    assert held.integrity["status_before"] == "graded" and held.integrity["review"] is None
    assert all(c.points == 0 for c in held.checks)
    assert {c.status for c in held.checks if c.held} <= {"pass", "fail"}  # outcomes kept, points held
    assert "確認中" in held.message and "introspect" not in held.message
    assert automatic.score > 0 and automatic.status == "graded"  # the stored automatic result is untouched
    accepted = hold_for_review(automatic, {"key": "k1", "decision": "accepted", "reason": "ok", "reviewer": "TA"})
    assert accepted.status == "graded" and accepted.score == automatic.score
    assert accepted.integrity["review"]["decision"] == "accepted"
    stale = hold_for_review(automatic, {"key": "old", "decision": "accepted", "reason": "ok", "reviewer": "TA"})
    assert stale.status == "flagged" and stale.score == 0  # a decision on other findings does not carry over
    rejected = hold_for_review(automatic, {"key": "k1", "decision": "rejected", "reason": "x", "reviewer": "TA"})
    assert rejected.status == "flagged" and rejected.score == 0 and "認められません" in rejected.message
    assert hold_for_review(results["s001_pass"]) is results["s001_pass"]  # nothing found: unchanged


def test_the_student_report_says_under_review_and_nothing_of_the_findings(graded_class) -> None:
    _, out, results = graded_class
    held = hold_for_review(flagged(results["s001_pass"]))
    html = render_student_report(held, out / "s001_pass", load_content(ROOT / "assignments" / "kadai8"))
    assert "確認中" in html and "保留" in html
    assert FINDING["message"] not in html and "code.introspect" not in html


@pytest.fixture
def review(graded_class, tmp_path):
    """A copy of the graded class whose s001_pass was flagged (as `grade` stores it) and published."""
    folder, _, results = graded_class
    shutil.copytree(folder, tmp_path / "class")
    out = tmp_path / "class" / "out"
    with Gradebook.open(out) as book:
        run_id = book.start_run(assignment="kadai8", budget="quick", jobs=1, threads=1, grader_version="t")
        book.record_result(run_id, flagged(results["s001_pass"]), fingerprint="f" * 32, seconds=1.0)
    republish(out, ROOT, "kadai8", ["s001_pass"])
    client = create_app(out=out, project_root=ROOT, assignment="kadai8", token=TOKEN).test_client()
    client.get(f"/?token={TOKEN}")
    return out, results, client


def grades(out) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", encoding="utf-8-sig", newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def test_flagged_students_come_first_on_the_class_page_and_in_the_review_app(review) -> None:
    out, results, client = review
    index = (out / "index.html").read_text(encoding="utf-8")
    attention = index[index.index('id="attention"'):index.index('id="distribution"')]
    assert attention.index("s001_pass") < min(attention.index(s) for s in results if s != "s001_pass" and s in attention)
    assert "不正の疑い" in attention and FINDING["message"] in attention  # the class page is the TA's
    assert next(iter(grades(out))) == "s001_pass" and grades(out)["s001_pass"]["status"] == "flagged"
    page = client.get("/").get_data(as_text=True)
    assert page.index("s001_pass") < page.index("s002")
    student = client.get("/student/s001_pass").get_data(as_text=True)
    assert 'id="integrity-form"' in student and FINDING["message"] in student
    saved = json.loads((out / "s001_pass" / "result.json").read_text(encoding="utf-8"))
    assert saved["status"] == "flagged" and saved["score"] == 0 and saved["integrity"]["findings"] == [FINDING]


def test_a_ta_rejects_then_accepts_with_reasons_kept_in_the_review_log(review) -> None:
    out, results, client = review
    full = results["s001_pass"].score
    no_reason = client.post("/student/s001_pass/integrity", data={
        "token": TOKEN, "reviewer": "佐藤TA", "integrity_decision": "accepted", "integrity_reason": ""})
    assert no_reason.status_code == 400 and "理由" in no_reason.get_data(as_text=True)
    assert client.post("/student/s001_pass/integrity", data={
        "reviewer": "佐藤TA", "integrity_decision": "accepted", "integrity_reason": "x"}).status_code == 403
    assert client.post("/student/s002_fail/integrity", data={
        "token": TOKEN, "reviewer": "佐藤TA", "integrity_decision": "accepted", "integrity_reason": "x"}).status_code == 404

    rejected = client.post("/student/s001_pass/integrity", data={
        "token": TOKEN, "reviewer": "佐藤TA", "integrity_decision": "rejected", "integrity_reason": "クロージャ経由で記録を偽造"})
    assert rejected.status_code == 302
    assert grades(out)["s001_pass"]["status"] == "flagged" and grades(out)["s001_pass"]["score"] == "0"

    accepted = client.post("/student/s001_pass/integrity", data={
        "token": TOKEN, "reviewer": "鈴木TA", "integrity_decision": "accepted", "integrity_reason": "本人に確認、講義の例の写し"})
    assert accepted.status_code == 302
    row = grades(out)["s001_pass"]
    assert row["status"] == "graded" and int(row["score"]) == full
    saved = json.loads((out / "s001_pass" / "result.json").read_text(encoding="utf-8"))
    assert saved["integrity"]["review"]["decision"] == "accepted" and saved["integrity"]["review"]["reviewer"] == "鈴木TA"
    with ReviewStore(out) as store:
        log = store.history("kadai8", "s001_pass")
    assert [(h["action"], h["text"], h["reviewer"]) for h in log[:2]] == [
        ("integrity_accepted", "本人に確認、講義の例の写し", "鈴木TA"),
        ("integrity_rejected", "クロージャ経由で記録を偽造", "佐藤TA")]
    assert "不正の疑い：承認" in client.get("/student/s001_pass").get_data(as_text=True)


def test_model_architecture_counts_the_saved_models_parameters(tmp_path) -> None:
    from grader.judge.checks import KINDS, CheckContext

    data = synthetic_data()
    reference = pipeline(tmp_path / "reference", data).build()
    student = pipeline(tmp_path / "student", data).build()  # the kernel claims the slides' 144,266
    context = CheckContext(student=student, reference=reference, params={}, budget="quick",
                           student_eval=ModelEvaluation(fit=1, model={"params_count": 7_850}),
                           reference_eval=ModelEvaluation(fit=1, model={"params_count": 144_266}))
    observed = KINDS["model_params"](context)
    assert (observed.status, observed.actual, observed.expected) == ("manual", 7_850, 144_266)
