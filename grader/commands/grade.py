"""`grader grade`: grade every notebook in SUBMISSIONS into OUT (grader.batch.grade does the work)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable, Iterable

from grader.batch.grade import BatchSummary, GradeRequest, grade_all
from grader.batch.progress import BatchProgress
from grader.isolation.launch import Launcher
from grader.results import StudentResult


def main(*, assignment: str, submissions: Path, out: Path, project_root: Path, keras_home: Path, cache_root: Path,
         budget: str | None = None, jobs: int | None = None, lang: str = "ja", launcher: Launcher | None = None,
         no_sandbox: bool = False, on_result: Callable[[StudentResult], None] | None = None, threads: int | None = None,
         force: bool = False, students: Iterable[str] | None = None, calibration_root: Path | None = None,
         progress: BatchProgress | None = None, cluster: str | None = None,
         cluster_config: Path | None = None) -> BatchSummary:
    """`jobs=None`: as many as the machine fits (cores, memory ÷ the spec's limit per kernel).
    `cluster`: a Dask scheduler's address or "slurm" (with `cluster_config`); None grades here."""
    request = GradeRequest(
        assignment=assignment, submissions=submissions, out=out, project_root=project_root, keras_home=keras_home,
        cache_root=cache_root, budget=budget, jobs=jobs, threads=threads, lang=lang, force=force,
        students=tuple(students or ()), calibration_root=calibration_root, launcher=launcher, no_sandbox=no_sandbox,
        cluster=cluster, cluster_config=cluster_config)
    return asyncio.run(grade_all(request, progress=progress, on_result=on_result))
