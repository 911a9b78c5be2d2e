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

import asyncio
import logging
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.client import FutureCancelledError

from grader.engine.pipeline import (
    JUDGING_STEPS, Session, StopGrading, StudentRun, Submission, build_result, read_submission, run_steps,
)
from grader.engine.remote import (
    WorkerTask, apply_bundle, check_bundle, grade_on_worker, identity_differences, stopped, worker_identity,
)
from grader.errors import ClusterError, ConfigError
from grader.i18n import t
from grader.results import StudentResult

log = logging.getLogger("grader.cluster")
CONNECT_TIMEOUT_S = 30
WORKERS_TIMEOUT_S = 120  # for a first worker to join; and for one to come back when every accepted one is gone
CLOSE_TIMEOUT_S = 10
DASK_CONNECTED = "running"  # distributed.Client.status while connected
POLL_S = 3.0  # how often a waiting task looks for workers that joined or left


def describe_worker(assignment: str) -> dict[str, Any]:
    """Run on every worker (Client.run) before it gets work."""
    import os

    return {"identity": worker_identity(assignment), "cpus": os.cpu_count() or 1}


async def connect(address: str, *, config: Path | None, session: Session, identity: dict[str, Any],
                  no_sandbox: bool, threads: int | None) -> DaskExecutor:
    """A DaskExecutor on the workers that match this coordinator; ClusterError when none does."""
    lang = session.lang
    client, cluster = await (slurm_client(config, lang) if address == "slurm" else scheduler_client(address, lang))
    executor = DaskExecutor(client, cluster, assignment=session.spec.id, threads=threads, identity=identity,
                            no_sandbox=no_sandbox, lang=lang)
    try:
        await settle(client)
        await executor.refresh()
        if not executor.workers:
            raise ClusterError(t("cluster_no_worker", lang, count=len(executor.refused),
                                 refused=" | ".join(executor.refused.values())))
    except BaseException:
        await executor.close()
        raise
    log.info("cluster %s: %d worker(s), %d at once, %d thread(s) each", address, len(executor.workers),
             executor.slots, executor.threads)
    return executor


async def settle(client: Any, quiet_s: float = 2.0, max_s: float = 15.0) -> None:
    """Wait until no more workers join for `quiet_s` (workers started with the scheduler register over
    a few seconds); later ones are checked when they appear (DaskExecutor.refresh)."""
    started, seen, since = time.monotonic(), -1, time.monotonic()
    while time.monotonic() - started < max_s:
        count = len(await client.nthreads())
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        await asyncio.sleep(0.5)


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


def worker_refusal(address: str, info: dict[str, Any], identity: dict[str, Any], *, no_sandbox: bool,
                   lang: str) -> str:
    """"" when the worker may grade; else the line that says what differs."""
    differences = identity_differences(identity, info.get("identity") or {}, no_sandbox=no_sandbox)
    return t("cluster_worker_refused", lang, worker=address, differences="; ".join(differences)) if differences else ""


async def wait_for(future: Any) -> Any:
    return await future


class DaskExecutor:
    """Notebook-side steps on the checked workers; reading, cross-checking and judging here."""

    def __init__(self, client: Any, cluster: Any, *, assignment: str, threads: int | None, identity: dict[str, Any],
                 no_sandbox: bool, lang: str) -> None:
        self.client, self.cluster, self.assignment, self.lang = client, cluster, assignment, lang
        self.requested_threads, self.threads = threads, threads or 1
        self.identity, self.no_sandbox = identity, no_sandbox
        self.workers: dict[str, int] = {}  # accepted worker → its Dask threads
        self.refused: dict[str, str] = {}  # refused worker → why
        self.cores: dict[str, int] = {}  # accepted worker → cores per Dask thread
        self.slots: int | None = 0
        self.looking = asyncio.Lock()  # one look at a time (every waiting task looks)

    async def refresh(self) -> None:
        """Check workers that joined since the last look; forget those gone."""
        async with self.looking:
            await self.look()

    async def look(self) -> None:
        nthreads = await self.client.nthreads()
        for gone in set(self.workers) - set(nthreads):
            del self.workers[gone]
        new = [w for w in nthreads if w not in self.workers and w not in self.refused]
        if new:
            described = await self.client.run(describe_worker, self.assignment, workers=new, on_error="return")
            for address, info in described.items():
                refusal = (worker_refusal(address, info, self.identity, no_sandbox=self.no_sandbox, lang=self.lang)
                           if isinstance(info, dict) else "")
                if refusal or not isinstance(info, dict):
                    self.refused[address] = refusal or f"{address}: {info!r}"[:300]
                    log.warning(self.refused[address])
                else:
                    self.workers[address] = nthreads[address]
                    self.cores[address] = max(1, int(info.get("cpus", 1)) // max(1, nthreads[address]))
        # TensorFlow threads per notebook: asked for, else what the smallest accepted worker has per slot
        self.threads = self.requested_threads or min([self.cores[w] for w in self.workers] or [1])
        self.slots = max(self.slots or 0, sum(self.workers.values()))

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

        await run_steps(run, session, (read_submission, on_worker, *JUDGING_STEPS))
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
        try:
            bundle = await self.run_task(task)
        except FutureCancelledError as exc:
            if self.connected() and "connection-lost" not in str(exc):
                raise
            lost.append(ClusterError(t("cluster_lost", session.lang, student=submission.student)))
            return None
        except ClusterError as exc:
            lost.append(exc)
            return None
        return check_bundle(bundle, submission.student, session)

    async def run_task(self, task: WorkerTask) -> Any:
        """The task on accepted workers only; submitted again when new accepted workers join while it
        waits with none of its own left; ClusterError after WORKERS_TIMEOUT_S without any."""
        alone_since = None
        while True:
            allowed = list(self.workers)
            future = self.client.submit(grade_on_worker, task, key=f"grade-{task.student}-{uuid.uuid4().hex[:8]}",
                                        workers=allowed, allow_other_workers=False, pure=False)
            waiter = asyncio.ensure_future(wait_for(future))
            while not waiter.done():
                await asyncio.wait({waiter}, timeout=POLL_S)
                if waiter.done():
                    break
                try:
                    await self.refresh()
                except OSError:  # the scheduler is gone (CommClosedError is an OSError)
                    waiter.cancel()
                    raise ClusterError(t("cluster_lost", self.lang, student=task.student)) from None
                if set(allowed) & set(self.workers):
                    alone_since = None
                    continue
                if self.workers:  # its workers are gone, others came: it goes to them
                    waiter.cancel()
                    await self.client.cancel(future)
                    break
                alone_since = alone_since or time.monotonic()
                if time.monotonic() - alone_since > WORKERS_TIMEOUT_S:
                    waiter.cancel()
                    raise ClusterError(t("cluster_no_worker_left", self.lang, seconds=WORKERS_TIMEOUT_S,
                                         refused=" | ".join(self.refused.values()) or "—"))
            if not waiter.cancelled():
                return waiter.result()

    def connected(self) -> bool:
        """The Dask client is still connected to its scheduler (Dask's own state word, not a grading status)."""
        return str(self.client.status) == DASK_CONNECTED

    async def close(self) -> None:
        """Disconnect (and stop a Slurm cluster this run started); never hangs on a scheduler that is gone."""
        try:
            await asyncio.wait_for(self.client.close(), CLOSE_TIMEOUT_S)
        except (TimeoutError, OSError):
            log.warning("the Dask client did not close cleanly")
        if self.cluster is not None:
            await self.cluster.close()
