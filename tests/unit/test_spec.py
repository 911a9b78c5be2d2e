"""The assignment spec, the reason catalogue and the verdict layer."""

from __future__ import annotations

import ast
import copy
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from grader.judge.checks import ERROR, FAIL, KINDS, MANUAL, NOT_RUN, PASS, CheckContext, Observation
from grader.errors import ConfigError
from grader.assignment.spec import CheckSpec, Text, load_spec, parse_spec
from grader.judge.verdicts import (
    judge, judge_all, not_run_results, observe, reason_catalog, reason_text, require_known_kinds,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILE = ROOT / "assignments" / "kadai8" / "spec.toml"
SOURCES = sorted((ROOT / "grader" / "judge" / "checks").glob("*.py")) + [ROOT / "grader" / "judge" / "verdicts.py"]


@pytest.fixture(scope="module")
def spec():
    return load_spec(ROOT, "kadai8")


def raw_spec() -> dict:
    return tomllib.loads(SPEC_FILE.read_text(encoding="utf-8"))


def parse(raw: dict):
    return parse_spec(raw, root=ROOT / "assignments" / "kadai8", project_root=ROOT)


# ---------------------------------------------------------------- the real spec
def test_real_spec_loads(spec) -> None:
    assert spec.id == "kadai8"
    assert spec.template == ROOT / "assignments" / "kadai8" / "template.ipynb" and spec.template.is_file()
    assert spec.reference == ROOT / "reference" / "kadai8" / "reference.ipynb"
    assert spec.seed == 8
    assert spec.source_bytes == SPEC_FILE.read_bytes()
    assert spec.title.get("ja").startswith("課題8") and spec.title.get("en").startswith("Assignment 8")


def test_required_check_ids(spec) -> None:
    ids = [c.id for c in spec.checks]
    for required in ("generator.length", "generator.batch_shape", "generator.one_hot_labels", "model.test_accuracy"):
        assert required in ids
    assert len(ids) == len(set(ids))
    by_id = {c.id: c for c in spec.checks}
    assert by_id["generator.length"].kind == "flow_length"
    assert by_id["generator.batch_shape"].kind == "first_batch_shape"
    assert by_id["generator.one_hot_labels"].kind == "first_batch_one_hot"
    assert by_id["model.test_accuracy"].kind == "trusted_test_accuracy"


def test_points_sum_to_100(spec) -> None:
    assert spec.max_score == sum(c.points for c in spec.checks) == 100
    assert all(c.points > 0 for c in spec.checks)


def test_every_check_kind_is_registered_and_texts_are_bilingual(spec) -> None:
    for check in spec.checks:
        assert check.kind in KINDS, check.id
        for text in (check.title, check.fail):
            assert text.ja and text.en, check.id


def test_budgets_quick_is_the_smallest(spec) -> None:
    assert set(spec.budgets) == {"quick", "standard", "full"}
    assert spec.default_budget == "standard"
    quick, standard, full = (spec.budget(n) for n in ("quick", "standard", "full"))
    for cap in ("max_epochs", "max_steps_per_epoch", "max_validation_samples"):
        assert getattr(quick, cap) < getattr(standard, cap), cap
        assert getattr(full, cap) is None, cap  # full runs the notebook as written
    assert quick.max_epochs * quick.max_steps_per_epoch < standard.max_epochs * standard.max_steps_per_epoch
    assert quick.cell_timeout_s <= standard.cell_timeout_s <= full.cell_timeout_s
    assert quick.notebook_timeout_s <= standard.notebook_timeout_s <= full.notebook_timeout_s
    assert quick.caps() == {"name": "quick", "max_epochs": 1, "max_steps_per_epoch": 30, "max_validation_samples": 500,
                            "max_total_steps": 90}  # three capped fits' worth for all training together
    assert full.max_total_steps is None
    assert full.summary("en") == "as written (no caps)"
    with pytest.raises(ConfigError):
        spec.budget("huge")


def test_accuracy_margins_cover_every_budget(spec) -> None:
    params = next(c for c in spec.checks if c.kind == "trusted_test_accuracy").params
    assert set(params["margin"]) == set(spec.budgets)
    assert params["margin"]["quick"] >= params["margin"]["standard"] >= params["margin"]["full"]


# ---------------------------------------------------------------- parse_spec rejects bad specs
def test_parse_spec_accepts_the_raw_spec() -> None:
    assert len(parse(raw_spec()).checks) == len(raw_spec()["checks"])


def test_a_spec_with_an_unknown_kind_cannot_make_a_session() -> None:
    raw = raw_spec()
    raw["checks"][0]["kind"] = "no_such_kind"
    with pytest.raises(ConfigError, match="unknown check kinds.*no_such_kind"):
        require_known_kinds(parse(raw))
    require_known_kinds(parse(raw_spec()))  # the real spec names only kinds the grader has


def test_parse_spec_rejects_duplicate_ids() -> None:
    raw = raw_spec()
    raw["checks"].append(copy.deepcopy(raw["checks"][0]))
    with pytest.raises(ConfigError, match="duplicate check ids"):
        parse(raw)


def test_parse_spec_rejects_an_undefined_default_budget() -> None:
    raw = raw_spec()
    raw["assignment"]["default_budget"] = "overnight"
    with pytest.raises(ConfigError, match="default_budget 'overnight'"):
        parse(raw)
    raw = raw_spec()
    del raw["assignment"]["default_budget"]
    del raw["budgets"]["standard"]  # the implicit default must exist too
    with pytest.raises(ConfigError, match="default_budget 'standard'"):
        parse(raw)


@pytest.mark.parametrize("remove", ["budgets", "checks", "assignment.id", "checks.0.points", "budgets.quick.cell_timeout_s"])
def test_parse_spec_rejects_missing_keys(remove) -> None:
    raw = raw_spec()
    *path, last = remove.split(".")
    node = raw
    for key in path:
        node = node[int(key)] if key.isdigit() else node[key]
    del node[last]
    with pytest.raises(ConfigError, match="missing key"):
        parse(raw)


def test_parse_spec_rejects_a_text_without_ja() -> None:
    raw = raw_spec()
    raw["checks"][0]["title"] = {"en": "only English"}
    with pytest.raises(ConfigError, match="'ja'"):
        parse(raw)


def test_load_spec_unknown_assignment() -> None:
    with pytest.raises(ConfigError, match="no spec at .*kadai99"):
        load_spec(ROOT, "kadai99")


def test_load_spec_unknown_assignment_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known assignments: kadai8\)"):
        load_spec(ROOT, "kadai99")


def test_load_spec_invalid_toml(tmp_path) -> None:
    (tmp_path / "assignments" / "broken").mkdir(parents=True)
    (tmp_path / "assignments" / "broken" / "spec.toml").write_text("[assignment\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_spec(tmp_path, "broken")


# ---------------------------------------------------------------- the reason catalogue
def _reasons_in_source() -> dict[str, set[str]]:
    """Reason keys passed to verdict(…, reason)/missing(reason)/Observation(…, reason) or assigned to `reason`."""
    position = {"verdict": 3, "missing": 0, "Observation": 3}
    found: dict[str, set[str]] = {}

    def strings(node) -> list[str]:
        return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]

    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            candidates: list[str] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in position:
                index = position[node.func.id]
                if len(node.args) > index:
                    candidates += strings(node.args[index])
                candidates += [s for kw in node.keywords if kw.arg == "reason" for s in strings(kw.value)]
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets):
                candidates += strings(node.value)
            for value in candidates:
                if re.fullmatch(r"[a-z_]+", value):
                    found.setdefault(value, set()).add(path.name)
    return found


def test_reason_scan_finds_the_known_reasons() -> None:
    found = _reasons_in_source()
    for reason in ("no_flow", "labels_changed", "test_leak", "architecture_differs", "no_model",
                   "predict_failed", "reference_accuracy_missing", "answer_to_review", "check_crashed"):
        assert reason in found, reason
    assert not {"pass", "fail", "error", "manual", "not_run"} & set(found)  # statuses are not reasons


def test_every_reason_used_in_the_checks_has_ja_and_en() -> None:
    catalog = reason_catalog()
    missing = {r: files for r, files in _reasons_in_source().items()
               if not (catalog.get(r, {}).get("ja") and catalog.get(r, {}).get("en"))}
    assert missing == {}


def test_reason_text() -> None:
    assert reason_text(None, {}, "ja") == ""
    assert reason_text("length_differs", {"batch_size": 32}, "en") == "This notebook's batch_size is 32."
    assert reason_text("accuracy_low", {"threshold": 0.7}, "ja") == "基準 0.700 に届きません。"
    assert reason_text("length_differs", {}, "en") == "This notebook's batch_size is {batch_size}."  # args missing
    assert reason_text("accuracy_low", {"threshold": "x"}, "en") == "Below the threshold {threshold:.3f}."
    assert reason_text("not_in_catalogue", {}, "en") == "not_in_catalogue"
    assert reason_text("no_flow", {}, "fr") == reason_catalog()["no_flow"]["ja"]


# ---------------------------------------------------------------- verdicts
CHECK = CheckSpec(
    id="generator.length", kind="flow_length", points=5, visible=True,
    title=Text("ジェネレータの長さ", "Generator length"),
    fail=Text("len(g) が違います。", "len(g) is wrong."),
    hint=Text("ヒント", "Hint"),
)


def test_judge_pass_gets_the_points_and_no_message() -> None:
    result = judge(CHECK, Observation(PASS, np.int64(75), 75), "ja")
    assert (result.status, result.points, result.max_points, result.message) == (PASS, 5, 5, "")
    assert result.actual == 75 and type(result.actual) is int
    assert (result.title, result.hint, result.visible) == ("ジェネレータの長さ", "ヒント", True)


def test_judge_fail_gives_the_fail_text_then_the_reason() -> None:
    obs = Observation(FAIL, 38, 75, "length_differs", {"batch_size": 32})
    result = judge(CHECK, obs, "en")
    assert (result.status, result.points, result.max_points) == (FAIL, 0, 5)
    assert result.message == "len(g) is wrong. This notebook's batch_size is 32."
    assert (result.actual, result.expected, result.title) == (38, 75, "Generator length")
    assert judge(CHECK, obs, "ja").message == "len(g) が違います。 この提出の batch_size は 32 です。"


def test_judge_fail_without_reason_gives_the_fail_text_only() -> None:
    assert judge(CHECK, Observation(FAIL, 1, 2), "en").message == "len(g) is wrong."


def test_judge_not_run_gives_the_reason_only() -> None:
    result = judge(CHECK, Observation(NOT_RUN, None, 75, "no_flow"), "en")
    assert (result.status, result.points, result.message) == (NOT_RUN, 0, "No call to ImageDataGenerator.flow() was found.")


def test_judge_manual_gets_no_points() -> None:
    result = judge(CHECK, Observation(MANUAL, 120, "≥ 30", "answer_to_review", {"excerpt": "…"}), "en")
    assert (result.status, result.points, result.message) == (MANUAL, 0, "Answered; a TA will score it.")


def test_judge_makes_expected_and_actual_json_safe() -> None:
    result = judge(CHECK, Observation(FAIL, {"x": (16, 28), "n": np.float32(0.5)}, [np.int64(3)], "shape_differs"), "en")
    assert result.actual == {"x": [16, 28], "n": 0.5}
    assert result.expected == [3]


def _context() -> CheckContext:
    return CheckContext(student=None, reference=None, params={}, budget="quick")


def test_observe_turns_a_crashing_kind_into_an_error(monkeypatch) -> None:
    def boom(ctx):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(KINDS, "boom", boom)
    check = CheckSpec(id="x.boom", kind="boom", points=5, visible=False, title=Text("t", "t"),
                      fail=Text("失敗", "failed"), hint=Text("", ""))
    obs = observe(check, _context())
    assert (obs.status, obs.reason) == (ERROR, "check_crashed")
    assert obs.reason_args == {"error": "ZeroDivisionError: division by zero"}
    result = judge(check, obs, "en")
    assert (result.status, result.points, result.visible) == (ERROR, 0, False)
    assert result.message == "The grader failed while running this check: ZeroDivisionError: division by zero"


def test_observe_returns_the_kinds_observation(monkeypatch) -> None:
    monkeypatch.setitem(KINDS, "always", lambda ctx: Observation(PASS, ctx.budget, "quick"))
    check = CheckSpec(id="x.ok", kind="always", points=1, visible=True, title=Text("t", "t"),
                      fail=Text("f", "f"), hint=Text("", ""))
    assert observe(check, _context()) == Observation(PASS, "quick", "quick")


def test_temporary_kinds_are_gone_again() -> None:
    assert "boom" not in KINDS and "always" not in KINDS


def test_judge_all_and_not_run_results(spec, monkeypatch) -> None:
    for kind in {c.kind for c in spec.checks}:
        monkeypatch.setitem(KINDS, kind, lambda ctx: Observation(PASS))
    results = judge_all(spec, lambda check: _context(), "ja")
    assert [r.id for r in results] == [c.id for c in spec.checks]
    assert sum(r.points for r in results) == 100
    skipped = not_run_results(spec, "en", "The notebook is not valid JSON.")
    assert {r.status for r in skipped} == {NOT_RUN} and sum(r.points for r in skipped) == 0
    assert sum(r.max_points for r in skipped) == 100
