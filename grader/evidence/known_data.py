"""What the grader knows about its own images, to check what a kernel reports against it.

Trusted side only. Built once per batch from the data set `grader data` wrote: the public test part
(what notebooks load as `x_test`), the private part (never in a sandbox), and the training set.
Kernels report content hashes and coarse signatures (grader.kernel.grader_kernel.image_hashes /
image_signatures) of what they trained on; here they are matched against the grader's own copies:

  * exact: the same pixels (after 0–1 / 0–255 scaling) as a training or a public test image;
  * near: a signature within NEAR_RMS of a public test image's: a perturbed (±1/255), rescaled or
    standardised copy of it. Public images that already have a near twin in the grader's own training
    set (Fashion-MNIST has a few) are never counted, so honest training data cannot match them.

Everything is computed lazily: a batch that needs no near-duplicate search never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from typing import Any

import numpy as np

from grader.assignment.data import Dataset
from grader.evidence.reader import Evidence
from grader.kernel.grader_kernel import image_hashes, image_signatures

NEAR_RMS = 0.012  # signatures (0–1) closer than this, root mean square over 196 cells: the same picture
INHERENT_RMS = 0.02  # wider for the grader's own train↔test twins, so borderline cases never count
CHUNK = 1024  # rows per distance block: 1,024 × 5,000 float32 = 20 MB


@dataclass(frozen=True)
class GraderData:
    """The grader's images: public and private test parts, training set, and lookups over them."""

    x_public: np.ndarray
    y_public: np.ndarray
    x_private: np.ndarray | None
    y_private: np.ndarray | None
    x_train: np.ndarray

    @classmethod
    def from_dataset(cls, data: Dataset) -> GraderData:
        return cls(data.x_test, data.y_test, data.x_private, data.y_private, data.x_train)

    # -- exact content ----------------------------------------------------------------------
    @cached_property
    def train_hashes(self) -> np.ndarray:
        return np.sort(image_hashes(self.x_train))

    @cached_property
    def public_hashes(self) -> np.ndarray:
        return image_hashes(self.x_public)

    @cached_property
    def _public_order(self) -> np.ndarray:
        return np.argsort(self.public_hashes, kind="stable")

    def is_train(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash: is it exactly one of the grader's training images?"""
        return _member(np.asarray(hashes, dtype=np.uint64), self.train_hashes)

    def public_index(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash: the index of the public test image with exactly that content, or -1."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        ordered = self.public_hashes[self._public_order]
        at = np.clip(np.searchsorted(ordered, hashes), 0, max(len(ordered) - 1, 0))
        found = len(ordered) > 0
        hit = (ordered[at] == hashes) if found else np.zeros(len(hashes), dtype=bool)
        return np.where(hit, self._public_order[at] if found else -1, -1)

    # -- near duplicates --------------------------------------------------------------------
    @cached_property
    def public_signatures(self) -> np.ndarray:
        return image_signatures(self.x_public).astype(np.float32) / 255.0

    @cached_property
    def train_signatures(self) -> np.ndarray:
        return image_signatures(self.x_train).astype(np.float32) / 255.0

    @cached_property
    def inherent_twins(self) -> np.ndarray:
        """Public images with a near twin in the grader's own training set (never counted as leaked)."""
        twins = nearest(self.train_signatures, self.public_signatures, INHERENT_RMS)
        return np.unique(twins[twins >= 0])

    def near_public(self, signatures: np.ndarray) -> np.ndarray:
        """For each signature: the public test image it is a near copy of, or -1 (twins excluded)."""
        found = nearest(_unit(signatures), self.public_signatures, NEAR_RMS)
        found[np.isin(found, self.inherent_twins)] = -1
        return found

    def near_train(self, signatures: np.ndarray) -> np.ndarray:
        """For each signature: is it a near copy of one of the grader's training images?"""
        return nearest(_unit(signatures), self.train_signatures, NEAR_RMS) >= 0


def training_records(evidence: Evidence, *, validation: bool) -> list[Any]:
    """The evidence files holding hashes (and signatures) of everything any training call was fed."""
    names = []
    for fit in evidence.of("fit_start"):
        names.append(fit.get("train_hashes"))
        if validation:
            names.append(fit.get("validation_hashes"))
    names += [e.get("train_hashes") for e in evidence.of("batch_training")]
    return list(dict.fromkeys(n for n in names if n))


def public_images_in(evidence: Evidence, data: GraderData, *, validation: bool) -> set[int] | None:
    """Which public test images (by index) were in training (and validation) data: exact copies, and
    near copies among images that are not exactly one of the grader's training images. None when no
    training call was recorded with its images."""
    names = training_records(evidence, validation=validation)
    if not names:
        return None
    touched: set[int] = set()
    for name in names:
        arrays = evidence.arrays(name)
        hashes = arrays.get("hashes")
        if hashes is None or hashes.dtype != np.uint64:
            continue
        exact = data.public_index(hashes)
        touched.update(int(i) for i in exact[exact >= 0])
        signatures = arrays.get("signatures")
        if signatures is None or len(signatures) != len(hashes):
            continue
        unknown = (exact < 0) & ~data.is_train(hashes)
        if unknown.any():
            near = data.near_public(signatures[unknown])
            touched.update(int(i) for i in near[near >= 0])
    return touched


def _unit(signatures: np.ndarray) -> np.ndarray:
    """Signatures as recorded (uint8 0–255) → float 0–1; anything else is rejected as no match."""
    signatures = np.asarray(signatures)
    if signatures.ndim != 2 or signatures.dtype != np.uint8:
        return np.zeros((0, 0), dtype=np.float32)
    return signatures.astype(np.float32) / 255.0


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.clip(np.searchsorted(sorted_set, values), 0, len(sorted_set) - 1)
    return sorted_set[at] == values


def nearest(queries: np.ndarray, pool: np.ndarray, rms: float) -> np.ndarray:
    """Index of the nearest pool row within `rms` (root mean square difference) per query, else -1."""
    result = np.full(len(queries), -1, dtype=np.int64)
    if len(queries) == 0 or len(pool) == 0 or queries.shape[1] != pool.shape[1]:
        return result
    limit = rms * rms * pool.shape[1]
    pool_sq = (pool * pool).sum(axis=1)
    for start in range(0, len(queries), CHUNK):
        block = queries[start:start + CHUNK]
        distances = (block * block).sum(axis=1)[:, None] + pool_sq[None, :] - 2.0 * (block @ pool.T)
        best = distances.argmin(axis=1)
        close = distances[np.arange(len(block)), best] <= limit
        result[start:start + CHUNK] = np.where(close, best, -1)
    return result
