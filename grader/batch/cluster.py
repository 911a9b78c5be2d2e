"""Grading on several machines: the coordinator's half (`grader grade --cluster ADDRESS|slurm`).

The coordinator connects to a Dask scheduler (a running one at ADDRESS, or one it starts itself with
workers as Slurm jobs through dask-jobqueue), checks every worker before it gets work (same grader
source, libraries, assignment, data and a working sandbox: grader.engine.remote.worker_identity) and
sends each notebook to the checked workers only. A worker runs the notebook-side steps in its own
sandbox and returns a bounded bundle; the coordinator checks it, then cross-checks, judges and
builds the result here (grader.engine.pipeline), and grader.batch.grade writes it at once, as local
grading does. A worker lost mid-notebook: the scheduler gives the task to another worker
(Dask's `allowed-failures`); the scheduler lost: ClusterError, results so far stay in the gradebook.
"""

from __future__ import annotations

import logging
import tomllib
import uuid
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.client import FutureCancelledError

from grader.engine.pipeline import (
    Session, StopGrading, StudentRun, Submission, build_result, cross_check, judge_checks, read_submission,
    run_steps,
)
from grader.engine.remote import (
    WorkerTask, apply_bundle, check_bundle, grade_on_worker, identity_differences, stopped, worker_identity,
)
from grader.errors import ClusterError, ConfigError
from grader.i18n import t
from grader.results import StudentResult

log = logging.getLogger("grader.cluster")
CONNECT_TIMEOUT_S = 30
WORKERS_TIMEOUT_S = 120  # for workers to join a scheduler the coordinator started (Slurm queues)


def describe_worker(assignment: str) -> dict[str, Any]:
    """Run on every worker (Client.run) before it gets work."""
    import os

    return {"identity": worker_identity(assignment), "cpus": os.cpu_count() or 1}


async def connect(address: str, *, config: Path | None, session: Session, identity: dict[str, Any],
                  no_sandbox: bool, threads: int | None) -> DaskExecutor:
    """A DaskExecutor on the workers that match this coordinator; ClusterError when none does."""
    lang = session.lang
    client, cluster = await (slurm_client(config, lang) if address == "slurm" else scheduler_client(address, lang))
    try:
        described = await client.run(describe_worker, session.spec.id)
        qualified = check_workers(described, identity, no_sandbox=no_sandbox, lang=lang)
        nthreads = await client.nthreads()
        slots = sum(nthreads.get(w, 1) for w in qualified)
        per_job = threads or max(1, min(described[w]["cpus"] // max(1, nthreads.get(w, 1)) for w in qualified))
    except BaseException:
        await client.close()
        if cluster is not None:
            await cluster.close()
        raise
    log.info("cluster %s: %d worker(s), %d at once, %d thread(s) each", address, len(qualified), slots, per_job)
    return DaskExecutor(client, cluster, qualified, slots=slots, threads=per_job, identity=identity,
                        no_sandbox=no_sandbox)


async def scheduler_client(address: str, lang: str) -> tuple[Any, Any]:
    try:
        client = await Client(address, asynchronous=True, timeout=CONNECT_TIMEOUT_S)
        await client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(t("cluster_no_scheduler", lang, address=address, error=str(exc)[:200])) from None
    return client, None


async def slurm_client(config: Path | None, lang: str) -> tuple[Any, Any]:
    """A scheduler here, workers as Slurm jobs (dask-jobqueue), from the [slurm] table of `config`."""
    from dask_jobqueue import SLURMCluster

    settings = slurm_settings(config, lang)
    cluster: Any = await SLURMCluster(asynchronous=True, **settings.get("cluster", {}))
    cluster.scale(jobs=int(settings.get("jobs", 1)))
    client = await Client(cluster, asynchronous=True)
    try:
        await client.wait_for_workers(int(settings.get("jobs", 1)), timeout=float(settings.get("wait_s", 600)))
    except TimeoutError:
        await client.close()
        await cluster.close()
        raise ClusterError(t("cluster_slurm_no_workers", lang, seconds=settings.get("wait_s", 600))) from None
    return client, cluster


def slurm_settings(config: Path | None, lang: str) -> dict[str, Any]:
    if config is None:
        raise ConfigError(t("cluster_slurm_needs_config", lang))
    try:
        settings = tomllib.loads(config.read_text(encoding="utf-8")).get("slurm")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(t("cluster_config_unreadable", lang, path=config, error=str(exc)[:200])) from None
    if not isinstance(settings, dict):
        raise ConfigError(t("cluster_config_unreadable", lang, path=config, error="no [slurm] table"))
    return settings


def check_workers(described: dict[str, Any], identity: dict[str, Any], *, no_sandbox: bool, lang: str) -> list[str]:
    """The workers that may grade; each refused one is logged with what differs."""
    qualified, refused = [], []
    for address, info in sorted(described.items()):
        differences = identity_differences(identity, info.get("identity") or {}, no_sandbox=no_sandbox)
        if differences:
            refused.append(t("cluster_worker_refused", lang, worker=address, differences="; ".join(differences)))
            log.warning(refused[-1])
        else:
            qualified.append(address)
    if not qualified:
        raise ClusterError(t("cluster_no_worker", lang, count=len(described), refused=" | ".join(refused)))
    return qualified


class DaskExecutor:
    """Notebook-side steps on the checked workers; reading, cross-checking and judging here."""

    def __init__(self, client: Any, cluster: Any, workers: list[str], *, slots: int, threads: int,
                 identity: dict[str, Any], no_sandbox: bool) -> None:
        self.client, self.cluster, self.workers = client, cluster, workers
        self.slots: int | None = slots
        self.threads, self.identity, self.no_sandbox = threads, identity, no_sandbox

    async def grade(self, submission: Submission, session: Session) -> StudentResult:
        run = StudentRun(submission=submission, out_dir=session.out_dir / submission.student)
        lost: list[ClusterError] = []
        worker: dict[str, Any] = {}

        async def on_worker(run: StudentRun, session: Session) -> None:
            bundle = await self.remote(submission, session, lost)
            if bundle is None:
                raise StopGrading("", "")  # the scheduler is gone: nothing is recorded for this student
            apply_bundle(run, bundle)
            worker.update(sandbox=bundle.sandbox, limits=bundle.limits, worker=bundle.worker)
            if stopped(bundle):
                raise StopGrading(bundle.status, bundle.message)

        await run_steps(run, session, (read_submission, on_worker, cross_check, judge_checks))
        if lost:
            raise lost[0]
        result = build_result(run, session)
        result.execution.update(worker)  # the worker's sandbox, its limits, where it ran
        return result

    async def remote(self, submission: Submission, session: Session, lost: list[ClusterError]) -> Any:
        """The worker's bundle, checked; None (and `lost` filled) when the scheduler went away."""
        task = WorkerTask(
            student=submission.student, notebook=submission.path.read_bytes(), assignment=session.spec.id,
            budget=session.budget.name, lang=session.lang, threads=self.threads, no_sandbox=self.no_sandbox,
            identity=self.identity, reference_predict_seconds=(
                session.reference.evaluation.predict_seconds if session.reference else None))
        future = self.client.submit(grade_on_worker, task, key=f"grade-{submission.student}-{uuid.uuid4().hex[:8]}",
                                    workers=self.workers, allow_other_workers=False, pure=False)
        try:
            bundle = await future
        except FutureCancelledError as exc:
            if self.client.status == "running" and "connection-lost" not in str(exc):
                raise
            lost.append(ClusterError(t("cluster_lost", session.lang, student=submission.student)))
            return None
        return check_bundle(bundle, submission.student, session)

    async def close(self) -> None:
        await self.client.close()
        if self.cluster is not None:
            await self.cluster.close()
