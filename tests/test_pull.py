"""`grader pull`: LMS bulk downloads (Moodle, Canvas, plain, nested zips) and unsafe archives."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import main as cli
from grader.commands import pull
from grader.commands.pull import UnsafeArchiveError, ZipLimits

DEADLINE = "2026-07-10T23:59:00+09:00"


def nb(marker: str) -> bytes:
    return json.dumps({"cells": [{"cell_type": "code", "source": f"# {marker}", "metadata": {}, "outputs": [],
                                  "execution_count": None}], "metadata": {}, "nbformat": 4,
                       "nbformat_minor": 5}).encode()


def make_zip(path: Path, entries: list[tuple[str, bytes, tuple]], *, symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, when in entries:
            info = zipfile.ZipInfo(name, date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return path


def zip_bytes(entries: list[tuple[str, bytes, tuple]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, when in entries:
            zf.writestr(zipfile.ZipInfo(name, date_time=when), data)
    return buffer.getvalue()


def roster(tmp: Path) -> Path:
    path = tmp / "roster.csv"
    path.write_text("student_id,name,moodle_id,canvas_id\n"
                    "s2601001,山田 太郎,101,9001\ns2601002,Hanako Sato,102,9002\ns2601003,Jiro Ito,,9003\n",
                    encoding="utf-8-sig")
    return path


def manifest(out: Path) -> dict:
    data = json.loads((out / "submissions.json").read_text(encoding="utf-8"))
    data["by"] = {s["student"]: s for s in data["students"]}
    return data


def test_moodle_zip_maps_names_and_participant_ids_and_lateness(tmp_path):
    source = make_zip(tmp_path / "moodle.zip", [
        ("山田 太郎_101_assignsubmission_file_/kadai8.ipynb", nb("yamada"), (2026, 7, 10, 20, 0, 0)),
        ("Hanako Sato_555_assignsubmission_file_/old.ipynb", nb("sato old"), (2026, 7, 9, 10, 0, 0)),
        ("Hanako Sato_555_assignsubmission_file_/new.ipynb", nb("sato new"), (2026, 7, 11, 1, 0, 0)),
        ("Hanako Sato_555_assignsubmission_file_/notes.txt", b"hi", (2026, 7, 9, 10, 0, 0)),
        ("Nobody_999_assignsubmission_file_/x.ipynb", nb("stranger"), (2026, 7, 9, 10, 0, 0)),
    ])
    out = tmp_path / "subs"
    summary = pull.main(source=source, submissions=out, roster=roster(tmp_path), deadline=DEADLINE)
    assert sorted(p.student for p in summary.students) == ["s2601001", "s2601002"]
    m = manifest(out)
    yamada, sato = m["by"]["s2601001"], m["by"]["s2601002"]
    assert yamada["layout"] == "moodle" and yamada["lms_id"] == "101" and yamada["late"] is False
    assert yamada["late_by_s"] == 0 and yamada["submitted_at"].startswith("2026-07-10T20:00:00+09:00")
    # by name (participant id 555 is not in the roster), the newest notebook in the folder, 1 h 1 min late
    assert b"sato new" in (out / "s2601002.ipynb").read_bytes()
    assert sato["late"] is True and sato["late_by_s"] == 3660 and sato["original_name"] == "new.ipynb"
    assert sato["superseded"] == ["Hanako Sato_555_assignsubmission_file_/old.ipynb"]
    assert any("Nobody" in u and "not in the roster" in u for u in m["unmatched"])
    assert any("notes.txt" in s for s in m["skipped"])


def test_canvas_latest_attempt_wins_and_late_flag(tmp_path):
    source = make_zip(tmp_path / "canvas.zip", [
        ("satohanako_9002_100_kadai8.ipynb", nb("first"), (2026, 7, 8, 9, 0, 0)),
        ("satohanako_9002_200_kadai8-1.ipynb", nb("second"), (2026, 7, 9, 9, 0, 0)),
        ("itojiro_LATE_9003_300_kadai8.ipynb", nb("late"), (2026, 7, 12, 9, 0, 0)),
    ])
    out = tmp_path / "subs"
    pull.main(source=source, submissions=out, roster=roster(tmp_path))
    m = manifest(out)
    assert b"second" in (out / "s2601002.ipynb").read_bytes()
    assert m["by"]["s2601002"]["attempt"] == 200 and m["by"]["s2601002"]["late"] is None  # no deadline given
    assert m["by"]["s2601003"]["late"] is True and m["by"]["s2601003"]["layout"] == "canvas"


def test_plain_folder_and_nested_zips(tmp_path):
    download = tmp_path / "download"
    (download / "s2601004").mkdir(parents=True)
    (download / "s2601004" / "kadai8.ipynb").write_bytes(nb("folder"))
    (download / "s2601005.ipynb").write_bytes(nb("plain"))
    (download / "s2601006.zip").write_bytes(zip_bytes([("work/kadai8.ipynb", nb("zipped"), (2026, 7, 1, 0, 0, 0)),
                                                       ("inner.zip", b"PK", (2026, 7, 1, 0, 0, 0))]))
    moodle = download / "山田 太郎_101_assignsubmission_file_"
    moodle.mkdir()
    (moodle / "kadai8.zip").write_bytes(zip_bytes([("kadai8/kadai8.ipynb", nb("moodle zipped"), (2026, 7, 1, 0, 0, 0)),
                                                   ("kadai8/.ipynb_checkpoints/kadai8-checkpoint.ipynb", nb("cp"),
                                                    (2026, 7, 1, 0, 0, 0))]))
    out = tmp_path / "subs"
    summary = pull.main(source=download, submissions=out)  # no roster: the Moodle id becomes the id
    assert sorted(p.student for p in summary.students) == ["101", "s2601004", "s2601005", "s2601006"]
    assert b"zipped" in (out / "s2601006.ipynb").read_bytes()
    assert b"moodle zipped" in (out / "101.ipynb").read_bytes()
    m = manifest(out)
    assert m["by"]["s2601006"]["source"] == "s2601006.zip!work/kadai8.ipynb"
    assert any("zip inside a zip" in s for s in m["skipped"])


def test_wrapper_folder_in_zip_is_looked_through(tmp_path):
    source = make_zip(tmp_path / "w.zip", [("kadai8-all/s2601001.ipynb", nb("a"), (2026, 7, 1, 0, 0, 0)),
                                           ("kadai8-all/s2601002.ipynb", nb("b"), (2026, 7, 1, 0, 0, 0))])
    summary = pull.main(source=source, submissions=tmp_path / "subs")
    assert [p.student for p in summary.students] == ["s2601001", "s2601002"]
    single = make_zip(tmp_path / "one.zip", [("s2601003/kadai8.ipynb", nb("c"), (2026, 7, 1, 0, 0, 0))])
    assert [p.student for p in pull.main(source=single, submissions=tmp_path / "x").students] == ["s2601003"]


@pytest.mark.parametrize("entries, symlinks, message", [
    ([("../evil.ipynb", b"x", (2026, 1, 1, 0, 0, 0))], (), "outside the target folder"),
    ([("/etc/evil.ipynb", b"x", (2026, 1, 1, 0, 0, 0))], (), "outside the target folder"),
    ([("a/../../evil.ipynb", b"x", (2026, 1, 1, 0, 0, 0))], (), "outside the target folder"),
    ([("link.ipynb", b"/etc/passwd", (2026, 1, 1, 0, 0, 0))], ("link.ipynb",), "symbolic link"),
    ([("bomb.ipynb", b"0" * (8 * 1024**2), (2026, 1, 1, 0, 0, 0))], (), "zip bomb"),
])
def test_unsafe_archives_are_refused(tmp_path, entries, symlinks, message):
    source = make_zip(tmp_path / "bad.zip", entries, symlinks=symlinks)
    out = tmp_path / "subs"
    with pytest.raises(UnsafeArchiveError, match=message):
        pull.main(source=source, submissions=out)
    assert not out.exists()
    assert not (tmp_path / "evil.ipynb").exists()


def test_entry_count_and_total_size_limits(tmp_path):
    many = make_zip(tmp_path / "many.zip", [(f"s{i}.ipynb", b"{}", (2026, 1, 1, 0, 0, 0)) for i in range(30)])
    with pytest.raises(UnsafeArchiveError, match="more than 20 entries"):
        pull.main(source=many, submissions=tmp_path / "a", limits=ZipLimits(max_entries=20))
    big = make_zip(tmp_path / "big.zip", [(f"s{i}.ipynb", bytes(range(256)) * 40, (2026, 1, 1, 0, 0, 0))
                                          for i in range(5)])
    with pytest.raises(UnsafeArchiveError, match="expands to"):
        pull.main(source=big, submissions=tmp_path / "b", limits=ZipLimits(max_total_bytes=20_000))


def test_nested_unsafe_zip_is_refused(tmp_path):
    inner = zip_bytes([("../../escape.ipynb", b"x", (2026, 1, 1, 0, 0, 0))])
    source = make_zip(tmp_path / "outer.zip", [("s2601001/work.zip", inner, (2026, 1, 1, 0, 0, 0))])
    with pytest.raises(UnsafeArchiveError, match="outside the target folder"):
        pull.main(source=source, submissions=tmp_path / "subs")


def test_cli_prints_one_line_and_exit_code_2(tmp_path):
    source = make_zip(tmp_path / "bad.zip", [("../evil.ipynb", b"x", (2026, 1, 1, 0, 0, 0))])
    result = CliRunner().invoke(cli, ["pull", "--from", str(source), "--submissions", str(tmp_path / "s")])
    assert result.exit_code == 2 and "outside the target folder" in result.output
    good = make_zip(tmp_path / "good.zip", [("s2601001.ipynb", nb("a"), (2026, 7, 11, 0, 0, 0))])
    result = CliRunner().invoke(cli, ["pull", "--from", str(good), "--submissions", str(tmp_path / "s"),
                                      "--deadline", DEADLINE])
    assert result.exit_code == 0, result.output
    assert "s2601001" in result.output and "1 late" in result.output


@pytest.mark.parametrize("entries, message", [
    ([("s1", b"x"), ("s1/work.ipynb", b"y")], "both a file and a folder"),
    ([("s1/work.ipynb", b"y"), ("s1", b"x")], "both a file and a folder"),
    ([("s1.ipynb", b"x"), ("s1.ipynb", b"y")], "appears twice"),
    ([("s1/", b""), ("s1", b"x")], "both a file and a folder"),
])
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_conflicting_archive_layouts_are_refused_with_exit_2_and_one_line(tmp_path, entries, message):
    source = make_zip(tmp_path / "conflict.zip", [(name, data, (2026, 7, 1, 0, 0, 0)) for name, data in entries])
    with pytest.raises(UnsafeArchiveError, match=message):
        pull.main(source=source, submissions=tmp_path / "subs")
    result = CliRunner().invoke(cli, ["pull", "--from", str(source), "--submissions", str(tmp_path / "s")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ids_keep_japanese_names_and_refuse_impostors_newlines_and_reserved_names(tmp_path):
    when = (2026, 7, 1, 0, 0, 0)
    names = ["課題8_山田太郎.ipynb", "課題8_佐藤花子.ipynb", "s2601001.ipynb", "s2601001\u3000.ipynb",
             "s2601002\n.ipynb", "index.html.ipynb", "grades.csv.ipynb", "submissions.json.ipynb",
             "S2601003.ipynb", "s2601003.ipynb"]
    source = make_zip(tmp_path / "class.zip", [(name, nb(name), when) for name in names])
    summary = pull.main(source=source, submissions=tmp_path / "subs")
    pulled = {p.student for p in summary.students}
    assert pulled == {"課題8_山田太郎", "課題8_佐藤花子", "s2601001"}
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == sorted(
        ["課題8_山田太郎.ipynb", "課題8_佐藤花子.ipynb", "s2601001.ipynb", "submissions.json"])
    assert b"s2601001.ipynb" in (tmp_path / "subs" / "s2601001.ipynb").read_bytes()  # the real one, not the impostor
    unmatched = "\n".join(summary.unmatched)
    assert "s2601001\\u3000" in unmatched and "whitespace" in unmatched
    assert "s2601002\\u000a" in unmatched and "control" in unmatched
    for reserved in ("index.html", "grades.csv", "submissions.json"):
        assert f"「{reserved}」 is not a usable student id" in unmatched
    assert unmatched.count("several submissions map to one id") == 2  # S2601003 and s2601003: neither pulled
