"""What moves between the coordinator and a worker (grader.engine.remote), without kernels or Dask processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grader.engine.remote import (
    BundleError, check_files, execution_from_dict, identity_differences, source_hash,
)
from grader.engine.execute import CellError, ExecutionResult

ROOT = Path(__file__).resolve().parents[2]


def test_local_grading_does_not_import_dask():
    code = ("import sys, grader.batch.grade, grader.commands.grade, grader.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'dask_jobqueue')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "evidence/../../x", "model.keras", "notes.html"])
def test_a_bundle_file_outside_the_known_names_is_refused(name):
    with pytest.raises(BundleError):
        check_files({name: b"x"}, 1000, 1000)


def test_a_bundle_over_the_size_caps_is_refused():
    with pytest.raises(BundleError, match="executed notebook"):
        check_files({"executed.ipynb": b"x" * 11}, 10, 1000)
    with pytest.raises(BundleError, match="evidence"):
        check_files({"evidence/a.npy": b"x" * 600, "evidence/b.json": b"x" * 600}, 10, 1000)
    with pytest.raises(BundleError, match="not a mapping"):
        check_files([("executed.ipynb", b"")], 10, 1000)


def test_a_bundle_within_the_caps_passes():
    check_files({"executed.ipynb": b"{}", "kernel.log": b"", "evidence/events.jsonl": b"{}\n",
                 "evidence/model-1.keras": b"zip"}, 10, 1000)


def test_an_execution_survives_the_trip_as_data():
    execution = ExecutionResult(seconds=3.5, timed_out=True, timeout_scope="cell", memory_kills=2, memory_limit_mb=512,
                                errors=[CellError(cell_index=3, execution_count=4, ename="ValueError", evalue="bad")])
    back = execution_from_dict({**execution.to_dict(), "memory_limit_mb": 512})
    assert back.to_dict() == execution.to_dict() and back.memory_limit_mb == 512


def test_a_worker_differing_in_data_and_sandbox_is_told_both():
    coordinator = {"grader_source": "a", "data": "d1", "library numpy": "2.3"}
    worker = {"grader_source": "a", "data": "d2", "library numpy": "2.3", "sandbox": ""}
    differences = identity_differences(coordinator, worker, no_sandbox=False)
    assert differences[0] == "data: d2 ≠ d1" and "sandbox" in differences[1] and len(differences) == 2
    assert identity_differences(coordinator, {**worker, "data": "d1"}, no_sandbox=True) == []


def test_the_source_hash_changes_with_one_edited_file(tmp_path):
    package = tmp_path / "grader"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n", encoding="utf-8")
    before = source_hash(package)
    (package / "a.py").write_text("x = 2\n", encoding="utf-8")
    assert source_hash(package) != before and len(before) == 16

