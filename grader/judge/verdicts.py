"""Turn observations into scored check results with messages, on the trusted side."""

from __future__ import annotations

import json
from typing import Any

from grader.assignment.spec import AssignmentSpec, CheckSpec
from grader.errors import ConfigError
from grader.i18n import MESSAGES, catalogue, t
from grader.judge.checks import ERROR, FAIL, KINDS, NOT_RUN, PASS, CheckContext, Observation
from grader.results import CheckResult

__all__ = ["MESSAGES", "judge", "judge_all", "not_run_results", "observe", "reason_catalog", "reason_text",
           "require_known_kinds"]


def reason_catalog() -> dict[str, dict[str, str]]:
    """The message catalogue (grader.i18n); a check's `reason` is one of its keys."""
    return catalogue()


def reason_text(reason: str | None, args: dict[str, Any], lang: str) -> str:
    return t(reason, lang, **args) if reason else ""


def observe(check: CheckSpec, context: CheckContext) -> Observation:
    """Run one check kind; a crash in a check is a check `error`, not a lost student."""
    try:
        return KINDS[check.kind](context)
    except Exception as exc:  # noqa: BLE001 - one broken check must not lose the others
        return Observation(ERROR, reason="check_crashed", reason_args={"error": f"{type(exc).__name__}: {exc}"[:300]})


# Reasons that only restate that the check failed: after the spec's own failure text they would say
# the same thing twice ("最初のバッチの形が参照解と違います… 形が違います。"), so they are left out.
RESTATING_REASONS = frozenset({"shape_differs", "split_differs", "not_scaled", "fit_without_augmentation",
                               "not_test_set", "images_unchanged", "validation_size_differs"})


def judge(check: CheckSpec, observation: Observation, lang: str) -> CheckResult:
    passed = observation.status == PASS
    parts = []
    reason = observation.reason
    if observation.status == FAIL:  # not_run/error: the reason alone says what happened
        parts.append(check.fail.get(lang))
        if check.fail.get(lang) and reason in RESTATING_REASONS:
            reason = None
    parts.append(reason_text(reason, observation.reason_args, lang))
    return CheckResult(
        id=check.id,
        status=observation.status,
        points=check.points if passed else 0,
        max_points=check.points,
        message=" ".join(p for p in parts if p),
        expected=_plain(observation.expected),
        actual=_plain(observation.actual),
        title=check.title.get(lang),
        hint=check.hint.get(lang),
        visible=check.visible,
        kind=check.kind,
    )


def judge_all(spec: AssignmentSpec, make_context, lang: str) -> list[CheckResult]:
    """`make_context(check)` gives each check its context (params differ per check)."""
    return [judge(check, observe(check, make_context(check)), lang) for check in spec.checks]


def not_run_results(spec: AssignmentSpec, lang: str, why: str) -> list[CheckResult]:
    return [
        CheckResult(id=c.id, status=NOT_RUN, points=0, max_points=c.points, message=why,
                    title=c.title.get(lang), hint=c.hint.get(lang), visible=c.visible, kind=c.kind)
        for c in spec.checks
    ]


def _plain(value: Any) -> Any:
    """Keep expected/actual JSON-safe (tuples → lists, numpy scalars → Python)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def require_known_kinds(spec: AssignmentSpec) -> None:
    """A spec naming a check kind the grader does not have is a configuration error, found before
    anything runs (sessions check it when they are made)."""
    unknown = sorted({c.kind for c in spec.checks} - set(KINDS))
    if unknown:
        raise ConfigError(f"{spec.root / 'spec.toml'}: unknown check kinds {unknown}; known: {sorted(KINDS)}")
