"""`grader calibrate`: the reference's accuracy over several seeds (grader.batch.calibrate does the work)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from grader.batch.calibrate import CalibrationSummary, calibrate_all
from grader.errors import ConfigError
from grader.isolation.launch import Launcher


def main(*, assignment: str, budget: str, runs: int = 3, jobs: int | None = None, project_root: Path,
         keras_home: Path, calibration_root: Path, launcher: Launcher | None = None, no_sandbox: bool = False,
         lang: str = "en", on_run: Callable[[dict[str, Any]], None] | None = None) -> CalibrationSummary:
    if runs < 2:
        raise ConfigError("--runs: at least 2 runs are needed to measure a spread")
    return asyncio.run(calibrate_all(
        assignment=assignment, budget=budget, runs=runs, jobs=jobs, project_root=project_root, keras_home=keras_home,
        calibration_root=calibration_root, launcher=launcher, no_sandbox=no_sandbox, lang=lang, on_run=on_run))
