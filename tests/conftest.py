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
import tokenize
from pathlib import Path

import nbformat
import pytest

from grader.assignment.data import make_synthetic_dataset, write_dataset

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"

# Short time limits so the infinite-loop fixture costs seconds, not minutes; generous enough
# for a 2-core CI machine running two kernels at once.
TEST_CELL_TIMEOUT_S = 60
TEST_NOTEBOOK_TIMEOUT_S = 300
TEST_DISK_MB = 256


@pytest.fixture(scope="session")
def tiny_keras_home(tmp_path_factory) -> Path:
    """A KERAS_HOME holding a small, learnable synthetic data set as real IDX files."""
    home = tmp_path_factory.mktemp("keras-home")
    write_dataset(home, make_synthetic_dataset(n_train_per_class=120, n_test_per_class=20, seed=0), source="synthetic")
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
def reference_cache(tmp_path_factory) -> Path:
    """Shared by every batch of the session, so the reference notebook runs once."""
    return tmp_path_factory.mktemp("reference-cache")


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
