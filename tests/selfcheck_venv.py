"""The Colab-like venv the self-check tests run `selfcheck.py` in: only Colab's packages
(tests/selfcheck-venv.txt), never the grader. `make setup` builds it (it needs the package
registry); tests only use it, so nothing downloads during a test.

    .venv/bin/python tests/selfcheck_venv.py      # build if missing, print its python
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tests" / "selfcheck-venv.txt"
VENV_ROOT = ROOT / ".cache" / "selfcheck-venv"


def venv_dir() -> Path:
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode() + platform.machine().encode())
    return VENV_ROOT / key.hexdigest()[:16]


def ready() -> bool:
    return (venv_dir() / ".complete").is_file()


def build() -> Path:
    venv = venv_dir()
    if ready():
        return venv / "bin" / "python"
    building = VENV_ROOT / f"{venv.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
                   check=True, timeout=1200)
    # The first TensorFlow import compiles its bytecode (≈ 20 s): do it now, not inside a timed run.
    subprocess.run([str(building / "bin" / "python"), "-c", "import tensorflow, sklearn, matplotlib"],
                   capture_output=True, check=True, timeout=600)
    (building / ".complete").write_text(REQUIREMENTS.read_text(encoding="utf-8"), encoding="utf-8")
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)  # a venv's own python works from its new place
    return venv / "bin" / "python"


if __name__ == "__main__":
    print(build())
