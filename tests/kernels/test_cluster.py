"""Grading through a real Dask scheduler and real Dask workers on 127.0.0.1 (`grade --cluster`).

Each test starts `python -m distributed.cli.dask_scheduler` and worker processes (one thread each,
no nanny: a killed worker stays dead), pointed at the test project and the tiny data set through
GRADER_PROJECT_ROOT / GRADER_KERAS_HOME. Results are compared with the `graded_batch` fixture
(the same notebooks graded locally with one TensorFlow thread per kernel), so nothing executes
twice locally.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader.assignment.spec import load_spec
from grader.commands import grade
from grader.errors import ClusterError
from grader.gradebook.store import Gradebook
from grader.judge.threshold import ACCURACY_KIND

from conftest import FIXTURES, ROOT, free_port

pytestmark = pytest.mark.slow
PYTHON = sys.executable
ACCURACY_CHECKS = {c.id for c in load_spec(ROOT, "kadai8").checks if c.kind == ACCURACY_KIND}


class LocalCluster:
    """A scheduler and named workers as real processes; stopped (by pid) on exit."""

    def __init__(self, folder: Path, *, project: Path, keras_home: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADER_PROJECT_ROOT": str(project),
                    "GRADER_KERAS_HOME": str(keras_home)}
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.folder / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen([PYTHON, "-m", *args], env=env or self.env, stdout=log,
                                                stderr=subprocess.STDOUT, cwd=self.folder)

    def scheduler(self) -> LocalCluster:
        self.start("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                 "--no-dashboard"])
        return self

    def worker(self, name: str, env: dict[str, str] | None = None) -> None:
        self.start(name, ["distributed.cli.dask_worker", self.address, "--name", name, "--nthreads", "1",
                          "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], env)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()


def grade_through(cluster: LocalCluster, names: list[str], folder: Path, project: Path, keras_home: Path,
                  cache: Path):
    submissions = folder / "submissions"
    submissions.mkdir()
    for name in names:
        shutil.copy(FIXTURES / f"{name}.ipynb", submissions / f"{name}.ipynb")
    return grade.main(assignment="kadai8", submissions=submissions, out=folder / "out", budget="quick", threads=1,
                      lang="ja", project_root=project, keras_home=keras_home, cache_root=cache,
                      cluster=cluster.address)


def comparable(result, *, without_evaluation: bool = False) -> dict:
    """What must not depend on where a notebook ran (timings, paths and the worker's name aside).
    `without_evaluation`: also without the trusted evaluation and the accuracy check, for a student
    whose model's prediction hit its time limit on one side (seen at load average 10 on 2 cores:
    prediction of the tiny model took 30–60 s against a 60 s limit); everything else must still agree."""
    evaluation = {k: v for k, v in (result.evaluation or {}).items() if k != "predict_seconds"}
    checks = {c.id: (c.status, c.points, c.expected, c.actual, c.message) for c in result.checks
              if not (without_evaluation and c.id in ACCURACY_CHECKS)}
    return {"status": result.status, "message": result.message, "checks": checks, "notes": result.notes,
            **({} if without_evaluation else {"score": result.score, "evaluation": evaluation})}


def same_results(local: dict, remote: dict, names: list[str]) -> None:
    """Identical results; a prediction stopped by its time limit (load) on either side leaves out only
    what depends on it, and at least one student must be compared in full."""
    def hit(result) -> bool:
        return bool((result.evaluation or {}).get("predict_timed_out"))

    loaded = {s for s in names if hit(local[s]) or hit(remote[s])}
    assert len(loaded) < len(names), "every prediction hit its time limit: the machine is too loaded to compare"
    assert ({s: comparable(remote[s], without_evaluation=s in loaded) for s in names}
            == {s: comparable(local[s], without_evaluation=s in loaded) for s in names})


def stored_rows(out: Path) -> dict[str, int]:
    with Gradebook.open(out) as book:
        return {student: 1 for student in book.results("kadai8")}


def test_a_class_graded_on_two_workers_equals_local_grading(graded_batch, test_project, tiny_keras_home,
                                                            reference_cache, tmp_path):
    local, _ = graded_batch
    names = ["correct", "integer_labels", "error_midway"]
    with LocalCluster(tmp_path, project=test_project, keras_home=tiny_keras_home).scheduler() as cluster:
        cluster.worker("w1")
        cluster.worker("w2")
        summary = grade_through(cluster, names, tmp_path, test_project, tiny_keras_home, reference_cache)
    remote = {r.student: r for r in summary.results}
    same_results(local, remote, names)
    assert {remote[s].execution["sandbox"] for s in names} == {local["correct"].execution["sandbox"]}
    assert all((tmp_path / "out" / s / "executed.ipynb").is_file() for s in names)
    assert (tmp_path / "out" / "correct" / "evidence").is_dir()
    assert stored_rows(tmp_path / "out") == {s: 1 for s in names}


def kill_when_running_a_kernel(cluster: LocalCluster, names: list[str], killed: list[str]) -> None:
    """SIGKILL the first worker seen with a Jupyter kernel among its descendants (mid-notebook)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not killed:
        for name in names:
            process = cluster.processes[name]
            if process.poll() is None and runs_a_kernel(process.pid):
                time.sleep(2)  # well inside the notebook: its first cells have run
                process.send_signal(signal.SIGKILL)
                killed.append(name)
                return
        time.sleep(0.5)


def runs_a_kernel(pid: int) -> bool:
    import psutil

    try:
        return any("ipykernel" in " ".join(child.cmdline()) for child in psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return False


def test_a_worker_killed_mid_notebook_loses_nothing(graded_batch, test_project, tiny_keras_home, reference_cache,
                                                    tmp_path):
    local, _ = graded_batch
    names = ["correct", "no_discussion"]
    killed: list[str] = []
    with LocalCluster(tmp_path, project=test_project, keras_home=tiny_keras_home).scheduler() as cluster:
        cluster.worker("w1")
        cluster.worker("w2")
        killer = threading.Thread(target=kill_when_running_a_kernel, args=(cluster, ["w1", "w2"], killed))
        killer.start()
        summary = grade_through(cluster, names, tmp_path, test_project, tiny_keras_home, reference_cache)
        killer.join()
    assert len(killed) == 1
    remote = {r.student: r for r in summary.results}
    same_results(local, remote, names)
    assert stored_rows(tmp_path / "out") == {s: 1 for s in names}
    killed_pid = str(cluster.processes[killed[0]].pid)
    assert all(not r.execution["worker"].endswith(f":{killed_pid}") for r in summary.results)  # rerun elsewhere


def test_a_worker_with_other_grader_code_is_refused_with_what_differs(test_project, tiny_keras_home,
                                                                     reference_cache, tmp_path):
    changed = tmp_path / "other-checkout"
    shutil.copytree(ROOT / "grader", changed / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    with open(changed / "grader" / "results.py", "a", encoding="utf-8") as handle:
        handle.write("\n# a local edit on that machine\n")
    with LocalCluster(tmp_path, project=test_project, keras_home=tiny_keras_home).scheduler() as cluster:
        cluster.worker("stale", env={**cluster.env, "PYTHONPATH": str(changed)})
        with pytest.raises(ClusterError) as refused:
            grade_through(cluster, ["correct"], tmp_path, test_project, tiny_keras_home, reference_cache)
    message = str(refused.value)
    assert "grader_source" in message and "tcp://127.0.0.1:" in message  # which worker, and what differs
    assert "data" not in message.replace("data fingerprint", "")  # only what differs is named
    assert refused.value.exit_code == 6
    with Gradebook.open(tmp_path / "out") as book:
        assert book.results("kadai8") == {}  # nothing graded, nothing recorded



def test_a_scheduler_gone_mid_run_stops_with_a_clear_error_and_keeps_the_gradebook(test_project, tiny_keras_home,
                                                                                 reference_cache, tmp_path):
    killed: list[str] = []
    with LocalCluster(tmp_path, project=test_project, keras_home=tiny_keras_home).scheduler() as cluster:
        cluster.worker("w1")
        killer = threading.Thread(target=kill_scheduler_when_a_kernel_runs, args=(cluster, killed))
        killer.start()
        with pytest.raises(ClusterError) as lost:
            grade_through(cluster, ["correct"], tmp_path, test_project, tiny_keras_home, reference_cache)
        killer.join()
    assert killed == ["scheduler"] and lost.value.exit_code == 6
    assert "correct" in str(lost.value)  # names the student in flight; the message says how to resume
    with Gradebook.open(tmp_path / "out") as book:
        assert book.runs()[-1].status == "interrupted" and book.results("kadai8") == {}


def kill_scheduler_when_a_kernel_runs(cluster: LocalCluster, killed: list[str]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if runs_a_kernel(cluster.processes["w1"].pid):
            cluster.processes["scheduler"].send_signal(signal.SIGKILL)
            killed.append("scheduler")
            return
        time.sleep(0.5)


def slurm_is_up() -> bool:
    """A Slurm with an idle node here (benchmarks/slurm_one_node.sh brings one up from Debian's packages)."""
    if not shutil.which("slurmctld") or not shutil.which("sinfo"):
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout
    return "idle" in states or "mixed" in states


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_is_up(), reason="no Slurm with an idle node here (run benchmarks/slurm_one_node.sh "
                                              "as root first)")
def test_a_class_graded_through_slurm_equals_local_grading(graded_batch, test_project, tiny_keras_home,
                                                           reference_cache, tmp_path):
    local, _ = graded_batch
    names = ["correct", "integer_labels"]
    config = tmp_path / "cluster.toml"
    config.write_text(f"""
[slurm]
jobs = 2
wait_s = 300

[slurm.cluster]
cores = 1
processes = 1
memory = "3GiB"
walltime = "00:30:00"
queue = "debug"
python = "{PYTHON}"
log_directory = "{tmp_path / 'slurm-logs'}"
job_script_prologue = ["export PYTHONPATH={ROOT}", "export GRADER_PROJECT_ROOT={test_project}",
                       "export GRADER_KERAS_HOME={tiny_keras_home}"]
""", encoding="utf-8")
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for name in names:
        shutil.copy(FIXTURES / f"{name}.ipynb", submissions / f"{name}.ipynb")
    summary = grade.main(assignment="kadai8", submissions=submissions, out=tmp_path / "out", budget="quick",
                         threads=1, lang="ja", project_root=test_project, keras_home=tiny_keras_home,
                         cache_root=reference_cache, cluster="slurm", cluster_config=config)
    remote = {r.student: r for r in summary.results}
    same_results(local, remote, names)
    assert stored_rows(tmp_path / "out") == {s: 1 for s in names}
