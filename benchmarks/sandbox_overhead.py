"""What the sandbox costs: per process launch, and per graded notebook.

    .venv/bin/python benchmarks/sandbox_overhead.py [--notebooks 4] [--budget quick] [--rounds 2]

First the fixed cost of one sandboxed process (job setup, bwrap, seccomp, setpriv, teardown with
kill-and-wait and unmount) against a plain one; then the same notebooks graded unsandboxed and
sandboxed, one job at a time, alternating sides each round; seconds per notebook and the ratio.
Not a test: the notebook figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.commands import grade
from grader.isolation.launch import KernelJob, LocalLauncher
from grader.assignment.paths import CACHE_ROOT, DATA_HOME, PROJECT_ROOT


def launch_cost(rounds: int = 8) -> tuple[float, float]:
    """Median seconds to set up a job, run `python -c "import numpy"` in it and tear it down."""
    from grader.isolation.sandbox import SandboxLimits, SandboxPolicy, choose_launcher

    def median_seconds(launcher) -> float:
        times = []
        for _ in range(rounds):
            job = KernelJob(work_dir=Path(tempfile.mkdtemp()), data_dir=DATA_HOME / "datasets" / "fashion-mnist")
            started = time.perf_counter()
            launcher.setup_job(job)
            subprocess.run(launcher.command([sys.executable, "-c", "import numpy"], job),
                           env=launcher.environment(job), check=True)
            launcher.teardown_job(job)
            times.append(time.perf_counter() - started)
            shutil.rmtree(job.work_dir, ignore_errors=True)
        return statistics.median(times)

    boxed = choose_launcher(policy=SandboxPolicy(hidden=[PROJECT_ROOT, PROJECT_ROOT.parent]), limits=SandboxLimits())
    return median_seconds(LocalLauncher()), median_seconds(boxed)


def run(side: str, submissions: Path, budget: str) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{side}-"))
    started = time.perf_counter()
    summary = grade.main(assignment="kadai8", submissions=submissions, out=out, budget=budget, jobs=1,
                         project_root=PROJECT_ROOT, keras_home=DATA_HOME, cache_root=CACHE_ROOT,
                         launcher=LocalLauncher() if side == "none" else None)
    seconds = time.perf_counter() - started
    assert all(r.status == "graded" for r in summary.results), [(r.student, r.status) for r in summary.results]
    shutil.rmtree(out)
    return seconds / len(summary.results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notebooks", type=int, default=4)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    plain, boxed = launch_cost()
    print(f"one process, job setup to teardown: plain {plain:.3f} s, sandboxed {boxed:.3f} s (+{boxed - plain:.3f} s)")
    submissions = Path(tempfile.mkdtemp(prefix="bench-submissions-"))
    for i in range(args.notebooks):
        shutil.copy(PROJECT_ROOT / "submissions" / "s2601001.ipynb", submissions / f"student{i:02d}.ipynb")
    run("sandbox", submissions, args.budget)  # warm-up: reference run cached, page cache filled
    times: dict[str, list[float]] = {"none": [], "sandbox": []}
    for round_number in range(args.rounds):
        for side in (("none", "sandbox") if round_number % 2 == 0 else ("sandbox", "none")):
            times[side].append(run(side, submissions, args.budget))
    none, boxed = statistics.median(times["none"]), statistics.median(times["sandbox"])
    print(f"budget {args.budget}, {args.notebooks} notebooks × {args.rounds} rounds, one job at a time")
    print(f"unsandboxed : {none:6.2f} s per notebook  {times['none']}")
    print(f"sandboxed   : {boxed:6.2f} s per notebook  {times['sandbox']}")
    print(f"overhead    : {boxed - none:+6.2f} s per notebook, ratio {boxed / none:.3f}")
    shutil.rmtree(submissions)


if __name__ == "__main__":
    main()
