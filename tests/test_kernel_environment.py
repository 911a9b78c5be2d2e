"""The grading kernel has Colab's everyday packages; the trusted grader process never loads them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Import name → distribution, as a Colab notebook's first cell imports them.
COLAB_EVERYDAY = {"numpy": "numpy", "pandas": "pandas", "seaborn": "seaborn", "sklearn": "scikit-learn",
                  "matplotlib": "matplotlib", "cv2": "opencv-python-headless", "PIL": "pillow", "scipy": "scipy",
                  "tqdm": "tqdm"}
TRUSTED_MODULES = ("grader.cli", "grader.commands.grade", "grader.commands.check", "grader.commands.review",
                   "grader.pipeline", "grader.report", "grader.figures", "grader.review_app", "grader.compat_notes",
                   "grader.checks", "grader.evaluate", "grader.selfcheck.engine")


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version.strip()
    return pins


@pytest.mark.parametrize("module, distribution", sorted(COLAB_EVERYDAY.items()))
def test_the_grading_kernel_has_colabs_everyday_packages_at_the_locked_versions(module, distribution) -> None:
    # Kernels run this very interpreter, so what it can find, a notebook can import.
    assert importlib.util.find_spec(module) is not None, f"{module} missing: run `make setup`"
    assert locked_versions()[distribution] == importlib.metadata.version(distribution)


def test_trusted_grader_modules_do_not_import_what_only_notebooks_need() -> None:
    code = (f"import sys\nfor m in {TRUSTED_MODULES!r}: __import__(m)\n"
            "print(' '.join(sorted(m for m in ('pandas', 'seaborn', 'cv2', 'tensorflow', 'keras', 'tqdm') "
            "if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_bridge_is_part_of_every_harness_cache_key() -> None:
    from grader.kernel import HARNESS_FILES, harness_source

    assert "keras2_bridge.py" in HARNESS_FILES
    assert (ROOT / "grader" / "kernel" / "keras2_bridge.py").read_bytes() in harness_source()
