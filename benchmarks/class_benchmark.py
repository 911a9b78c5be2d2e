"""Grading a whole class: how fast, against what. Prints ratios; not a test (numbers depend on load).

    .venv/bin/python benchmarks/class_benchmark.py [--students 20] [--budget standard] [--jobs 2]
                                                   [--nbgrader-venv /tmp/nbg] [--skip-nbgrader]

One run measures, on one generated class (the reference solution with per-student variations: a
different 考察, some with batch_size=32), all with the same training budget:

  (a) raw parallel execution of the notebooks with nbclient, no grading (same kernels at once,
      same TensorFlow threads per kernel, the budget applied by a 20-line `fit` cap loaded at
      kernel start) vs `grader grade` on a fresh output folder → overhead ratio (target ≤ 1.05), and
      the grader's own cost per student, step by step (from each result's `execution.steps` and
      `execution.predictor`, and the reports drawn once more, timed): collecting evidence,
      trusted evaluation (what a student's slot waits for after execution), cross-checks,
      judging, releasing the job, drawing the report (off the slot: a report thread);
  (b) nbgrader's `autograde` on the same class (the assignment authored in nbgrader's format:
      solution cells and autograder test cells asserting len(g), batch shapes, parameter count,
      split sizes, test accuracy; the same `fit` cap through `Execute.extra_arguments`) vs
      `grader grade` → speed ratio (target ≥ 2);
  (c) `grader grade` again on the unchanged class → seconds per student (target < 1).

nbgrader runs from its own virtual environment (default /tmp/nbg):
    python3 -m venv /tmp/nbg && /tmp/nbg/bin/pip install nbgrader tensorflow-cpu==2.21.0 keras==3.15.1 \
        scikit-learn matplotlib
The reference run is done (and cached) before any timing: it is paid once per data set and budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.isolation.machine import cpu_count  # noqa: E402
from grader.assignment.paths import CACHE_ROOT, DATA_HOME  # noqa: E402
from grader.assignment.spec import load_spec  # noqa: E402

ASSIGNMENT = "kadai8"


# ---------------------------------------------------------------- the class
def solution_cells() -> list:
    return nbformat.read(ROOT / "reference" / ASSIGNMENT / "reference.ipynb", as_version=4).cells


NBGRADER_TESTS = {  # after the cell whose source contains the key: (grade_id, points, test source)
    "len(g)": ("test_generator_length", 5, "assert len(g) == 3750, len(g)"),
    "g[0][1]": ("test_batch_shapes", 10,
                "assert g[0][0].shape == (16, 28, 28, 1), g[0][0].shape\nassert g[0][1].shape == (16, 10), g[0][1].shape"),
    "model.add(Dense": ("test_parameter_count", 5, "assert model.count_params() == 144266, model.count_params()"),
    "train_test_split(": ("test_split_sizes", 5,
                          "assert x_train2.shape == (48000, 28, 28, 1) and x_valid.shape == (12000, 28, 28, 1)"),
    "model.evaluate(": ("test_accuracy", 10, "assert score[1] >= 0.2, score[1]"),
}


def nbgrader_source() -> nbformat.NotebookNode:
    """The reference solution in nbgrader's format: solution cells, then locked autograder tests."""
    cells = []
    for index, cell in enumerate(solution_cells()):
        cell = nbformat.from_dict(json.loads(json.dumps(cell)))
        meta = {"grade": False, "grade_id": f"cell{index:02d}", "locked": cell.cell_type == "markdown",
                "schema_version": 3, "solution": cell.cell_type == "code", "task": False}
        if cell.cell_type == "code":
            cell.source = f"### BEGIN SOLUTION\n{cell.source}\n### END SOLUTION"
        cell.metadata["nbgrader"] = meta
        cells.append(cell)
        for key, (grade_id, points, test) in NBGRADER_TESTS.items():
            if cell.cell_type == "code" and key in cell.source:
                tests = nbformat.v4.new_code_cell(test)
                tests.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": points,
                                              "schema_version": 3, "solution": False, "task": False}
                cells.append(tests)
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def student_notebook(source: nbformat.NotebookNode, number: int) -> nbformat.NotebookNode:
    """A filled-in submission: solution markers gone, the student's own 考察, every 5th with batch_size=32."""
    notebook = nbformat.from_dict(json.loads(json.dumps(source)))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = cell.source.replace("### BEGIN SOLUTION\n", "").replace("\n### END SOLUTION", "")
            if number % 5 == 4:
                cell.source = cell.source.replace("batch_size=16, shuffle=False", "batch_size=32, shuffle=False")
    discussion = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "markdown" and c.source.strip() == "## 考察")
    notebook.cells[discussion + 1].source += f"\n\n（学生 {number:02d} の考察: 回転と上下反転は向きの情報を壊す。）"
    nbformat.validate(notebook)
    return notebook


def make_class(folder: Path, students: int) -> tuple[Path, nbformat.NotebookNode]:
    source = nbgrader_source()
    (folder / "class").mkdir(parents=True)
    for number in range(students):
        nbformat.write(student_notebook(source, number), folder / "class" / f"s{number:02d}.ipynb")
    return folder / "class", source


# ---------------------------------------------------------------- the same budget everywhere
def budget_shim(folder: Path, caps: dict, seed: int) -> Path:
    """A module loaded at kernel start (exec_lines) that caps `fit` like the grader's budget does."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_budget.py").write_text(textwrap.dedent(f"""
        import inspect, math
        import keras
        keras.utils.set_random_seed({seed})
        CAPS = {caps!r}
        _fit = keras.Model.fit
        _signature = inspect.signature(_fit)

        def fit(self, *args, **kwargs):
            bound = _signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            params.pop("self")
            if CAPS["max_epochs"] and (params.get("epochs") or 1) > CAPS["max_epochs"]:
                params["epochs"] = CAPS["max_epochs"]
            steps = params.get("steps_per_epoch")
            if isinstance(steps, float):
                params["steps_per_epoch"] = steps = math.ceil(steps)
            if CAPS["max_steps_per_epoch"] and (steps is None or steps > CAPS["max_steps_per_epoch"]):
                params["steps_per_epoch"] = CAPS["max_steps_per_epoch"]
            validation = params.get("validation_data")
            if CAPS["max_validation_samples"] and isinstance(validation, (tuple, list)):
                params["validation_data"] = tuple(v[:CAPS["max_validation_samples"]] for v in validation)
            return _fit(self, **params)

        keras.Model.fit = fit
        """), encoding="utf-8")
    return folder


def kernel_env(shim: Path, threads: int | None) -> dict[str, str]:
    env = {**os.environ, "KERAS_HOME": str(DATA_HOME), "PYTHONPATH": str(shim), "MPLBACKEND": "Agg",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=str(threads))
    return env


EXEC_LINES = ["--IPKernelApp.exec_lines=[\"import bench_budget\"]"]


# ---------------------------------------------------------------- (a) raw nbclient
async def raw_execute(notebooks: list[Path], *, jobs: int, env: dict[str, str], timeout: int) -> list[float]:
    limit = asyncio.Semaphore(jobs)

    async def one(path: Path) -> float:
        async with limit:
            notebook = nbformat.read(path, as_version=4)
            work = Path(tempfile.mkdtemp(prefix="bench-raw-"))
            started = time.perf_counter()
            client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                                    extra_arguments=EXEC_LINES, resources={"metadata": {"path": str(work)}})
            client.km = client.create_kernel_manager()
            # the kernel's own stdout/stderr go nowhere, as the grader sends them to a log file
            await client.async_start_new_kernel(env=env, cwd=str(work), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
            await client.async_start_new_kernel_client()
            await client.async_execute(cleanup_kc=True)
            shutil.rmtree(work, ignore_errors=True)
            return time.perf_counter() - started

    return list(await asyncio.gather(*(one(p) for p in notebooks)))


# ---------------------------------------------------------------- grader
def grader_grade(submissions: Path, out: Path, *, budget: str, jobs: int) -> tuple[float, str]:
    command = [sys.executable, "-m", "grader", "grade", "--assignment", ASSIGNMENT, "--submissions", str(submissions),
               "--out", str(out), "--budget", budget, "--jobs", str(jobs)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"grader grade failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


# ---------------------------------------------------------------- (b) nbgrader
def nbgrader_autograde(venv: Path, folder: Path, source: nbformat.NotebookNode, submissions: Path, *,
                       shim: Path, timeout: int) -> tuple[float, str]:
    course = folder / "nbgrader-course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(source, course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    (course / "nbgrader_config.py").write_text(textwrap.dedent(f"""
        c = get_config()
        c.CourseDirectory.course_id = "medai"
        c.CourseDirectory.root = {str(course)!r}
        c.Execute.timeout = {timeout}
        c.Execute.extra_arguments = {EXEC_LINES!r}
        """), encoding="utf-8")
    nbgrader = str(venv / "bin" / "nbgrader")
    env = kernel_env(shim, None)  # nbgrader runs one notebook at a time: TensorFlow may use every core
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env.pop("VIRTUAL_ENV", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([nbgrader, *args], cwd=course, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    run("db", "assignment", "add", ASSIGNMENT)
    run("generate_assignment", ASSIGNMENT, "--force")
    for path in sorted(submissions.glob("*.ipynb")):
        target = course / "submitted" / path.stem / ASSIGNMENT
        target.mkdir(parents=True)
        shutil.copy(path, target / f"{ASSIGNMENT}.ipynb")
        (target / "timestamp.txt").write_text("2026-07-01 12:00:00.000000 UTC")
        run("db", "student", "add", path.stem)
    started = time.perf_counter()
    done = run("autograde", ASSIGNMENT)
    seconds = time.perf_counter() - started
    run("export", "--to", str(folder / "nbgrader-grades.csv"))
    return seconds, done.stderr[-2000:]


def nbgrader_scores(csv_path: Path) -> dict[str, str]:
    import csv

    with open(csv_path, encoding="utf-8") as handle:
        return {row["student_id"]: row["score"] for row in csv.DictReader(handle)}


# ---------------------------------------------------------------- the grader's own cost per student
STEPS = ("start_predictor", "collect_evidence", "evaluate_model", "cross_check", "judge_checks", "release_job")


def step_costs(out: Path) -> dict[str, list[float]]:
    """Seconds per student of each grader step (the executed results in the gradebook), the predictor's
    own figures, and each report drawn again (timed here, as `grade`'s report thread draws it)."""
    from grader.assignment.content import load_content
    from grader.gradebook.final import Reviews
    from grader.gradebook.publish import write_student
    from grader.results import StudentResult

    spec = load_spec(ROOT, ASSIGNMENT)
    content, reviews = load_content(spec.root), Reviews.load(out, spec.id)
    costs: dict[str, list[float]] = {name: [] for name in (*STEPS, "execute", "predictor_ready_cpu",
                                                            "predictor_evaluate_cpu", "render_report")}
    rows = sqlite3.connect(out / "gradebook.sqlite").execute("SELECT result_json FROM results").fetchall()
    for (raw,) in rows:
        result = StudentResult.from_dict(json.loads(raw))
        steps = result.execution.get("steps") or {}
        for name in (*STEPS, "execute"):
            if name in steps:
                costs[name].append(steps[name])
        predictor = result.execution.get("predictor") or {}
        for key, name in (("ready_cpu_seconds", "predictor_ready_cpu"),
                          ("evaluate_cpu_seconds", "predictor_evaluate_cpu")):
            if isinstance(predictor.get(key), (int, float)):
                costs[name].append(predictor[key])
        started = time.perf_counter()
        write_student(reviews.final(result), out / result.student, content=content)
        costs["render_report"].append(time.perf_counter() - started)
    return costs


def print_step_costs(out: Path) -> None:
    costs = step_costs(out)
    print("    grader's own cost per student (mean / max s; CPU s for the predictor):")
    for name, values in costs.items():
        if values:
            print(f"      {name:<24} {sum(values) / len(values):6.2f} / {max(values):6.2f}")
    after = [a + b for a, b in zip(costs["collect_evidence"], costs["evaluate_model"])]
    if after:
        print(f"      execution finished → evaluation done: {sum(after) / len(after):.2f} s per student "
              f"(max {max(after):.2f}; target ≤ 1.5)")


# ---------------------------------------------------------------- main
def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--budget", default="standard")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--nbgrader-venv", type=Path, default=Path("/tmp/nbg"))
    parser.add_argument("--skip-nbgrader", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated class and outputs")
    args = parser.parse_args()

    spec = load_spec(ROOT, ASSIGNMENT)
    budget = spec.budget(args.budget)
    threads = max(1, cpu_count() // args.jobs)
    folder = Path(tempfile.mkdtemp(prefix="bench-class-"))
    submissions, source = make_class(folder, args.students)
    notebooks = sorted(submissions.glob("*.ipynb"))
    shim = budget_shim(folder / "shim", budget.caps(), spec.seed)
    print(f"class: {len(notebooks)} notebooks in {submissions}; budget {budget.name} ({budget.summary('en')}); "
          f"{args.jobs} kernels at once × {threads} TensorFlow threads; {load()}", flush=True)

    # Warm-up: the reference run is cached (paid once per data set and budget), the page cache is filled.
    warm = folder / "warm"
    warm.mkdir()
    shutil.copy(notebooks[0], warm / notebooks[0].name)
    seconds, _ = grader_grade(warm, folder / "out-warm", budget=budget.name, jobs=1)
    print(f"warm-up (reference cached in {CACHE_ROOT}, one notebook graded): {seconds:.1f} s", flush=True)

    timings: dict[str, float] = {}
    print(f"(a) raw nbclient, {args.jobs} at once … ", end="", flush=True)
    started = time.perf_counter()
    per_notebook = asyncio.run(raw_execute(notebooks, jobs=args.jobs, env=kernel_env(shim, threads),
                                           timeout=budget.cell_timeout_s))
    timings["raw"] = time.perf_counter() - started
    print(f"{timings['raw']:.1f} s (per notebook {min(per_notebook):.1f}–{max(per_notebook):.1f} s); {load()}", flush=True)

    print(f"    grader grade --jobs {args.jobs} (fresh output) … ", end="", flush=True)
    timings["grader"], stdout = grader_grade(submissions, folder / "out", budget=budget.name, jobs=args.jobs)
    print(f"{timings['grader']:.1f} s; {load()}", flush=True)
    print(textwrap.indent(stdout.strip().splitlines()[-2] + "\n" + stdout.strip().splitlines()[-1], "      "))

    print("(c) grader grade again, unchanged class … ", end="", flush=True)
    timings["regrade"], stdout = grader_grade(submissions, folder / "out", budget=budget.name, jobs=args.jobs)
    print(f"{timings['regrade']:.2f} s", flush=True)
    assert f"{len(notebooks)} notebooks (0 executed" in stdout, stdout

    if not args.skip_nbgrader:
        print("(b) nbgrader autograde (one notebook at a time) … ", end="", flush=True)
        timings["nbgrader"], _ = nbgrader_autograde(args.nbgrader_venv, folder, source, submissions, shim=shim,
                                                    timeout=budget.cell_timeout_s)
        scores = nbgrader_scores(folder / "nbgrader-grades.csv")
        print(f"{timings['nbgrader']:.1f} s ({len(scores)} students scored); {load()}", flush=True)

    graded = folder / "out" / "gradebook.sqlite"
    rows = sqlite3.connect(graded).execute("SELECT status, count(*) FROM results GROUP BY status").fetchall()
    print(f"\ngrader statuses: {dict(rows)}")
    print("\n--- results")
    print(f"(a) overhead  grader / raw nbclient      = {timings['grader']:.1f} / {timings['raw']:.1f} s "
          f"= {timings['grader'] / timings['raw']:.3f}   (target ≤ 1.05)")
    print_step_costs(folder / "out")
    if "nbgrader" in timings:
        print(f"(b) speed     nbgrader / grader          = {timings['nbgrader']:.1f} / {timings['grader']:.1f} s "
              f"= {timings['nbgrader'] / timings['grader']:.2f}   (target ≥ 2)")
    print(f"(c) regrade   unchanged class            = {timings['regrade']:.2f} s / {len(notebooks)} "
          f"= {timings['regrade'] / len(notebooks):.3f} s per student   (target < 1)")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept: {folder}")


if __name__ == "__main__":
    main()
