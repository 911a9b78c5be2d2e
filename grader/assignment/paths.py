"""Default locations, all relative to the project checkout (overridable on the command line), and
the default assignment and the course's time zone, read from `assignments/course.toml` (the one place
that names them)."""

from __future__ import annotations

import tomllib
from functools import cache
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
DEFAULT_TIMEZONE = "Asia/Tokyo"


@cache
def course_timezone(project_root: Path = PROJECT_ROOT) -> str:
    """`timezone` of assignments/course.toml (an IANA name such as "Asia/Tokyo"): the zone every page shows
    times in; Asia/Tokyo when the course names none (or there is no course file, as in the self-check)."""
    try:
        course = tomllib.loads((project_root / "assignments" / COURSE_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return DEFAULT_TIMEZONE
    return str(course.get("timezone") or DEFAULT_TIMEZONE)
