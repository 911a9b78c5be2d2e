"""The one factory of Sessions: what every student's grading shares, decided once, then frozen.

`grade`, `calibrate`, `check` and the students' self-check all make their Session here: the
spec's check kinds are verified; the grader's test set, its image hashes, the lookups over the
grader's images (GraderData: the private test part, near copies) and, when a data_source check needs
them, the data set's source hashes come from the data set. grader.engine.reference.with_reference
then adds the reference run and the accuracy threshold, decided once (grader.judge.threshold).
Concurrent jobs only read it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grader.assignment.data import Dataset
from grader.evidence.known_data import GraderData
from grader.assignment.spec import AssignmentSpec, Budget
from grader.engine.pipeline import ReferenceRun, Session
from grader.isolation.launch import Launcher
from grader.judge.checks import AccuracyThreshold, DatasetHashes
from grader.judge.checks.data import load_dataset_hashes
from grader.judge.verdicts import require_known_kinds
from grader.kernel.grader_kernel import image_hashes


def make_session(*, spec: AssignmentSpec, budget: Budget, launcher: Launcher, data_dir: Path, out_dir: Path,
                 work_root: Path, versions: dict[str, str], lang: str = "ja", threads: int = 1,
                 data: Dataset | None = None, test_hashes: np.ndarray | None = None,
                 reference: ReferenceRun | None = None, threshold: AccuracyThreshold | None = None,
                 dataset_hashes: DatasetHashes | None = None) -> Session:
    """A Session; `data` gives the trusted test set (and its hashes, and the grader's image lookups);
    without it there is no trusted evaluation (the self-check). `dataset_hashes`: given, or read from
    `data_dir` when a data_source check needs them. `versions`: what the results record
    (grader.engine.reference)."""
    require_known_kinds(spec)
    if data is not None and test_hashes is None:
        test_hashes = image_hashes(data.x_test)
    if dataset_hashes is None and any(c.kind == "data_source" for c in spec.checks):
        dataset_hashes = load_dataset_hashes(data_dir)  # once, here: the Session is frozen
    return Session(
        spec=spec, budget=budget, launcher=launcher, data_dir=data_dir,
        x_test=data.x_test if data is not None else None, y_test=data.y_test if data is not None else None,
        test_hashes=test_hashes, reference=reference, out_dir=out_dir, work_root=work_root, lang=lang,
        threads=max(1, threads), versions=dict(versions), threshold=threshold,
        dataset_hashes=dataset_hashes, grader_data=GraderData.from_dataset(data) if data is not None else None,
    )
