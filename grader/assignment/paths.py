"""Default locations, all relative to the project checkout (overridable on the command line), and
the default assignment, read from `assignments/course.toml` (the one place that names it)."""

from __future__ import annotations

import tomllib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_HOME = PROJECT_ROOT / ".data" / "keras"  # a KERAS_HOME: datasets/<data set>/*.gz
CACHE_ROOT = PROJECT_ROOT / ".cache" / "reference"
CALIBRATION_ROOT = PROJECT_ROOT / ".cache" / "calibration"  # grader calibrate → <assignment>/<budget>-<key>.json
COURSE_FILE = "course.toml"


def default_assignment(project_root: Path = PROJECT_ROOT) -> str:
    """`default_assignment` of assignments/course.toml; else the only assignment there is; else ""."""
    try:
        named = tomllib.loads((project_root / "assignments" / COURSE_FILE).read_text(encoding="utf-8"))
        if named.get("default_assignment"):
            return str(named["default_assignment"])
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        pass
    found = sorted(p.parent.name for p in (project_root / "assignments").glob("*/spec.toml"))
    return found[0] if len(found) == 1 else ""


DEFAULT_ASSIGNMENT = default_assignment()
