"""Default locations, all relative to the project checkout (overridable on the command line)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_HOME = PROJECT_ROOT / ".data" / "keras"  # a KERAS_HOME: datasets/fashion-mnist/*.gz
CACHE_ROOT = PROJECT_ROOT / ".cache" / "reference"
CALIBRATION_ROOT = PROJECT_ROOT / ".cache" / "calibration"  # grader calibrate → <assignment>/<budget>-<key>.json
