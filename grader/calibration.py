"""Calibration: how much the reference's test accuracy varies from seed to seed, stored per budget.

`grader calibrate` runs the reference notebook N times with seeds seed, seed+1, …, evaluates each
saved model through the same trusted path as students' (grader.evaluate), and writes

    <calibration root>/<assignment>/<budget>-<key>.json
      {"runs": [{"seed", "accuracy", "seconds"}…], "mean", "std", "n", "key", "versions", …}

The key covers what the accuracy depends on (reference notebook, harness, budget caps, library
versions, data), not the spec's seed or its check rules, so editing the threshold rule does not
invalidate a calibration. `grade` looks up the file for its own key; the spec's rule turns it into
a threshold (grader.checks.training.threshold_for).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grader.kernel import harness_source
from grader.reference import library_versions
from grader.spec import AssignmentSpec, Budget

log = logging.getLogger("grader.calibration")


def calibration_key(spec: AssignmentSpec, budget: Budget, data_fingerprint: str) -> str:
    digest = hashlib.sha256()
    for part in (
        spec.reference.read_bytes(),
        harness_source(),
        json.dumps(budget.caps(), sort_keys=True).encode(),
        json.dumps(library_versions(), sort_keys=True).encode(),
        data_fingerprint.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


def calibration_path(root: Path, spec: AssignmentSpec, budget: Budget, data_fingerprint: str) -> Path:
    return root / spec.id / f"{budget.name}-{calibration_key(spec, budget, data_fingerprint)}.json"


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of the runs that produced an accuracy."""
    accuracies = [float(r["accuracy"]) for r in runs if r.get("accuracy") is not None]
    return {
        "n": len(accuracies),
        "mean": round(statistics.fmean(accuracies), 4) if accuracies else None,
        "std": round(statistics.stdev(accuracies), 4) if len(accuracies) >= 2 else 0.0,
        "min": round(min(accuracies), 4) if accuracies else None,
        "max": round(max(accuracies), 4) if accuracies else None,
    }


def save_calibration(path: Path, *, spec: AssignmentSpec, budget: Budget, data_fingerprint: str,
                     runs: list[dict[str, Any]]) -> dict[str, Any]:
    info = {
        "assignment": spec.id,
        "budget": budget.name,
        "caps": budget.caps(),
        "key": calibration_key(spec, budget, data_fingerprint),
        "data_fingerprint": data_fingerprint,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": sorted(runs, key=lambda r: r["seed"]),
        **summarize(runs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    temporary.replace(path)
    return {**info, "file": str(path)}


def load_calibration(root: Path | None, spec: AssignmentSpec, budget: Budget,
                     data_fingerprint: str) -> dict[str, Any] | None:
    """The calibration for exactly these inputs, or None (none made, or made for other inputs)."""
    if root is None:
        return None
    path = calibration_path(root, spec, budget, data_fingerprint)
    if not path.is_file():
        others = sorted((root / spec.id).glob(f"{budget.name}-*.json")) if (root / spec.id).is_dir() else []
        if others:
            log.warning("calibration for budget %s exists only for other data/versions (%s): not used",
                        budget.name, ", ".join(p.name for p in others))
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("calibration %s unreadable (%s): not used", path, exc)
        return None
    if info.get("mean") is None:
        return None
    return {**info, "file": str(path)}
