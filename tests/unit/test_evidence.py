"""Reading the evidence folder defensively: everything in it was written by the student's process."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import grader.evidence.reader
from grader.evidence.reader import Evidence, regular_file
from grader.kernel.grader_kernel import EVENTS_FILE, image_hashes, summarize_array
from evidence_builder import EvidenceBuilder, pipeline, preprocess, synthetic_data

DATA = synthetic_data()


def small(tmp_path: Path) -> EvidenceBuilder:
    return (EvidenceBuilder(tmp_path).harness_ready().datagen(1, rotation_range=90)
            .flow(1, datagen=1, batch_size=16, n=64).batch(1))


# ---------------------------------------------------------------- the events file
def test_load_reads_events_in_order(tmp_path) -> None:
    ev = small(tmp_path).build()
    assert [e["kind"] for e in ev.events] == ["harness_ready", "datagen", "flow", "batch"]
    assert [e["seq"] for e in ev.events] == [1, 2, 3, 4]
    assert ev.problems == []
    assert ev.harness_ready


def test_truncated_last_line_is_skipped_and_counted(tmp_path) -> None:
    small(tmp_path).write()
    cut = json.dumps({"seq": 5, "t": 9.5, "cell": 7, "kind": "fit_start", "fit": 1, "params_count": 144266})
    with open(tmp_path / EVENTS_FILE, "a", encoding="utf-8") as f:
        f.write(cut[: len(cut) // 2])  # the kernel died mid-write: no closing brace, no newline
    ev = Evidence.load(tmp_path)
    assert len(ev.events) == 4
    assert ev.of("fit_start") == []
    assert ev.problems == ["unreadable event line 5"]


def test_truncated_multibyte_character_does_not_raise(tmp_path) -> None:
    small(tmp_path).write()
    line = json.dumps({"seq": 5, "kind": "harness_warning", "error": "考察"}, ensure_ascii=False).encode()
    with open(tmp_path / EVENTS_FILE, "ab") as f:
        f.write(line[: line.index("考".encode()) + 1])  # half of a UTF-8 character
    ev = Evidence.load(tmp_path)
    assert len(ev.events) == 4 and ev.problems == ["unreadable event line 5"]


def test_lines_that_are_not_events_are_ignored(tmp_path) -> None:
    small(tmp_path).write()
    with open(tmp_path / EVENTS_FILE, "a", encoding="utf-8") as f:
        f.write('[1, 2]\n{"seq": 9}\n{"kind": 5}\n"text"\n')
    ev = Evidence.load(tmp_path)
    assert len(ev.events) == 4 and ev.problems == []


def test_missing_events_file_is_empty_evidence_without_problems(tmp_path) -> None:
    ev = Evidence.load(tmp_path)
    assert ev.events == [] and ev.problems == [] and not ev.harness_ready
    assert ev.training_fit() is None and ev.first("flow") is None


def test_symlinked_events_file_is_ignored(tmp_path) -> None:
    real = small(tmp_path / "elsewhere").write() / EVENTS_FILE
    folder = tmp_path / "evidence"
    folder.mkdir()
    (folder / EVENTS_FILE).symlink_to(real)
    ev = Evidence.load(folder)
    assert ev.events == []
    assert ev.problems == ["events file is not a plain file or is too large"]


def test_dangling_symlinked_events_file_is_ignored(tmp_path) -> None:
    (tmp_path / EVENTS_FILE).symlink_to(tmp_path / "nowhere.jsonl")
    ev = Evidence.load(tmp_path)
    assert ev.events == [] and ev.problems == ["events file is not a plain file or is too large"]


def test_oversized_events_file_is_ignored(tmp_path, monkeypatch) -> None:
    small(tmp_path).write()
    monkeypatch.setattr(grader.evidence.reader, "MAX_EVENTS_BYTES", 100)
    ev = Evidence.load(tmp_path)
    assert ev.events == [] and ev.problems == ["events file is not a plain file or is too large"]


def test_too_many_events_are_cut_off(tmp_path, monkeypatch) -> None:
    small(tmp_path).write()
    monkeypatch.setattr(grader.evidence.reader, "MAX_EVENTS", 2)
    ev = Evidence.load(tmp_path)
    assert [e["kind"] for e in ev.events] == ["harness_ready", "datagen"]
    assert ev.problems == ["too many events; the rest were ignored"]


def test_regular_file_rejects_links_folders_and_bad_names(tmp_path) -> None:
    (tmp_path / "f").write_bytes(b"12345")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    assert regular_file(tmp_path / "f", 5)
    assert not regular_file(tmp_path / "f", 4)
    assert not regular_file(tmp_path / "link", 5)
    assert not regular_file(tmp_path, 10**9)
    assert not regular_file(tmp_path / "missing", 5)
    assert not regular_file(tmp_path / "nul\x00byte", 5)


# ---------------------------------------------------------------- arrays
def test_arrays_reads_a_batch(tmp_path) -> None:
    ev = small(tmp_path).build()
    arrays = ev.arrays(ev.batch(1)["file"])
    assert sorted(arrays) == ["index", "x", "x_orig", "y", "y_orig"]
    assert arrays["x"].shape == (16, 28, 28, 1) and arrays["y"].shape == (16, 10)
    assert ev.problems == []


@pytest.mark.parametrize("name", [
    "../outside.npz", "sub/batch.npz", "..", ".hidden.npz", "/abs/outside.npz", "..\\outside.npz",
    "nul\x00.npz", None, 5, ["batch_flow1.npz"], "", "missing.npz",
])
def test_arrays_refuses_names_outside_the_folder(tmp_path, name) -> None:
    folder = tmp_path / "evidence"
    small(folder).write()
    np.savez_compressed(tmp_path / "outside.npz", hashes=np.arange(3))
    (folder / "sub").mkdir()
    np.savez_compressed(folder / "sub" / "batch.npz", hashes=np.arange(3))
    np.savez_compressed(folder / ".hidden.npz", hashes=np.arange(3))
    ev = Evidence.load(folder)
    assert ev.arrays(name) == {}
    assert ev.safe_path(name) is None


class _Tripwire:
    """Unpickling one of these records that pickled code ran."""

    fired: list[str] = []

    def __reduce__(self):
        return (_Tripwire.fired.append, ("unpickled",))


def test_arrays_refuses_object_arrays(tmp_path) -> None:
    ev = small(tmp_path).build()
    payload = np.empty(1, dtype=object)
    payload[0] = _Tripwire()
    np.savez_compressed(tmp_path / "hashes_1.npz", allow_pickle=True, hashes=payload)
    with np.load(tmp_path / "hashes_1.npz", allow_pickle=True) as check:  # it really is a pickle
        assert check["hashes"].dtype == object
    _Tripwire.fired.clear()
    assert ev.arrays("hashes_1.npz") == {}
    assert _Tripwire.fired == []
    assert len(ev.problems) == 1 and ev.problems[0].startswith("unreadable array file hashes_1.npz")


def test_arrays_refuses_a_plain_pickle(tmp_path) -> None:
    import pickle

    ev = small(tmp_path).build()
    (tmp_path / "hashes_1.npz").write_bytes(pickle.dumps(_Tripwire()))
    _Tripwire.fired.clear()
    assert ev.arrays("hashes_1.npz") == {}
    assert _Tripwire.fired == [] and len(ev.problems) == 1


@pytest.mark.parametrize("content", ["npy", "corrupt_zip", "garbage", "empty", "not_npy_member"])
def test_arrays_survives_files_that_are_not_npz(tmp_path, content) -> None:
    ev = small(tmp_path).build()
    path = tmp_path / "batch_flow1.npz"
    if content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(5))
    elif content == "corrupt_zip":
        good = path.read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif content == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    elif content == "empty":
        path.write_bytes(b"")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.txt", "not an array")
    assert ev.arrays("batch_flow1.npz") == {}
    assert all(p.startswith("unreadable array file batch_flow1.npz") for p in ev.problems)


def test_symlinked_array_is_ignored(tmp_path) -> None:
    folder = tmp_path / "evidence"
    small(folder).write()
    np.savez_compressed(tmp_path / "secret.npz", hashes=np.arange(3))
    (folder / "batch_flow1.npz").unlink()
    (folder / "batch_flow1.npz").symlink_to(tmp_path / "secret.npz")
    ev = Evidence.load(folder)
    assert ev.arrays("batch_flow1.npz") == {}
    assert ev.problems == []


def test_oversized_array_file_is_ignored(tmp_path, monkeypatch) -> None:
    ev = small(tmp_path).build()
    assert ev.arrays("batch_flow1.npz")
    monkeypatch.setattr(grader.evidence.reader, "MAX_ARRAY_FILE_BYTES", 100)
    assert ev.arrays("batch_flow1.npz") == {}
    assert ev.safe_path("batch_flow1.npz") is None
    assert ev.safe_path("batch_flow1.npz", max_bytes=10**9) is not None


def test_array_that_inflates_too_much_is_refused(tmp_path, monkeypatch) -> None:
    ev = small(tmp_path).build()
    np.savez_compressed(tmp_path / "hashes_1.npz", hashes=np.zeros(1_000_000, dtype=np.uint64))
    assert (tmp_path / "hashes_1.npz").stat().st_size < 100_000  # small on disk, 8 MB inflated
    monkeypatch.setattr(grader.evidence.reader, "MAX_ARRAY_BYTES", 1_000_000)
    assert ev.arrays("hashes_1.npz") == {}
    assert ev.problems and "uncompressed" in ev.problems[0]


def test_hashes_written_by_the_builder_match_the_graders(tmp_path) -> None:
    ev = pipeline(tmp_path).build()
    hashes = ev.arrays(ev.first("evaluate")["x_hashes"])["hashes"]
    assert hashes.dtype == np.uint64
    np.testing.assert_array_equal(hashes, image_hashes(DATA.x_test))
    assert ev.first("evaluate")["x"] == summarize_array(preprocess(DATA.x_test))


# ---------------------------------------------------------------- queries
def test_training_fit_prefers_the_last_flow_fed_fit(tmp_path) -> None:
    x = preprocess(DATA.x_train[:128])
    b = EvidenceBuilder(tmp_path).datagen(1, rotation_range=90).flow(1, datagen=1, batch_size=32, x=x)
    b.flow(2, datagen=1, batch_size=64, x=x)
    b.fit(1, flow=1, steps_per_epoch=4).fit(2, flow=2, steps_per_epoch=2).fit(3, x=x, batch_size=32)
    ev = b.build()
    assert [f["fit"] for f in ev.of("fit_start")] == [1, 2, 3]
    assert ev.training_fit()["fit"] == 2


def test_training_fit_prefers_a_finished_fit_over_a_later_crashed_one(tmp_path) -> None:
    x = preprocess(DATA.x_train[:128])
    ev = EvidenceBuilder(tmp_path).fit(1, x=x).fit(2, x=x, error="KeyboardInterrupt: ").build()
    assert ev.training_fit()["fit"] == 1
    assert [f["fit"] for f in ev.finished_fits()] == [1]


def test_training_fit_falls_back_to_the_last_started_fit_when_none_finished(tmp_path) -> None:
    x = preprocess(DATA.x_train[:128])
    ev = EvidenceBuilder(tmp_path).fit(1, x=x, error="ValueError: a").fit(2, x=x, error="ValueError: b").build()
    assert ev.training_fit()["fit"] == 2
    assert ev.finished_fits() == []


def test_model_file(tmp_path) -> None:
    ev = pipeline(tmp_path).build()
    assert ev.model_file(1) == tmp_path / "model_fit1.keras"
    assert ev.model_file(2) is None
    assert ev.history(1)["val_accuracy"] == [0.36]
    assert ev.history(2) == {}


def test_model_file_none_for_a_symlink(tmp_path) -> None:
    folder = tmp_path / "evidence"
    pipeline(folder).write()
    (tmp_path / "other.keras").write_bytes(b"PK")
    (folder / "model_fit1.keras").unlink()
    (folder / "model_fit1.keras").symlink_to(tmp_path / "other.keras")
    assert Evidence.load(folder).model_file(1) is None


def test_model_file_none_when_the_fit_did_not_finish_or_the_name_escapes(tmp_path) -> None:
    (tmp_path / "elsewhere.keras").write_bytes(b"PK")
    folder = tmp_path / "evidence"
    b = EvidenceBuilder(folder).fit(1, x=preprocess(DATA.x_train[:32]), finished=False)
    ev = b.event("model_saved", fit=2, model=1, file="../elsewhere.keras").build()
    assert ev.model_file(1) is None
    assert ev.model_file(2) is None


def test_compat_shims_and_lookups(tmp_path) -> None:
    ev = pipeline(tmp_path).build()
    assert ev.compat_shims() == ["keras.preprocessing.image.ImageDataGenerator", "steps_per_epoch float → int"]
    assert ev.flow(4)["length"] == 15 and ev.flow(99) is None
    assert ev.datagen(3)["params"] == {"rotation_range": 90, "vertical_flip": True}
    assert ev.batch(4)["file"] == "batch_flow4.npz" and ev.batch(99) is None
