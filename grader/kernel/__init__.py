"""Code that runs in untrusted processes (the grading kernel, the model predictor)."""

from pathlib import Path

# The kernel-side harness: everything the kernel runs before the first cell. Cache keys (reference
# runs, calibrations, the gradebook's fingerprints, selfcheck.py) cover all of it.
HARNESS_FILES = ("grader_kernel.py", "keras2_bridge.py")


def harness_source() -> bytes:
    here = Path(__file__).resolve().parent
    return b"".join((here / name).read_bytes() for name in HARNESS_FILES)
