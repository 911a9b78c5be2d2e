"""The assignment as data: `assignments/<id>/spec.toml` loaded into typed dataclasses.

Adding an assignment means adding `assignments/<id>/` (spec + template) and
`reference/<id>/` (reference solution); nothing in the grader changes.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.errors import ConfigError
from grader.i18n import t

LANGS = ("ja", "en")


@dataclass(frozen=True)
class Text:
    """A message in Japanese (first) and English."""

    ja: str
    en: str

    def get(self, lang: str) -> str:
        return self.en if lang == "en" and self.en else self.ja

    @classmethod
    def parse(cls, raw: Any, where: str) -> Text:
        if isinstance(raw, str):
            return cls(ja=raw, en=raw)
        if not isinstance(raw, dict) or "ja" not in raw:
            raise ConfigError(f"{where}: expected a table with at least 'ja' (and 'en')")
        return cls(ja=str(raw["ja"]), en=str(raw.get("en", "")))


@dataclass(frozen=True)
class Budget:
    """How much training a notebook may do, and how long it may take."""

    name: str
    description: Text
    max_epochs: int | None
    max_steps_per_epoch: int | None
    max_validation_samples: int | None
    cell_timeout_s: int
    notebook_timeout_s: int
    max_total_steps: int | None = None  # optimizer steps of all training together (fit, train_on_batch, loops)

    def caps(self) -> dict[str, Any]:
        """What the kernel harness needs to enforce the budget."""
        return {
            "name": self.name,
            "max_epochs": self.max_epochs,
            "max_steps_per_epoch": self.max_steps_per_epoch,
            "max_validation_samples": self.max_validation_samples,
            "max_total_steps": self.max_total_steps,
        }

    def summary(self, lang: str = "ja") -> str:
        if self.max_epochs is None and self.max_steps_per_epoch is None:
            return t("budget.as_written", lang)
        epochs = self.max_epochs if self.max_epochs is not None else "∞"
        steps = self.max_steps_per_epoch if self.max_steps_per_epoch is not None else "∞"
        caps = t("budget.caps", lang, epochs=epochs, steps=steps)
        total = self.max_total_steps
        return caps + (t("budget.total_steps", lang, total=total) if total else "")


@dataclass(frozen=True)
class RubricItem:
    """One level of a TA-scored check's rubric: picking it gives `points` and adds its stock comment."""

    key: str
    points: int
    description: Text
    comment: Text  # the stock comment the TA may send as is or edit


MAX_RUBRIC_ITEMS = 9  # the review queue picks items with the number keys 1…9


@dataclass(frozen=True)
class CheckSpec:
    id: str
    kind: str
    points: int
    visible: bool
    title: Text
    fail: Text
    hint: Text
    params: dict[str, Any] = field(default_factory=dict)
    rubric: tuple[RubricItem, ...] = ()  # [[checks.rubric]]: for checks a TA scores
    question: str = ""  # the template's heading whose cell holds the question a TA reads while scoring


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    disk_mb: int
    processes: int
    max_evidence_mb: int
    max_output_mb: int
    predict_timeout_min_s: float = 60.0  # the trusted prediction may take factor × the reference's, at least this
    predict_timeout_factor: float = 5.0
    predict_timeout_max_s: float = 180.0  # and never more than this


@dataclass(frozen=True)
class AssignmentSpec:
    id: str
    title: Text
    root: Path  # assignments/<id>/
    template: Path
    reference: Path
    seed: int
    budgets: dict[str, Budget]
    default_budget: str
    limits: Limits
    checks: tuple[CheckSpec, ...]
    source_bytes: bytes  # the spec file itself, for cache keys
    integrity: dict[str, Any] = field(default_factory=dict)  # [integrity]: bounds of grader.judge.integrity

    @property
    def max_score(self) -> int:
        return sum(c.points for c in self.checks)

    def budget(self, name: str) -> Budget:
        try:
            return self.budgets[name]
        except KeyError:
            raise ConfigError(f"unknown budget {name!r}; the spec defines: {', '.join(self.budgets)}") from None


def load_spec(project_root: Path, assignment: str) -> AssignmentSpec:
    """Read `assignments/<assignment>/spec.toml`; references resolve against the project root."""
    root = project_root / "assignments" / assignment
    path = root / "spec.toml"
    if not path.is_file():
        known = sorted(p.parent.name for p in (project_root / "assignments").glob("*/spec.toml"))
        raise ConfigError(f"no spec at {path} (known assignments: {', '.join(known) or 'none'})")
    raw_bytes = path.read_bytes()
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_spec(raw, root=root, project_root=project_root, source_bytes=raw_bytes)


def parse_spec(raw: dict[str, Any], *, root: Path, project_root: Path, source_bytes: bytes = b"") -> AssignmentSpec:
    meta = raw.get("assignment", {})
    where = str(root / "spec.toml")
    try:
        assignment_id = meta["id"]
        budgets = {name: _parse_budget(name, b, where) for name, b in raw["budgets"].items()}
        checks = tuple(_parse_check(c, where) for c in raw["checks"])
        limits = raw.get("limits", {})
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc}") from None
    ids = [c.id for c in checks]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"{where}: duplicate check ids")
    default_budget = meta.get("default_budget", "standard")
    if default_budget not in budgets:
        raise ConfigError(f"{where}: default_budget {default_budget!r} is not defined")
    spec = AssignmentSpec(
        id=assignment_id,
        title=Text.parse(meta.get("title", assignment_id), f"{where} [assignment].title"),
        root=root,
        template=root / meta.get("template", "template.ipynb"),
        reference=project_root / "reference" / assignment_id / meta.get("reference", "reference.ipynb"),
        seed=int(meta.get("seed", 0)),
        budgets=budgets,
        default_budget=default_budget,
        limits=Limits(
            memory_mb=int(limits.get("memory_mb", 8192)),
            disk_mb=int(limits.get("disk_mb", 2048)),
            processes=int(limits.get("processes", 256)),
            max_evidence_mb=int(limits.get("max_evidence_mb", 200)),
            max_output_mb=int(limits.get("max_output_mb", 10)),
            predict_timeout_min_s=float(limits.get("predict_timeout_min_s", 60)),
            predict_timeout_factor=float(limits.get("predict_timeout_factor", 5)),
            predict_timeout_max_s=float(limits.get("predict_timeout_max_s", 180)),
        ),
        checks=checks,
        source_bytes=source_bytes,
        integrity=dict(raw.get("integrity", {})),
    )
    return spec  # whether each check's kind exists is the judge's to say (grader.judge.verdicts)


TOTAL_STEPS_FITS = 3  # without max_total_steps in the spec: three capped fits' worth of steps


def _parse_budget(name: str, raw: dict[str, Any], where: str) -> Budget:
    epochs, steps = raw.get("max_epochs"), raw.get("max_steps_per_epoch")
    total = raw.get("max_total_steps", TOTAL_STEPS_FITS * epochs * steps if epochs and steps else None)
    return Budget(
        name=name,
        description=Text.parse(raw.get("description", name), f"{where} budgets.{name}.description"),
        max_epochs=raw.get("max_epochs"),
        max_steps_per_epoch=raw.get("max_steps_per_epoch"),
        max_validation_samples=raw.get("max_validation_samples"),
        cell_timeout_s=int(raw["cell_timeout_s"]),
        notebook_timeout_s=int(raw["notebook_timeout_s"]),
        max_total_steps=int(total) if total else None,
    )


def _parse_check(raw: dict[str, Any], where: str) -> CheckSpec:
    check_id = raw["id"]
    here = f"{where} check {check_id}"
    return CheckSpec(
        id=check_id,
        kind=raw["kind"],
        points=int(raw["points"]),
        visible=bool(raw.get("visible", True)),
        title=Text.parse(raw["title"], f"{here}.title"),
        fail=Text.parse(raw["fail"], f"{here}.fail"),
        hint=Text.parse(raw.get("hint", {"ja": "", "en": ""}), f"{here}.hint"),
        params=dict(raw.get("params", {})),
        rubric=_parse_rubric(raw.get("rubric", []), int(raw["points"]), here),
        question=str(raw.get("question", "")),
    )


def _parse_rubric(raw: Any, maximum: int, where: str) -> tuple[RubricItem, ...]:
    """[[checks.rubric]] items: unique keys, whole points 0…the check's points, at most nine (keys 1…9)."""
    if not isinstance(raw, list) or len(raw) > MAX_RUBRIC_ITEMS:
        raise ConfigError(f"{where}.rubric: expected a list of at most {MAX_RUBRIC_ITEMS} [[checks.rubric]] items")
    items = []
    for number, item in enumerate(raw, start=1):
        here = f"{where}.rubric[{number}]"
        try:
            key, points = str(item["key"]), item["points"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{here}: missing key {exc}") from None
        if isinstance(points, bool) or not isinstance(points, int) or not 0 <= points <= maximum:
            raise ConfigError(f"{here}: points must be a whole number from 0 to the check's {maximum}, not {points!r}")
        items.append(RubricItem(key=key, points=points, description=Text.parse(item.get("description", key), here),
                                comment=Text.parse(item.get("comment", ""), f"{here}.comment")))
    if len({i.key for i in items}) != len(items):
        raise ConfigError(f"{where}.rubric: duplicate keys")
    return tuple(items)
