"""Where a class's notebooks run: the seam between planning/publishing (grader.batch.grade) and
execution. `LocalExecutor` is local grading (kernels on this machine); grader.batch.cluster's
`DaskExecutor` runs the notebook-side steps on Dask workers and judges here. Either way the
coordinator gets a StudentResult built by grader.engine.pipeline.build_result, so results do not
depend on where a notebook ran.

Nothing here imports Dask: local grading never loads it (`--cluster` imports grader.batch.cluster).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from grader.engine.pipeline import Session, Submission, grade_submission
from grader.results import StudentResult


class Executor(Protocol):
    slots: int | None  # how many notebooks run at once (None: the batch's own `jobs`)

    async def grade(self, submission: Submission, session: Session) -> StudentResult: ...

    async def close(self) -> None: ...


class LocalExecutor:
    """Today's behaviour: every step of grader.engine.pipeline in this process's sandboxed kernels."""

    slots: int | None = None

    async def grade(self, submission: Submission, session: Session) -> StudentResult:
        return await grade_submission(submission, session)

    async def close(self) -> None:
        return None


async def open_executor(*, cluster: str | None, cluster_config: Path | None, session: Session,
                        identity: dict[str, Any], no_sandbox: bool, threads: int | None) -> Executor:
    """LocalExecutor without `cluster`; else a DaskExecutor connected to checked workers."""
    if not cluster:
        return LocalExecutor()
    from grader.batch.cluster import connect  # Dask only under --cluster

    return await connect(cluster, config=cluster_config, session=session, identity=identity,
                         no_sandbox=no_sandbox, threads=threads)
