"""Real fixture notebooks, executed by real kernels on a tiny synthetic data set, graded end to end."""

from __future__ import annotations

import csv
import json

import pytest

pytestmark = pytest.mark.slow

CORE = ("generator.length", "generator.batch_shape", "generator.one_hot_labels", "model.test_accuracy")
GENERATOR_CHECKS = ("data.shape", "data.scaled", "generator.length", "generator.batch_shape",
                    "generator.one_hot_labels", "augmentation.rotation")
TRAINING_CHECKS = ("model.architecture", "training.augmented_generator", "training.steps_per_epoch",
                   "training.validation_data", "evaluation.test_set", "model.test_accuracy")


def statuses(result) -> dict[str, str]:
    return {c.id: c.status for c in result.checks}


def test_correct_notebook_passes_every_automatic_check(graded_batch):
    results, _ = graded_batch
    correct = results["correct"]
    assert correct.status == "graded", correct.message
    assert {c.id: c.status for c in correct.checks if c.status != "pass"} == {"discussion.answered": "manual"}
    assert correct.score == correct.max_score - 10  # only the TA-scored 考察 is pending


def test_slides_verbatim_passes_core_checks_with_the_shim_noted(graded_batch):
    results, _ = graded_batch
    slides = results["slides_verbatim"]
    assert slides.status == "graded", slides.message
    assert all(statuses(slides)[check] == "pass" for check in CORE)
    assert any("keras.preprocessing.image.ImageDataGenerator" in note for note in slides.notes)
    assert any("steps_per_epoch float" in note for note in slides.notes)


def test_batch_32_fails_length_and_shape(graded_batch):
    results, _ = graded_batch
    checks = {c.id: c for c in results["batch32"].checks}
    assert checks["generator.length"].status == "fail"
    assert checks["generator.length"].actual * 2 == pytest.approx(checks["generator.length"].expected, abs=1)
    assert checks["generator.batch_shape"].status == "fail"
    assert checks["generator.batch_shape"].actual["x"][0] == 32
    assert checks["generator.one_hot_labels"].status == "pass"


def test_integer_labels_fail_one_hot(graded_batch):
    results, _ = graded_batch
    checks = {c.id: c for c in results["integer_labels"].checks}
    assert checks["generator.one_hot_labels"].status == "fail"
    assert checks["generator.one_hot_labels"].actual["one_hot"] is False
    assert checks["generator.length"].status == "pass"


def test_error_midway_keeps_earlier_evidence_and_grades_the_rest(graded_batch):
    results, _ = graded_batch
    result = results["error_midway"]
    assert result.status == "error"
    assert "ValueError" in result.message
    assert [e["ename"] for e in result.execution["errors"]] == ["ValueError"]
    assert all(statuses(result)[check] == "pass" for check in GENERATOR_CHECKS + TRAINING_CHECKS)


def test_infinite_loop_times_out_and_earlier_checks_are_graded(graded_batch):
    results, _ = graded_batch
    result = results["infinite_loop"]
    assert result.status == "timeout"
    assert result.execution["timed_out"] and result.execution["timeout_scope"] == "cell"
    assert all(statuses(result)[check] == "pass" for check in GENERATOR_CHECKS)
    assert all(statuses(result)[check] == "not_run" for check in TRAINING_CHECKS)


def test_os_exit_is_reported_as_kernel_death_and_earlier_checks_are_graded(graded_batch):
    results, _ = graded_batch
    result = results["kernel_exit"]
    assert result.status == "kernel_died"
    assert result.execution["kernel_died"]
    assert all(statuses(result)[check] == "pass" for check in GENERATOR_CHECKS)
    assert statuses(result)["model.test_accuracy"] == "not_run"


def test_invalid_json_is_invalid_with_a_clear_message(graded_batch):
    results, _ = graded_batch
    result = results["not_json"]
    assert result.status == "invalid"
    assert "JSON" in result.message
    assert result.score == 0 and all(c.status == "not_run" for c in result.checks)


def test_missing_discussion_fails_only_the_discussion(graded_batch):
    results, _ = graded_batch
    result = results["no_discussion"]
    assert statuses(result)["discussion.answered"] == "fail"
    assert statuses(result)["model.test_accuracy"] == "pass"


def test_result_json_follows_the_output_contract(graded_batch):
    results, summary = graded_batch
    for student in results:
        folder = summary.out_dir / student
        data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        assert {"student", "assignment", "status", "message", "score", "max_score", "checks", "execution"} <= data.keys()
        assert data["student"] == student and data["assignment"] == "kadai8"
        assert data["execution"]["budget"] == "quick"
        for check in data["checks"]:
            assert {"id", "status", "points", "max_points", "message", "expected", "actual"} <= check.keys()
            assert check["status"] in {"pass", "fail", "error", "not_run", "manual"}
        assert (folder / "report.html").is_file()
        if data["status"] != "invalid":
            assert (folder / "executed.ipynb").is_file()


def test_reports_are_japanese_and_show_the_budget(graded_batch):
    _, summary = graded_batch
    report = (summary.out_dir / "batch32" / "report.html").read_text(encoding="utf-8")
    assert "ジェネレータの長さ" in report and "不合格" in report
    assert "quick" in report and "最大 1 エポック" in report
    index = (summary.out_dir / "index.html").read_text(encoding="utf-8")
    assert "要確認" in index and "kernel_exit/report.html" in index


def test_grades_csv_has_a_bom_and_one_row_per_student(graded_batch):
    results, summary = graded_batch
    raw = (summary.out_dir / "grades.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert sorted(r["student"] for r in rows) == sorted(results)
    assert {"score", "max_score", "status", "generator.length", "model.test_accuracy"} <= rows[0].keys()


def test_student_accuracy_is_recomputed_by_the_grader(graded_batch):
    results, summary = graded_batch
    correct = results["correct"]
    assert correct.evaluation["accuracy"] is not None
    check = next(c for c in correct.checks if c.id == "model.test_accuracy")
    assert check.actual == pytest.approx(correct.evaluation["accuracy"], abs=1e-4)
    assert summary.reference_accuracy is not None


def predictor_processes() -> list[str]:
    """Command lines of live processes running this checkout's predictor (grader/kernel/predict.py)."""
    from pathlib import Path

    from grader.isolation.launch import KERNEL_DIR

    script = str(KERNEL_DIR / "predict.py").encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if script in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode("utf-8", "replace"))
    return found


def test_no_predictor_outlives_the_batch_whatever_the_notebook_did(graded_batch):
    results, _ = graded_batch
    # Each of these had a predictor started beside its kernel: evaluated (error midway), never handed
    # a model (a cell timed out before training; the kernel exited), and the normal case.
    for student in ("correct", "error_midway", "infinite_loop", "kernel_exit"):
        assert "start_predictor" in results[student].execution["steps"], student
        assert results[student].execution["predictor"] is not None, student
    assert results["error_midway"].evaluation["accuracy"] is not None
    assert results["infinite_loop"].evaluation["problem"] == "no_fit"
    assert predictor_processes() == []


def test_every_predictor_evaluated_exactly_one_model_and_was_started_before_the_notebook_ended(graded_batch):
    results, _ = graded_batch
    evaluated = [r for r in results.values() if r.evaluation and r.evaluation.get("accuracy") is not None]
    assert len(evaluated) >= 5
    for result in evaluated:
        predictor = result.execution["predictor"]
        assert predictor["models_loaded"] == 1, result.student
        assert predictor["started_before_s"] > 0, result.student  # started with the notebook, handed the model after
