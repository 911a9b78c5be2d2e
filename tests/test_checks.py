"""Every check kind on evidence built in tmp folders: no kernels, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grader.checks import FAIL, KINDS, MANUAL, NOT_RUN, PASS, CheckContext, Observation
from grader.checks.training import accuracy_threshold
from grader.evaluate import ModelEvaluation
from grader.spec import load_spec
from evidence_builder import (
    SLIDES_PARAMS,
    EvidenceBuilder,
    one_hot,
    pipeline,
    preprocess,
    reference_like,
    synthetic_data,
    variant,
)

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT, "kadai8")
PARAMS = {c.id: c.params for c in SPEC.checks}
DATA = synthetic_data()
_DEFAULT = object()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_like(tmp_path_factory.mktemp("reference"))


@pytest.fixture
def student(tmp_path):
    """student("batch32") → Evidence of that variant; student() → a correct notebook."""
    count = iter(range(100))

    def make(name: str | None = None, **changes):
        folder = tmp_path / f"student{next(count)}"
        if name is None:
            return pipeline(folder, **changes).build()
        return variant(folder, name, **changes)

    return make


def run(kind: str, student, reference, *, check: str | None = None, params=None, budget: str = "quick",
        test_hashes=_DEFAULT, **context) -> Observation:
    ctx = CheckContext(
        student=student, reference=reference,
        params=PARAMS[check] if params is None else params, budget=budget,
        test_hashes=DATA.test_hashes if test_hashes is _DEFAULT else test_hashes, **context,
    )
    return KINDS[kind](ctx)


def assert_obs(obs: Observation, status: str, actual, expected, reason: str | None, **args) -> None:
    assert (obs.status, obs.actual, obs.expected, obs.reason) == (status, actual, expected, reason)
    for key, value in args.items():
        assert obs.reason_args[key] == value, key


TESTED_KINDS = {
    "flow_length", "first_batch_shape", "first_batch_one_hot", "augmentation_applied", "input_shape",
    "input_scaled", "split_sizes", "no_test_overlap", "model_params", "fit_uses_augmented_flow",
    "fit_steps_per_epoch", "fit_validation_data", "evaluated_on_test_set", "trusted_test_accuracy",
    "written_answer", "data_source", "keras3_api",
}


def test_every_registered_kind_has_tests_here() -> None:
    assert set(KINDS) == TESTED_KINDS


def test_spec_uses_only_tested_kinds() -> None:
    assert {c.kind for c in SPEC.checks} <= TESTED_KINDS


# ---------------------------------------------------------------- generator
def test_flow_length_pass(student, reference) -> None:
    assert_obs(run("flow_length", student(), reference, check="generator.length"), PASS, 75, 75, None)


def test_flow_length_batch32_fails(student, reference) -> None:
    obs = run("flow_length", student("batch32"), reference, check="generator.length")
    assert_obs(obs, FAIL, 38, 75, "length_differs", batch_size=32)


def test_flow_length_no_flow_not_run(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).harness_ready().datagen(1, rotation_range=90).build()
    assert_obs(run("flow_length", ev, reference, check="generator.length"), NOT_RUN, None, 75, "no_flow")


def test_builder_flow_shorthand_matches_the_harness_format(tmp_path, reference) -> None:
    ev = (EvidenceBuilder(tmp_path).datagen(1, rotation_range=90)
          .flow(1, datagen=1, batch_size=16, n=1200, x_max=1.0, one_hot=True).batch(1).build())
    assert run("flow_length", ev, reference, check="generator.length").status == PASS
    assert run("first_batch_shape", ev, reference, check="generator.batch_shape").status == PASS
    assert run("first_batch_one_hot", ev, reference, check="generator.one_hot_labels").status == PASS
    assert run("input_scaled", ev, reference, check="data.scaled").status == PASS


def test_first_batch_shape_pass(student, reference) -> None:
    shapes = {"x": [16, 28, 28, 1], "y": [16, 10]}
    assert_obs(run("first_batch_shape", student(), reference, check="generator.batch_shape"), PASS, shapes, shapes, None)


def test_first_batch_shape_batch32_fails(student, reference) -> None:
    obs = run("first_batch_shape", student("batch32"), reference, check="generator.batch_shape")
    assert_obs(obs, FAIL, {"x": [32, 28, 28, 1], "y": [32, 10]}, {"x": [16, 28, 28, 1], "y": [16, 10]},
               "shape_differs")


def test_first_batch_shape_integer_labels_fails(student, reference) -> None:
    obs = run("first_batch_shape", student("integer_labels"), reference, check="generator.batch_shape")
    assert_obs(obs, FAIL, {"x": [16, 28, 28, 1], "y": [16]}, {"x": [16, 28, 28, 1], "y": [16, 10]}, "shape_differs")


def test_first_batch_shape_without_batch_not_run(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).flow(1, datagen=1, batch_size=16).build()
    obs = run("first_batch_shape", ev, reference, check="generator.batch_shape")
    assert_obs(obs, NOT_RUN, None, {"x": [16, 28, 28, 1], "y": [16, 10]}, "no_batch")


def test_first_batch_shape_without_flow_not_run(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).harness_ready().build()
    assert run("first_batch_shape", ev, reference, check="generator.batch_shape").reason == "no_flow"


def test_first_batch_one_hot_pass(student, reference) -> None:
    obs = run("first_batch_one_hot", student(), reference, check="generator.one_hot_labels")
    assert_obs(obs, PASS, {"one_hot": True, "classes": 10, "shape": [16, 10]}, {"one_hot": True, "classes": 10}, None)


def test_first_batch_one_hot_integer_labels_fails(student, reference) -> None:
    obs = run("first_batch_one_hot", student("integer_labels"), reference, check="generator.one_hot_labels")
    assert_obs(obs, FAIL, {"one_hot": False, "classes": None, "shape": [16]}, {"one_hot": True, "classes": 10},
               "not_one_hot")


def test_first_batch_one_hot_wrong_width_fails(tmp_path, reference) -> None:
    labels = np.arange(1200) % 5
    ev = (EvidenceBuilder(tmp_path).datagen(1, rotation_range=90)
          .flow(1, datagen=1, batch_size=16, x=preprocess(DATA.x_train), y=one_hot(labels, classes=5)).batch(1).build())
    obs = run("first_batch_one_hot", ev, reference, check="generator.one_hot_labels")
    assert_obs(obs, FAIL, {"one_hot": True, "classes": 5, "shape": [16, 5]}, {"one_hot": True, "classes": 10},
               "not_one_hot")


def test_first_batch_one_hot_labels_changed_by_augmentation_fails(tmp_path, reference) -> None:
    y = one_hot(DATA.y_train)
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).flow(1, datagen=1, batch_size=16,
                                                                       x=preprocess(DATA.x_train), y=y)
    shuffled = np.roll(y[:16], 1, axis=1)  # still one-hot rows, but other classes
    ev = b.batch(1, y=shuffled, y_orig=y[:16]).build()
    assert ev.batch(1)["y"]["one_hot"] is True
    obs = run("first_batch_one_hot", ev, reference, check="generator.one_hot_labels")
    assert_obs(obs, FAIL, {"one_hot": True, "classes": 10, "shape": [16, 10]}, {"one_hot": True, "classes": 10},
               "labels_changed")


def test_first_batch_one_hot_no_batch_not_run(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).datagen(1).flow(1, datagen=1, batch_size=16).build()
    obs = run("first_batch_one_hot", ev, reference, check="generator.one_hot_labels")
    assert_obs(obs, NOT_RUN, None, {"one_hot": True, "classes": 10}, "no_batch")


@pytest.mark.parametrize("check, param, value", [
    ("augmentation.rotation", "rotation_range", 90),
    ("augmentation.vertical_flip", "vertical_flip", True),
])
def test_augmentation_applied_pass(student, reference, check, param, value) -> None:
    ev = student()
    datagens = {d["datagen"] for d in ev.of("datagen") if d["params"].get(param) == value}
    assert datagens == ({1, 3} if param == "rotation_range" else {2, 3})
    changed = max(ev.batch(f["flow"])["changed_fraction"] for f in ev.of("flow") if f["datagen"] in datagens)
    assert changed > 0.5
    obs = run("augmentation_applied", ev, reference, check=check)
    assert_obs(obs, PASS, {param: value, "images_changed": True, "changed_fraction": round(changed, 3)},
               {param: value, "images_changed": True}, None)


def test_augmentation_any_configured_generator_that_changed_images_counts(tmp_path, reference) -> None:
    ev = (EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).flow(1, datagen=1, batch_size=16).batch(1, augment=False)
          .datagen(2, rotation_range=90).flow(2, datagen=2, batch_size=16).batch(2).build())
    obs = run("augmentation_applied", ev, reference, check="augmentation.rotation")
    assert obs.status == PASS and obs.actual["changed_fraction"] == round(ev.batch(2)["changed_fraction"], 3)
    strict = run("augmentation_applied", ev, reference, params={"param": "rotation_range", "value": 90,
                                                                  "min_changed_fraction": 1.0})
    assert (strict.status, strict.reason) == (FAIL, "images_unchanged")


def test_augmentation_not_configured_fails(tmp_path, reference) -> None:
    ev = (EvidenceBuilder(tmp_path).datagen(1, rotation_range=45).datagen(2, vertical_flip=False)
          .flow(1, datagen=1, batch_size=16).batch(1).build())
    obs = run("augmentation_applied", ev, reference, check="augmentation.rotation")
    assert_obs(obs, FAIL, {"rotation_range": [45]}, {"rotation_range": 90, "images_changed": True},
               "augmentation_not_configured", param="rotation_range", value=90)


def test_augmentation_no_datagen_at_all_fails(student, reference) -> None:
    obs = run("augmentation_applied", student("no_augmentation"), reference, check="augmentation.vertical_flip")
    assert_obs(obs, FAIL, {"vertical_flip": None}, {"vertical_flip": True, "images_changed": True},
               "augmentation_not_configured", param="vertical_flip", value=True)


def test_augmentation_configured_but_images_unchanged_fails(tmp_path, reference) -> None:
    ev = (EvidenceBuilder(tmp_path).datagen(1, rotation_range=90)
          .flow(1, datagen=1, batch_size=16).batch(1, augment=False).build())
    obs = run("augmentation_applied", ev, reference, check="augmentation.rotation")
    assert_obs(obs, FAIL, {"rotation_range": 90, "images_changed": False, "changed_fraction": 0.0},
               {"rotation_range": 90, "images_changed": True}, "images_unchanged")


def test_augmentation_configured_without_batch_not_run(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).flow(1, datagen=1, batch_size=16).build()
    obs = run("augmentation_applied", ev, reference, check="augmentation.rotation")
    assert_obs(obs, NOT_RUN, None, {"rotation_range": 90, "images_changed": True}, "no_augmented_batch",
               param="rotation_range")


# ---------------------------------------------------------------- data
def test_input_shape_pass(student, reference) -> None:
    assert_obs(run("input_shape", student(), reference, check="data.shape"),
               PASS, [28, 28, 1], [28, 28, 1], None)


def test_input_shape_is_per_image_so_a_correctly_reshaped_subset_passes(tmp_path, reference) -> None:
    x = preprocess(DATA.x_train[:500])
    ev = EvidenceBuilder(tmp_path).datagen(1).flow(1, datagen=1, x=x, y=one_hot(DATA.y_train[:500])).build()
    assert_obs(run("input_shape", ev, reference, check="data.shape"), PASS, [28, 28, 1], [28, 28, 1], None)


def test_input_shape_without_channel_axis_fails(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).datagen(1).flow(1, datagen=1, x=DATA.x_train / 255.0, y=one_hot(DATA.y_train)).build()
    assert_obs(run("input_shape", ev, reference, check="data.shape"),
               FAIL, [28, 28], [28, 28, 1], "shape_differs")


def test_input_shape_no_flow_not_run(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).harness_ready().build()
    assert_obs(run("input_shape", ev, reference, check="data.shape"), NOT_RUN, None, [28, 28, 1], "no_flow")


def test_input_scaled_float_0_1_passes(student, reference) -> None:
    assert_obs(run("input_scaled", student(), reference, check="data.scaled"),
               PASS, {"min": 0.0, "max": 1.0, "dtype": "float32"}, {"min": 0.0, "max": 1.0, "dtype": "float"}, None)


def test_input_scaled_uint8_0_255_fails(student, reference) -> None:
    obs = run("input_scaled", student("unscaled"), reference, check="data.scaled")
    assert_obs(obs, FAIL, {"min": 0.0, "max": 255.0, "dtype": "float32"}, {"min": 0.0, "max": 1.0, "dtype": "float"},
               "not_scaled")


def test_input_scaled_judges_what_the_generator_yields_after_rescale(tmp_path, reference) -> None:
    """Raw 0–255 pixels into ImageDataGenerator(rescale=1/255): every batch is in 0–1, so it passes."""
    raw = preprocess(DATA.x_train, scaled=False)
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90, rescale=1 / 255)
    b.flow(1, datagen=1, x=raw, y=one_hot(DATA.y_train), batch_size=16)
    b.batch(1, x=raw[:16].astype(np.float32) / 255)
    obs = run("input_scaled", b.build(), reference, check="data.scaled")
    assert obs.status == PASS and obs.actual["max"] == 1.0


def test_input_scaled_without_a_batch_applies_the_generators_rescale(tmp_path, reference) -> None:
    raw = preprocess(DATA.x_train, scaled=False)
    ev = (EvidenceBuilder(tmp_path).datagen(1, rescale=1 / 255)
          .flow(1, datagen=1, x=raw, y=one_hot(DATA.y_train), batch_size=16).build())
    assert_obs(run("input_scaled", ev, reference, check="data.scaled"),
               PASS, {"min": 0.0, "max": 1.0, "dtype": "float32"}, {"min": 0.0, "max": 1.0, "dtype": "float"}, None)


def test_input_scaled_fails_when_the_training_generator_is_not_scaled(tmp_path, reference) -> None:
    """The assignment's generator is fine but the model trains on raw pixels."""
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).datagen(2, rotation_range=90)
    b.flow(1, datagen=1, x=preprocess(DATA.x_train), y=one_hot(DATA.y_train), batch_size=16).batch(1)
    b.flow(2, datagen=2, x=preprocess(DATA.x_train, scaled=False), y=one_hot(DATA.y_train), batch_size=64)
    b.fit(1, flow=2, steps_per_epoch=19)
    obs = run("input_scaled", b.build(), reference, check="data.scaled")
    assert obs.status == FAIL and obs.actual["max"] == 255.0


# ---------------------------------------------------------------- which flow the generator checks judge
def test_a_demo_flow_of_one_image_before_the_real_one_is_skipped(tmp_path, reference) -> None:
    """Real notebooks first flow one image with batch_size=1 to show the augmentation."""
    x, y = preprocess(DATA.x_train), one_hot(DATA.y_train)
    b = EvidenceBuilder(tmp_path).harness_ready().load_data(DATA).datagen(1, rotation_range=90)
    b.flow(1, datagen=1, x=x[:1], y=None, batch_size=1).batch(1, with_labels=False)
    b.flow(2, datagen=1, x=x, y=y, batch_size=16, shuffle=False).batch(2)
    ev = b.build()
    assert run("flow_length", ev, reference, check="generator.length").status == PASS
    assert run("first_batch_shape", ev, reference, check="generator.batch_shape").status == PASS
    assert run("first_batch_one_hot", ev, reference, check="generator.one_hot_labels").status == PASS
    assert run("input_shape", ev, reference, check="data.shape").status == PASS


def test_a_labelled_flow_over_the_loaded_training_set_is_preferred(tmp_path, reference) -> None:
    x, y = preprocess(DATA.x_train), one_hot(DATA.y_train)
    b = EvidenceBuilder(tmp_path).harness_ready().load_data(DATA).datagen(1, rotation_range=90)
    b.flow(1, datagen=1, x=x[:100], y=y[:100], batch_size=9).batch(1)  # a 3×3 preview of a subset
    b.flow(2, datagen=1, x=x, y=y, batch_size=16, shuffle=False).batch(2)
    assert run("flow_length", b.build(), reference, check="generator.length").actual == 75


def test_a_batch_that_failed_midway_says_why(tmp_path, reference) -> None:
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90)
    b.flow(1, datagen=1, x=preprocess(DATA.x_train), y=one_hot(DATA.y_train), batch_size=16).batch_error(1)
    obs = run("first_batch_shape", b.build(), reference, check="generator.batch_shape")
    assert obs.status == NOT_RUN and obs.reason == "batch_failed" and "FileNotFoundError" in obs.reason_args["error"]


@pytest.mark.parametrize("x, summary", [
    (preprocess(DATA.x_train, scaled=False).astype(np.float32), {"min": 0.0, "max": 255.0, "dtype": "float32"}),
    (preprocess(DATA.x_train) / 255.0, {"min": 0.0, "max": 1 / 255.0, "dtype": "float64"}),  # divided twice
])
def test_input_scaled_wrong_range_fails(tmp_path, reference, x, summary) -> None:
    ev = EvidenceBuilder(tmp_path).datagen(1).flow(1, datagen=1, x=x, y=one_hot(DATA.y_train)).build()
    assert_obs(run("input_scaled", ev, reference, check="data.scaled"),
               FAIL, summary, {"min": 0.0, "max": 1.0, "dtype": "float"}, "not_scaled")


def test_split_sizes_pass(student, reference) -> None:
    assert_obs(run("split_sizes", student(), reference, check="split.shapes"),
               PASS, [960, 240, 960, 240], [960, 240, 960, 240], None)


def test_split_sizes_other_ratio_fails(tmp_path, reference) -> None:
    x, y = preprocess(DATA.x_train), one_hot(DATA.y_train)
    ev = EvidenceBuilder(tmp_path).split([x, y], [x[:1080], x[1080:], y[:1080], y[1080:]], test_size=0.1).build()
    assert_obs(run("split_sizes", ev, reference, check="split.shapes"),
               FAIL, [1080, 120, 1080, 120], [960, 240, 960, 240], "split_differs")


def test_split_sizes_no_split_not_run(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).harness_ready().build()
    assert_obs(run("split_sizes", ev, reference, check="split.shapes"),
               NOT_RUN, None, [960, 240, 960, 240], "no_split")


def test_no_test_overlap_pass(student, reference) -> None:
    assert_obs(run("no_test_overlap", student(), reference, check="data.no_test_leak"), PASS, 0, "≤ 0", None)


def test_no_test_overlap_leak_fails(student, reference) -> None:
    obs = run("no_test_overlap", student("test_leak"), reference, check="data.no_test_leak")
    assert_obs(obs, FAIL, 5, "≤ 0", "test_leak", count=5)


def test_no_test_overlap_counts_the_references_own_overlap_as_allowance(tmp_path, student) -> None:
    reference = pipeline(tmp_path / "ref", leak=2).build()  # duplicates the data set itself has
    assert_obs(run("no_test_overlap", student(leak=2), reference, check="data.no_test_leak"), PASS, 2, "≤ 2", None)
    assert_obs(run("no_test_overlap", student(leak=3), reference, check="data.no_test_leak"),
               FAIL, 3, "≤ 2", "test_leak", count=3)
    obs = run("no_test_overlap", student(leak=3), reference, params={"tolerance": 1})
    assert_obs(obs, PASS, 3, "≤ 3", None)


def test_no_test_overlap_counts_validation_images(tmp_path, reference) -> None:
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90)
    x = preprocess(DATA.x_train[:100])
    b.flow(1, datagen=1, x=x, y=one_hot(DATA.y_train[:100]), batch_size=10)
    ev = b.fit(1, flow=1, steps_per_epoch=10, validation_x=preprocess(DATA.x_test[:7])).build()
    assert_obs(run("no_test_overlap", ev, reference, check="data.no_test_leak"), FAIL, 7, "≤ 0", "test_leak", count=7)


def test_no_test_overlap_no_fit_and_no_test_set_not_run(student, reference) -> None:
    assert_obs(run("no_test_overlap", student("no_fit"), reference, check="data.no_test_leak"),
               NOT_RUN, None, "≤ 0", "no_fit")
    assert_obs(run("no_test_overlap", student(), reference, check="data.no_test_leak", test_hashes=None),
               NOT_RUN, None, None, "no_test_set")


# ---------------------------------------------------------------- training
def test_model_params_equal_passes(student, reference) -> None:
    assert_obs(run("model_params", student(), reference, check="model.architecture"),
               PASS, SLIDES_PARAMS, SLIDES_PARAMS, None)


def test_model_params_different_goes_to_manual(student, reference) -> None:
    obs = run("model_params", student("other_model"), reference, check="model.architecture")
    assert_obs(obs, MANUAL, 1_199_882, SLIDES_PARAMS, "architecture_differs", layers="Flatten → Dense → Dense")


def test_model_params_no_fit_not_run(student, reference) -> None:
    assert_obs(run("model_params", student("no_fit"), reference, check="model.architecture"),
               NOT_RUN, None, SLIDES_PARAMS, "no_fit")


AUGMENTED_FLOW = "flow() of an augmenting ImageDataGenerator"


def test_fit_uses_augmented_flow_pass(student, reference) -> None:
    obs = run("fit_uses_augmented_flow", student(), reference, check="training.augmented_generator")
    assert_obs(obs, PASS, "flow #4 (datagen #3)", AUGMENTED_FLOW, None)


def test_fit_on_arrays_fails(student, reference) -> None:
    obs = run("fit_uses_augmented_flow", student("fit_arrays"), reference, check="training.augmented_generator")
    assert_obs(obs, FAIL, "ndarray", AUGMENTED_FLOW, "fit_without_augmentation")


def test_fit_on_flow_of_plain_datagen_fails(tmp_path, reference) -> None:
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=0, vertical_flip=False)
    ev = b.flow(1, datagen=1, batch_size=64, n=960).fit(1, flow=1, steps_per_epoch=15).build()
    obs = run("fit_uses_augmented_flow", ev, reference, check="training.augmented_generator")
    assert_obs(obs, FAIL, "flow", AUGMENTED_FLOW, "fit_without_augmentation")


def test_fit_uses_augmented_flow_no_fit_not_run(student, reference) -> None:
    obs = run("fit_uses_augmented_flow", student("no_fit"), reference, check="training.augmented_generator")
    assert_obs(obs, NOT_RUN, None, AUGMENTED_FLOW, "no_fit")


def test_fit_steps_per_epoch_float_passes(student, reference) -> None:
    ev = student()
    assert ev.training_fit()["requested"]["steps_per_epoch"] == 15.0
    assert_obs(run("fit_steps_per_epoch", ev, reference, check="training.steps_per_epoch"), PASS, 15.0, 15, None)


@pytest.mark.parametrize("steps", [14, 16, 15.5])
def test_fit_steps_per_epoch_within_one_passes(student, reference, steps) -> None:
    obs = run("fit_steps_per_epoch", student(steps_per_epoch=steps), reference, check="training.steps_per_epoch")
    assert_obs(obs, PASS, steps, 15, None)


def test_fit_steps_per_epoch_missing_fails(student, reference) -> None:
    obs = run("fit_steps_per_epoch", student("no_steps"), reference, check="training.steps_per_epoch")
    assert_obs(obs, FAIL, None, 15, "steps_missing")


def test_fit_steps_per_epoch_wrong_fails(student, reference) -> None:
    obs = run("fit_steps_per_epoch", student(steps_per_epoch=960), reference, check="training.steps_per_epoch")
    assert_obs(obs, FAIL, 960, 15, "steps_differs")


def test_fit_steps_per_epoch_on_arrays_without_steps_fails(student, reference) -> None:
    obs = run("fit_steps_per_epoch", student("fit_arrays"), reference, check="training.steps_per_epoch")
    assert_obs(obs, FAIL, None, None, "steps_missing")


def test_fit_steps_per_epoch_no_fit_not_run(student, reference) -> None:
    assert_obs(run("fit_steps_per_epoch", student("no_fit"), reference, check="training.steps_per_epoch"),
               NOT_RUN, None, None, "no_fit")


def test_fit_validation_data_pass(student, reference) -> None:
    assert_obs(run("fit_validation_data", student(), reference, check="training.validation_data"), PASS, 240, 240, None)


def test_fit_validation_data_missing_fails(student, reference) -> None:
    obs = run("fit_validation_data", student("no_validation"), reference, check="training.validation_data")
    assert_obs(obs, FAIL, None, 240, "no_validation")


def test_fit_validation_data_wrong_size_fails(tmp_path, reference) -> None:
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).flow(1, datagen=1, batch_size=64, n=960)
    ev = b.fit(1, flow=1, steps_per_epoch=15, validation_x=preprocess(DATA.x_train[:100])).build()
    assert_obs(run("fit_validation_data", ev, reference, check="training.validation_data"),
               FAIL, 100, 240, "validation_size_differs")


def test_fit_validation_data_no_fit_not_run(student, reference) -> None:
    assert_obs(run("fit_validation_data", student("no_fit"), reference, check="training.validation_data"),
               NOT_RUN, None, 240, "no_fit")


def test_evaluated_on_test_set_pass(student, reference) -> None:
    assert_obs(run("evaluated_on_test_set", student(), reference, check="evaluation.test_set"),
               PASS, "100%", "≥ 95%", None)


def test_evaluated_on_unscaled_test_set_still_counts(student, reference) -> None:
    obs = run("evaluated_on_test_set", student("unscaled"), reference, check="evaluation.test_set")
    assert_obs(obs, PASS, "100%", "≥ 95%", None)


def test_evaluated_on_training_data_fails(student, reference) -> None:
    obs = run("evaluated_on_test_set", student("evaluate_train"), reference, check="evaluation.test_set")
    assert_obs(obs, FAIL, "0%", "≥ 95%", "not_test_set")


def test_evaluated_on_part_of_the_test_set_fails(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).evaluate(preprocess(DATA.x_test[:150])).build()
    assert_obs(run("evaluated_on_test_set", ev, reference, check="evaluation.test_set"),
               FAIL, "75%", "≥ 95%", "not_test_set")
    assert run("evaluated_on_test_set", ev, reference, params={"min_fraction": 0.7}).status == PASS


def test_evaluated_on_a_generator_is_not_the_test_set(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).evaluate(iter([])).build()
    assert ev.first("evaluate")["x"] == {"type": "list_iterator"}
    assert_obs(run("evaluated_on_test_set", ev, reference, check="evaluation.test_set"),
               FAIL, "0%", "≥ 95%", "not_test_set")


def test_evaluated_on_test_set_not_run(student, reference) -> None:
    assert_obs(run("evaluated_on_test_set", student("no_evaluate"), reference, check="evaluation.test_set"),
               NOT_RUN, None, "≥ 95%", "no_evaluate")
    assert_obs(run("evaluated_on_test_set", student(), reference, check="evaluation.test_set", test_hashes=None),
               NOT_RUN, None, None, "no_test_set")


# ---------------------------------------------------------------- trusted accuracy
ACCURACY = PARAMS["model.test_accuracy"]  # floor 0.2, margin quick 0.15 / standard 0.08 / full 0.05


@pytest.mark.parametrize("reference_accuracy, budget, threshold", [
    (0.85, "quick", 0.70),
    (0.85, "standard", 0.77),
    (0.85, "full", 0.80),
    (0.30, "quick", 0.20),  # never below the floor
    (0.85, "unknown", 0.80),  # a budget without a margin: 0.05
])
def test_accuracy_threshold_rule(reference_accuracy, budget, threshold) -> None:
    assert accuracy_threshold(reference_accuracy, ACCURACY, budget) == threshold


def test_accuracy_threshold_scalar_margin_and_no_floor() -> None:
    assert accuracy_threshold(0.5, {"margin": 0.1}, "quick") == 0.4
    assert accuracy_threshold(0.05, {"margin": 0.1}, "quick") == 0.0


def accuracy(student_eval, reference_eval, budget="quick") -> Observation:
    ev = None  # the check reads only the trusted evaluations
    return run("trusted_test_accuracy", ev, ev, check="model.test_accuracy", budget=budget,
               student_eval=student_eval, reference_eval=reference_eval)


def test_trusted_test_accuracy_pass() -> None:
    obs = accuracy(ModelEvaluation(fit=1, accuracy=0.71234), ModelEvaluation(fit=1, accuracy=0.85))
    assert_obs(obs, PASS, 0.7123, "≥ 0.700 (reference 0.850)", None, threshold=0.7)


def test_trusted_test_accuracy_exactly_at_threshold_passes() -> None:
    assert accuracy(ModelEvaluation(fit=1, accuracy=0.77), ModelEvaluation(fit=1, accuracy=0.85), "standard").status == PASS


def test_trusted_test_accuracy_low_fails() -> None:
    obs = accuracy(ModelEvaluation(fit=1, accuracy=0.75), ModelEvaluation(fit=1, accuracy=0.85), "standard")
    assert_obs(obs, FAIL, 0.75, "≥ 0.770 (reference 0.850)", "accuracy_low", threshold=0.77)


@pytest.mark.parametrize("student_eval", [
    None,
    ModelEvaluation(fit=None, problem="no_fit"),
    ModelEvaluation(fit=1, problem="no_model"),
])
def test_trusted_test_accuracy_without_model_not_run(student_eval) -> None:
    obs = accuracy(student_eval, ModelEvaluation(fit=1, accuracy=0.85))
    assert_obs(obs, NOT_RUN, None, "≥ 0.700 (reference 0.850)", "no_model", detail="")


def test_trusted_test_accuracy_predict_failed_not_run() -> None:
    student_eval = ModelEvaluation(fit=1, problem="predict_failed: model could not be loaded or run: boom")
    obs = accuracy(student_eval, ModelEvaluation(fit=1, accuracy=0.85))
    assert_obs(obs, NOT_RUN, None, "≥ 0.700 (reference 0.850)", "predict_failed",
               detail="model could not be loaded or run: boom")


@pytest.mark.parametrize("reference_eval", [None, ModelEvaluation(fit=1, problem="no_model")])
def test_trusted_test_accuracy_without_reference_is_an_error(reference_eval) -> None:
    assert_obs(accuracy(ModelEvaluation(fit=1, accuracy=0.9), reference_eval),
               "error", None, None, "reference_accuracy_missing")


# ---------------------------------------------------------------- the written answer
HEADING = PARAMS["discussion.answered"]["heading"]
PLACEHOLDER = PARAMS["discussion.answered"]["placeholder"]
ANSWER = ("靴の画像はいつも左向きなので、回転や上下反転で学習するとテストには現れない向きの画像ばかり覚えてしまい、"
          "本来の特徴を学びにくくなるからだと考えます。")


def notebook(*cells) -> nbformat.NotebookNode:
    return new_notebook(cells=[new_markdown_cell(c) if isinstance(c, str) else c for c in cells])


def written(nb) -> Observation:
    return run("written_answer", None, None, check="discussion.answered", notebook=nb)


def test_template_placeholder_only_fails() -> None:
    template = nbformat.read(ROOT / "assignments" / "kadai8" / "template.ipynb", as_version=4)
    assert_obs(written(template), FAIL, 0, "≥ 30", "answer_missing", heading=HEADING)


def test_placeholder_only_fails() -> None:
    nb = notebook("## (10) 問い", "## 考察", PLACEHOLDER)
    assert_obs(written(nb), FAIL, 0, "≥ 30", "answer_missing", heading="考察")


def test_answered_goes_to_manual() -> None:
    obs = written(notebook("## 考察", ANSWER, new_code_cell("print('done')"), "more text after code"))
    assert_obs(obs, MANUAL, len(ANSWER), "≥ 30", "answer_to_review", excerpt=ANSWER)


def test_answer_next_to_the_left_placeholder_counts_only_own_words() -> None:
    obs = written(notebook("## 考察", f"{PLACEHOLDER}\n{ANSWER}"))
    assert (obs.status, obs.actual) == (MANUAL, len(ANSWER))


def test_answer_in_the_heading_cell_counts() -> None:
    obs = written(notebook(f"## 考察\n{ANSWER}"))
    assert (obs.status, obs.actual) == (MANUAL, len(ANSWER))


def test_answer_stops_at_the_next_heading() -> None:
    obs = written(notebook("## 考察", "短い回答です。", "## 参考文献", ANSWER))
    assert_obs(obs, FAIL, len("短い回答です。"), "≥ 30", "answer_missing")


def test_heading_missing_fails() -> None:
    obs = written(notebook("## まとめ", ANSWER))
    assert_obs(obs, FAIL, 0, "≥ 30", "answer_missing", heading="考察")


def test_unreadable_notebook_fails() -> None:
    assert written(None).status == FAIL


# ---------------------------------------------------------------- validation data in any form
def test_validation_given_as_a_generator_is_recognised(tmp_path, reference) -> None:
    x, y = preprocess(DATA.x_train), one_hot(DATA.y_train)
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).datagen(2)
    b.flow(1, datagen=1, x=x[240:], y=y[240:], batch_size=64)
    b.flow(2, datagen=2, x=x[:240], y=y[:240], batch_size=64)
    b.fit(1, flow=1, steps_per_epoch=15, validation_flow=2)
    assert_obs(run("fit_validation_data", b.build(), reference, check="training.validation_data"), PASS, 240, 240, None)


# ---------------------------------------------------------------- which data set
def _dataset_hashes(data=DATA):
    from grader.checks import DatasetHashes
    from grader.kernel.grader_kernel import source_hashes

    return DatasetHashes(train=source_hashes(data.x_train), test=source_hashes(data.x_test))


def _flowed(tmp_path, x, *, loaded: str | None = "fashion_mnist"):
    b = EvidenceBuilder(tmp_path).harness_ready()
    if loaded:
        b.load_data(DATA)
        b.events[-1]["dataset"] = loaded
    b.datagen(1, rotation_range=90).flow(1, datagen=1, x=x, y=one_hot(np.arange(len(x)) % 10), batch_size=16)
    return b.build()


def test_data_source_fashion_training_images_pass_whatever_the_scaling(tmp_path, reference) -> None:
    for number, x in enumerate((preprocess(DATA.x_train), preprocess(DATA.x_train, scaled=False),
                                (preprocess(DATA.x_train) - 0.286) / 0.353)):  # /255, raw, standardised
        obs = run("data_source", _flowed(tmp_path / str(number), x), reference, check="data.source",
                  dataset_hashes=_dataset_hashes())
        assert (obs.status, obs.reason, obs.actual) == (PASS, "source_fashion_mnist_train", "Fashion-MNIST 100%")


def test_data_source_copy_with_test_images_passes_and_says_so(tmp_path, reference) -> None:
    x = np.concatenate([DATA.x_train[:600], DATA.x_test[:200]])
    obs = run("data_source", _flowed(tmp_path, preprocess(x), loaded=None), reference, check="data.source",
              dataset_hashes=_dataset_hashes())
    assert obs.status == PASS and obs.reason == "source_fashion_mnist_with_test" and obs.reason_args["train"] == "75%"


@pytest.mark.parametrize("loaded, reason", [("mnist", "source_mnist"), (None, "source_other"),
                                            ("cifar10", "source_keras_other")])
def test_data_source_other_images_fail_and_say_what_was_seen(tmp_path, reference, loaded, reason) -> None:
    other = synthetic_data(n_train=300, n_test=10, seed=7).x_train  # pictures the grader's copy does not hold
    obs = run("data_source", _flowed(tmp_path, preprocess(other), loaded=loaded), reference, check="data.source",
              dataset_hashes=_dataset_hashes())
    assert (obs.status, obs.reason) == (FAIL, reason)
    assert obs.actual.startswith("Fashion-MNIST 0%")


def test_data_source_without_the_graders_copy_is_not_run(tmp_path, reference) -> None:
    obs = run("data_source", _flowed(tmp_path, preprocess(DATA.x_train)), reference, check="data.source")
    assert (obs.status, obs.reason) == (NOT_RUN, "no_dataset_copy")


# ---------------------------------------------------------------- Keras 2 APIs (off in kadai8's spec)
def test_keras3_api_fails_when_the_bridge_was_used_and_names_the_apis(tmp_path, reference) -> None:
    ev = EvidenceBuilder(tmp_path).harness_ready().bridge("Model.fit_generator").bridge("optimizer(lr=)", lr=0.01).build()
    obs = run("keras3_api", ev, reference, params={})
    assert_obs(obs, FAIL, ["Model.fit_generator", "optimizer(lr=)"], [], "keras2_api_used",
               apis="Model.fit_generator, optimizer(lr=)")
    assert run("keras3_api", reference, reference, params={}).status == PASS


def test_bridged_apis_become_notes_saying_what_to_write_instead(tmp_path) -> None:
    from grader.compat_notes import bridge_notes

    ev = (EvidenceBuilder(tmp_path).bridge("Model.fit_generator").bridge("Model.fit_generator")
          .bridge("keras.layers.convolutional").build())
    ja, en = bridge_notes(ev, "ja"), bridge_notes(ev, "en")
    assert len(ja) == 2 and "model.fit(" in ja[0] and "Keras 2" in ja[0] and "from keras.layers import" in ja[1]
    assert "Write `model.fit(" in en[0]


def test_import_notes_tell_colab_packages_from_others() -> None:
    from types import SimpleNamespace

    from grader.compat_notes import import_notes

    errors = [SimpleNamespace(ename="ModuleNotFoundError", evalue="No module named 'japanize_matplotlib'"),
              SimpleNamespace(ename="ModuleNotFoundError", evalue="No module named 'xgboost'"),
              SimpleNamespace(ename="NameError", evalue="name 'pd' is not defined")]
    notes = import_notes(errors, "ja")
    assert len(notes) == 2
    assert "japanize_matplotlib" in notes[0] and "Colab にも入っていない" in notes[0]
    assert "xgboost" in notes[1] and "採点システム側の不足" in notes[1]


# ---------------------------------------------------------------- trusted evaluation's input scale
def test_trusted_evaluation_feeds_test_images_on_the_scale_the_generator_yielded(tmp_path) -> None:
    """rescale=1/255 on raw pixels: the model trained on 0–1, so the test set goes in as 0–1."""
    from grader.evaluate import input_scale_for

    raw = preprocess(DATA.x_train, scaled=False)
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90, rescale=1 / 255)
    b.flow(1, datagen=1, x=raw, y=one_hot(DATA.y_train), batch_size=64)
    b.batch(1, x=raw[:64].astype(np.float32) / 255)
    b.fit(1, flow=1, steps_per_epoch=19)
    ev = b.build()
    assert input_scale_for(ev, ev.training_fit()) == pytest.approx(1 / 255)
    unscaled = variant(tmp_path / "unscaled", "unscaled")
    assert input_scale_for(unscaled, unscaled.training_fit()) == 1.0
