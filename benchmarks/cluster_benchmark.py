"""Grading through Dask on this machine: the coordinator's own cost per student and the throughput
with 1 and 2 workers. Prints figures; not a test (numbers depend on load).

    .venv/bin/python benchmarks/cluster_benchmark.py [--submissions submissions] [--budget quick]
                                                     [--workers 1,2] [--keep build/cluster-bench]

For each worker count it starts a real `dask scheduler` and that many `dask worker` processes on
127.0.0.1 (one thread each, this checkout, this machine's data), then runs `grader grade --cluster`
in this process on a fresh output folder and reports:

  * wall time, and students per minute (throughput);
  * the coordinator's CPU time (this process: planning, receiving and checking bundles,
    cross-checking, judging, gradebook, reports; the workers and their kernels are other
    processes), in all and per student, split into setup (until the first result: data, the
    cached reference, connecting, checking workers) and the steady part (first → last result,
    per further student), and of that the per-student report rendering (report.html and its
    figures, grader.gradebook.publish.write_student). Target: ≤ 0.3 s per student.

The reference run is done (and cached) once before any timing, as in class_benchmark.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.assignment.paths import DATA_HOME  # noqa: E402
from grader.commands import grade  # noqa: E402

ASSIGNMENT = "kadai8"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cluster(workers: int, logs: Path) -> tuple[str, list[subprocess.Popen]]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def spawn(name: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=open(logs / f"{name}.log", "wb"),
                                stderr=subprocess.STDOUT)

    processes = [spawn("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                                     "--no-dashboard"])]
    processes += [spawn(f"worker{i}", ["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                                       "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"])
                  for i in range(1, workers + 1)]
    return address, processes


def stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        process.kill()
        process.wait()


RENDERING = {"cpu": 0.0}  # CPU of the per-student report (report.html, figures) inside the steady part


def count_rendering() -> None:
    """Account the per-student report rendering separately (grader.batch.grade.write_student)."""
    import grader.batch.grade as batch

    render = batch.write_student

    def timed(*args, **kwargs):
        started = time.process_time()
        try:
            return render(*args, **kwargs)
        finally:
            RENDERING["cpu"] += time.process_time() - started

    batch.write_student = timed  # type: ignore[assignment]


def one_run(submissions: Path, out: Path, cache: Path, budget: str, workers: int, logs: Path) -> dict:
    address, processes = start_cluster(workers, logs)
    cpu_at_result: list[float] = []
    RENDERING["cpu"] = 0.0
    try:
        cpu0, wall0 = time.process_time(), time.monotonic()
        summary = grade.main(assignment=ASSIGNMENT, submissions=submissions, out=out, budget=budget, threads=1,
                             project_root=ROOT, keras_home=DATA_HOME, cache_root=cache, cluster=address,
                             on_result=lambda _: cpu_at_result.append(time.process_time()))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        stop(processes)
    n = len(summary.executed)
    steady = (cpu_at_result[-1] - cpu_at_result[0]) / (n - 1) if n > 1 else float("nan")
    return {"workers": workers, "students": n, "wall": wall, "cpu": cpu, "setup": cpu_at_result[0] - cpu0,
            "steady": steady, "rendering": RENDERING["cpu"] / max(1, n),
            "statuses": sorted({r.status for r in summary.results})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=Path, default=ROOT / "submissions")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--keep", type=Path, default=None, help="keep the output folders here")
    parser.add_argument("--no-warm", action="store_true", help="the reference cache in --keep is already there")
    args = parser.parse_args()
    count_rendering()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "reference-cache"
    print("reference run (cached, not timed; one student graded locally with it) …", flush=True)
    first = sorted(args.submissions.glob("*.ipynb"))[0].stem
    if not args.no_warm:
        grade.main(assignment=ASSIGNMENT, submissions=args.submissions, out=folder / "warm", budget=args.budget,
                   project_root=ROOT, keras_home=DATA_HOME, cache_root=cache, students=(first,))
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        out = folder / f"out-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        rows.append(one_run(args.submissions, out, cache, args.budget, workers, folder))
        row = rows[-1]
        print(f"{workers} worker(s): {row['students']} students in {row['wall']:.1f} s "
              f"({60 * row['students'] / row['wall']:.2f} students/min); coordinator CPU {row['cpu']:.2f} s "
              f"= {row['cpu'] / row['students']:.3f} s/student (setup {row['setup']:.2f} s, then "
              f"{row['steady']:.3f} s per further student, of which report rendering "
              f"{row['rendering']:.3f} s/student); statuses {row['statuses']}", flush=True)
    if len(rows) == 2:
        print(f"throughput {rows[1]['workers']} vs {rows[0]['workers']} worker(s): "
              f"{rows[0]['wall'] / rows[1]['wall']:.2f}×")
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
