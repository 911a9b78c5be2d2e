"""Shared fixtures of every kind of test (tests/unit, tests/kernels, tests/browser).

A tiny synthetic Fashion-MNIST, a test-sized copy of the project, one real grading batch of the
fixture notebooks (real kernels, real TensorFlow, quick budget; run once per session, so each
fixture notebook executes exactly once), and the report fixtures' class (no kernels, built once).
Builders that are not fixtures live beside this file (evidence_builder, report_fixtures, …).
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import tokenize
from pathlib import Path

import nbformat
import pytest

from grader.assignment.data import make_synthetic_dataset, write_dataset

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"
REALISTIC = ROOT / "tests" / "fixtures" / "realistic"  # written the way real students write (build_realistic.py)

# Short time limits so the infinite-loop fixture costs seconds, not minutes; generous enough
# for a 2-core CI machine running two kernels at once.
TEST_CELL_TIMEOUT_S = 60
TEST_NOTEBOOK_TIMEOUT_S = 300
TEST_DISK_MB = 256
TEST_MEMORY_MB = 2048  # the per-job memory cgroup: an honest quick-budget kernel peaks near 450 MiB


@pytest.fixture(scope="session")
def tiny_keras_home(tmp_path_factory) -> Path:
    """A KERAS_HOME holding a small, learnable synthetic data set as real IDX files, its test set split
    like the real one: 200 public images (the notebook's x_test), 200 private. Half of the test images
    carry no learnable pattern, so a model trained on the public part shows a public/private gap."""
    home = tmp_path_factory.mktemp("keras-home")
    write_dataset(home, make_synthetic_dataset(n_train_per_class=120, n_test_per_class=40, seed=0,
                                               unlearnable_test_fraction=0.5), source="synthetic")
    return home


def make_project(root: Path) -> Path:
    """A copy of the assignment and reference with test-sized time limits for the quick budget."""
    shutil.copytree(ROOT / "assignments", root / "assignments")
    shutil.copytree(ROOT / "reference", root / "reference")
    spec = root / "assignments" / "kadai8" / "spec.toml"
    text = spec.read_text(encoding="utf-8")
    quick = text.index("[budgets.quick]")
    end = text.index("[budgets.standard]")
    section = re.sub(r"cell_timeout_s = \d+", f"cell_timeout_s = {TEST_CELL_TIMEOUT_S}", text[quick:end])
    section = re.sub(r"notebook_timeout_s = \d+", f"notebook_timeout_s = {TEST_NOTEBOOK_TIMEOUT_S}", section)
    text = text[:quick] + section + text[end:]
    text = re.sub(r"disk_mb = \d+", f"disk_mb = {TEST_DISK_MB}", text)  # the disk filler fills it in a second
    text = re.sub(r"memory_mb = \d+", f"memory_mb = {TEST_MEMORY_MB}", text)  # memory bombs die in seconds
    spec.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def test_project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def graded_batch(tmp_path_factory, tiny_keras_home, test_project, reference_cache):
    """Grade every fixture notebook once: {student id: StudentResult}, plus the output folder."""
    from grader.commands import grade

    submissions = tmp_path_factory.mktemp("submissions")
    for notebook in FIXTURES.glob("*.ipynb"):
        shutil.copy(notebook, submissions / notebook.name)
    out = tmp_path_factory.mktemp("out")
    logging.getLogger("grader").setLevel(logging.INFO)
    summary = grade.main(
        assignment="kadai8", submissions=submissions, out=out, budget="quick", jobs=2, lang="ja",
        project_root=test_project, keras_home=tiny_keras_home, cache_root=reference_cache,
    )
    return {r.student: r for r in summary.results}, summary


@pytest.fixture(scope="session")
def realistic_batch(tmp_path_factory, tiny_keras_home, test_project, reference_cache):
    """The real-style notebooks (tests/fixtures/realistic/) graded once, in one batch, like graded_batch."""
    from grader.commands import grade

    submissions = tmp_path_factory.mktemp("realistic-submissions")
    for notebook in REALISTIC.glob("*.ipynb"):
        shutil.copy(notebook, submissions / notebook.name)
    out = tmp_path_factory.mktemp("realistic-out")
    summary = grade.main(
        assignment="kadai8", submissions=submissions, out=out, budget="quick", jobs=2, lang="ja",
        project_root=test_project, keras_home=tiny_keras_home, cache_root=reference_cache,
    )
    return {r.student: r for r in summary.results}, summary


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory) -> Path:
    """Shared by every batch of the session, so the reference notebook runs once."""
    return tmp_path_factory.mktemp("reference-cache")


# ---------------------------------------------------------------- the hostile batch
ATTACKS = ROOT / "tests" / "fixtures" / "attacks"
# Names a class folder may hold that are never graded (grader.assignment.student_ids): impostor with a trailing
# full-width space, a newline, the grader's own file names, and two pairs that would be one id.
REFUSED_NAMES = ("s2601001\u3000.ipynb", "s2601002\n.ipynb", "index.html.ipynb", "grades.csv.ipynb",
                 "submissions.json.ipynb", "dup.ipynb", "dup/dup.ipynb", "Twin.ipynb", "twin.ipynb")
JAPANESE_NAMES = ("課題8_山田太郎", "課題8_佐藤花子")


@dataclass
class AttackRun:
    results: dict
    summary: object
    host_drop_mb: int  # how far the host's MemAvailable fell below its level at the start
    review_port: int
    decoy: Path


def strongest_layer() -> str:
    from grader.isolation.sandbox import probe_layers

    return next((r.name for r in probe_layers() if r.works), "")


def small_notebook(marker: str) -> str:
    import nbformat

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_markdown_cell("# 課題8"), nbformat.v4.new_code_cell(f"print({marker!r})")]
    return nbformat.writes(book)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_decoy(folder: Path) -> Path:
    """Another checkout of the course elsewhere on the host, with what a student would love to read."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "reference" / "kadai8" / "reference.ipynb", folder / "reference.ipynb")
    shutil.copy(ROOT / "assignments" / "kadai8" / "spec.toml", folder / "spec.toml")
    (folder / "gradebook.sqlite").write_bytes(b"SQLite format 3\0")
    (folder / "grades.csv").write_text("student,score\ns2601001,100\n", encoding="utf-8")
    return folder


class MemoryWatch:
    """The lowest MemAvailable seen while the batch runs (sampled every 0.2 s)."""

    def __init__(self) -> None:
        from grader.isolation.machine import available_memory_mb

        self.read = available_memory_mb
        self.start = self.lowest = self.read() or 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.lowest = min(self.lowest, self.read() or self.lowest)

    def __enter__(self) -> MemoryWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture(scope="session")
def attack_run(tmp_path_factory, tiny_keras_home, test_project, reference_cache) -> AttackRun:
    """Grade every attack notebook, one honest notebook, two Japanese-named ones and a set of names
    that must be refused, in one batch, two kernels at a time, with a decoy checkout on the host."""
    from grader.commands import grade

    if strongest_layer() != "bubblewrap (root, uid drop)":
        pytest.skip("needs root with bubblewrap")
    submissions = tmp_path_factory.mktemp("attack-submissions")
    out = tmp_path_factory.mktemp("attack-out")
    decoy = make_decoy(Path(tempfile.mkdtemp(prefix="kadai8-decoy-", dir="/var/tmp")) / "course-2025")
    listener = socket.create_server(("127.0.0.1", 0))  # a host service the sandbox must not reach
    review_port = free_port()
    values = {"{{PROJECT_ROOT}}": str(test_project), "{{REPO}}": str(ROOT), "{{SUBMISSIONS}}": str(submissions),
              "{{OUT}}": str(out), "{{PORT}}": str(listener.getsockname()[1]), "{{REVIEW_PORT}}": str(review_port)}
    for notebook in ATTACKS.glob("*.ipynb"):
        text = notebook.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        (submissions / notebook.name).write_text(text, encoding="utf-8")
    shutil.copy(FIXTURES / "correct.ipynb", submissions / "honest.ipynb")
    for name in JAPANESE_NAMES:
        (submissions / f"{name}.ipynb").write_text(small_notebook(f"RESULT name {name}"), encoding="utf-8")
    (submissions / "s2601001.ipynb").write_text(small_notebook("RESULT real s2601001"), encoding="utf-8")
    for name in REFUSED_NAMES:
        (submissions / name).parent.mkdir(exist_ok=True)
        (submissions / name).write_text(small_notebook(f"RESULT impostor {name!r}"), encoding="utf-8")
    try:
        # In a thread of its own: a test that first needs this batch may already run an event loop
        # (Playwright's sync API does), and asyncio.run refuses to nest.
        with MemoryWatch() as memory, ThreadPoolExecutor(1) as worker:
            summary = worker.submit(grade.main, assignment="kadai8", submissions=submissions, out=out, budget="quick",
                                    jobs=2, project_root=test_project, keras_home=tiny_keras_home,
                                    cache_root=reference_cache).result()
    finally:
        listener.close()
    yield AttackRun({r.student: r for r in summary.results}, summary, memory.start - memory.lowest, review_port,
                    decoy)
    shutil.rmtree(decoy.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def attack_batch(attack_run):
    return attack_run.results, attack_run.summary


@pytest.fixture(scope="session")
def report_class(tmp_path_factory):
    """The report fixtures' class graded in Japanese (no kernels): (out folder, results by student).
    Read-only for its users: a test that changes an output folder builds its own."""
    from report_fixtures import build_class

    return build_class(tmp_path_factory.mktemp("report-class"))


# ---------------------------------------------------------------- builders shared by several kinds of test
def renamed(source: Path, target: Path) -> Path:
    """The same notebook with every variable renamed (Python's tokenize: NAME tokens that are assigned)."""
    notebook = nbformat.read(source, as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assigned = {t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.NAME}
    assigned &= {"X_tr", "y_tr", "X_te", "y_te", "aug", "it", "show16", "xb", "yb", "fig", "axes", "ax", "img",
                 "inputs", "h", "outputs", "model", "X_tr2", "X_val", "y_tr2", "y_val", "hist", "test_loss", "test_acc"}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            for name in sorted(assigned, key=len, reverse=True):
                cell.source = re.sub(rf"\b{re.escape(name)}\b", f"renamed_{name.lower()}_v", cell.source)
    nbformat.write(notebook, target)
    return target
