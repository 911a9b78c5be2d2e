"""From an LMS zip to reviewed grades in one folder: `pull` → `grade` (real sandboxed kernels) →
`similarity` → a TA's review → a regrade that keeps all of it → back to Moodle: the grading worksheet
(`export --format moodle`) and the feedback zip (`feedback --format moodle`), in which no student's
file holds anything of another student's or a hidden expected value.

Three students in a Moodle bulk download: 山田 (a correct notebook, with an older broken attempt
beside it), 佐藤 (the sample class's correct variant, an hour late) and 伊藤 (佐藤's notebook with
every variable renamed).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, renamed
from grader.commands import export as export_command
from grader.commands import feedback as feedback_command
from grader.commands import grade, pull
from grader.commands import similarity as similarity_command
from grader.review.app import create_app
from grader.gradebook.reviews import ReviewStore

pytestmark = pytest.mark.slow
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"

DEADLINE = "2026-07-10T23:59:00+09:00"
TOKEN = "e2e-token"
DISCUSSION = "discussion.answered"
# Not the template's example id (s2601001, in every student's notebook): the leak check looks for other students' ids.
YAMADA, SATO, ITO = "s2611001", "s2611002", "s2611003"
NAMES = {YAMADA: ("山田 太郎", 101), SATO: ("Hanako Sato", 102), ITO: ("Jiro Ito", 103)}
# Moodle's grading worksheet columns (English UI; mod/assign/feedback/offline/importgradeslib.php finds
# Identifier, Grade and "Last modified (grade)" by name and reads "Feedback comments").
MOODLE_WORKSHEET = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                    "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"]


def moodle_download(folder: Path) -> Path:
    copy = renamed(ROOT / "submissions" / "s2601002.ipynb", folder / "copy.ipynb")
    entries = [
        ("山田 太郎_101_assignsubmission_file_/kadai8_old.ipynb", FIXTURES / "error_midway.ipynb", (2026, 7, 9, 12, 0, 0)),
        ("山田 太郎_101_assignsubmission_file_/kadai8.ipynb", FIXTURES / "correct.ipynb", (2026, 7, 10, 21, 30, 0)),
        ("Hanako Sato_102_assignsubmission_file_/課題8.ipynb", ROOT / "submissions" / "s2601002.ipynb",
         (2026, 7, 11, 0, 59, 0)),
        ("Jiro Ito_103_assignsubmission_file_/kadai8.ipynb", copy, (2026, 7, 10, 23, 0, 0)),
    ]
    source = folder / "moodle-download.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path, when in entries:
            info = zipfile.ZipInfo(name, date_time=when)
            info.flag_bits |= 0x800  # UTF-8 names, as Moodle writes them
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return source


def read_grades(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", encoding="utf-8-sig", newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def test_moodle_zip_to_reviewed_grades_in_one_folder(tmp_path, test_project, tiny_keras_home, reference_cache):
    roster = tmp_path / "roster.csv"
    roster.write_text(f"student_id,name,moodle_id\n{YAMADA},山田 太郎,101\n{SATO},Hanako Sato,102\n"
                      f"{ITO},Jiro Ito,103\n", encoding="utf-8-sig")
    submissions, out = tmp_path / "submissions", tmp_path / "out"

    pulled = pull.main(source=moodle_download(tmp_path), submissions=submissions, roster=roster, deadline=DEADLINE)
    assert sorted(p.student for p in pulled.students) == [YAMADA, SATO, ITO]
    assert (submissions / f"{YAMADA}.ipynb").read_bytes() == (FIXTURES / "correct.ipynb").read_bytes()

    def grade_class():
        return grade.main(assignment="kadai8", submissions=submissions, out=out, budget="quick", jobs=2,
                          project_root=test_project, keras_home=tiny_keras_home, cache_root=reference_cache)

    first = grade_class()
    assert sorted(first.executed) == [YAMADA, SATO, ITO]
    results = {r.student: r for r in first.results}
    assert all(r.status == "graded" for r in results.values()), {r.student: r.message for r in results.values()}
    assert results[SATO].late and results[SATO].submission["late_by_s"] == 3600
    assert not results[YAMADA].late and results[YAMADA].submission["original_name"] == "kadai8.ipynb"

    flagged = similarity_command.main(out=out, submissions=submissions, project_root=test_project).flagged
    assert [(p.a, p.b) for p in flagged] == [(SATO, ITO)]

    app = create_app(out=out, project_root=test_project, assignment="kadai8", token=TOKEN).test_client()
    listing = app.get(f"/?token={TOKEN}")
    assert listing.status_code == 200 and "期限後（1 時間）" in listing.get_data(as_text=True)
    assert "期限後（1 時間）" in app.get(f"/student/{SATO}").get_data(as_text=True)
    saved = app.post(f"/student/{YAMADA}", data={
        "token": TOKEN, "reviewer": "鈴木TA", f"manual_points__{DISCUSSION}": "9",
        f"manual_comment__{DISCUSSION}": "靴の向きに触れていて良い"})
    assert saved.status_code == 302
    saved = app.post(f"/student/{ITO}", data={
        "token": TOKEN, "reviewer": "鈴木TA", f"manual_points__{DISCUSSION}": "0",
        "override_points__model.architecture": "0",
        "override_reason__model.architecture": f"{SATO} と同一のコード（類似度ページ参照）"})
    assert saved.status_code == 302

    def assert_reviewed(grades: dict[str, dict[str, str]]) -> None:
        assert grades[YAMADA][DISCUSSION] == "9"
        assert int(grades[YAMADA]["score"]) == results[YAMADA].score + 9
        assert grades[ITO]["model.architecture"] == "0" and grades[ITO][DISCUSSION] == "0"
        assert grades[SATO][DISCUSSION] == "manual"  # not reviewed yet
        assert (grades[SATO]["late"], grades[SATO]["late_by_minutes"]) == ("1", "60")
        assert grades[SATO]["submitted_at"].startswith("2026-07-11T00:59:00+09:00")
        assert (grades[YAMADA]["late"], grades[YAMADA]["late_by_minutes"]) == ("0", "0")
        index = (out / "index.html").read_text(encoding="utf-8")
        assert "期限後" in index and f"similarity/{SATO}__{ITO}.html" in index
        assert (out / "similarity" / f"{SATO}__{ITO}.html").is_file()
        assert "期限後（1 時間）" in (out / SATO / "report.html").read_text(encoding="utf-8")
        report = (out / ITO / "report.html").read_text(encoding="utf-8")
        assert "鈴木TA" in report and "類似度ページ参照" in report

    assert_reviewed(read_grades(out))

    # The next grading run (nothing changed) executes nothing and keeps every review and the lateness.
    again = grade_class()
    assert again.executed == [] and sorted(again.reused) == [YAMADA, SATO, ITO]
    assert_reviewed(read_grades(out))
    with ReviewStore(out) as store:
        assert [h["action"] for h in store.history("kadai8", ITO)] == ["override", "manual"]

    # Everything a reviewed grade needs is in the one output folder.
    shutil.rmtree(submissions)
    assert {"gradebook.sqlite", "grades.csv", "index.html", "submissions.json", "similarity.json"} <= \
        {p.name for p in out.iterdir()}
    back_to_moodle(out, test_project)


def back_to_moodle(out: Path, project: Path) -> None:
    """`export --format moodle` and `feedback --format moodle` on the reviewed class: 山田 (scored 9) and
    伊藤 (scored 0, overridden) are final, 佐藤 (考察 not scored) is provisional."""
    results = {s: json.loads((out / s / "result.json").read_text(encoding="utf-8")) for s in NAMES}
    worksheet = export_command.main(out=out, project_root=project, assignment="kadai8", format="moodle").path
    header, *rows = list(csv.reader(io.StringIO(worksheet.read_text(encoding="utf-8"))))
    assert header == MOODLE_WORKSHEET
    by_id = {row[0]: dict(zip(header, row)) for row in rows}
    assert by_id["Participant 101"]["Grade"] == str(results[YAMADA]["score"])
    assert by_id["Participant 101"]["Feedback comments"].startswith("靴の向きに触れていて良い\n")
    assert by_id["Participant 103"]["Grade"] == str(results[ITO]["score"]) and results[ITO]["complete"]
    assert by_id["Participant 102"]["Grade"] == "" and "暫定" in by_id["Participant 102"]["Feedback comments"]
    assert not results[SATO]["complete"]

    released = feedback_command.main(out=out, project_root=project, assignment="kadai8", format="moodle")
    with zipfile.ZipFile(released.path) as archive:
        files = {name: archive.read(name).decode("utf-8") for name in archive.namelist()}
    assert sorted(files) == sorted(f"{name}_{pid}_assignsubmission_file_/{file}" for name, pid in NAMES.values()
                                   for file in ("executed.ipynb", "report.html"))
    for name, text in files.items():
        owner = next(s for s, (_, pid) in NAMES.items() if name.split("/")[0].split("_")[1] == str(pid))
        assert student_leaks(text, owner, results) == [], name
    assert 'id="provisional"' in files["Hanako Sato_102_assignsubmission_file_/report.html"]
    assert "靴の向きに触れていて良い" in files["山田 太郎_101_assignsubmission_file_/report.html"]


def student_leaks(text: str, owner: str, results: dict[str, dict]) -> list[str]:
    """What must never be in `owner`'s file: another student's name, id, participant folder or score;
    the accuracy threshold, the reference accuracy and hidden checks' expected values (from result.json);
    the class page link; result.json."""
    found = [f"link: {what}" for what in ('href="../index.html"', "result.json") if what in text]
    own = results[owner]
    for other, (name, pid) in NAMES.items():
        if other == owner:
            continue
        found += [f"{other}: {v}" for v in (other, name, f"_{pid}_assignsubmission") if v in text]
        if results[other]["score"] != own["score"] and re.search(
                rf"(?<![\d.]){results[other]['score']}(<span>)? / {own['max_score']}", text):
            found.append(f"{other}'s score {results[other]['score']}")
    reference = own["reference"]
    own_numbers = {f"{(own.get('evaluation') or {}).get('accuracy') or 0:.3f}"}
    secrets = {repr(reference["threshold"]), f"{reference['threshold']:.4f}"}
    if not name_is_notebook(text):  # Keras logs in a notebook print many 4-digit numbers; reports print few
        secrets |= {f"{reference['threshold']:.3f}", f"{reference['accuracy']:.3f}"} - own_numbers
    secrets |= {c["expected"] for r in results.values() for c in r["checks"]
                if not c["visible"] and isinstance(c["expected"], str) and len(c["expected"]) >= 5}
    return found + [f"hidden value {v}" for v in sorted(secrets) if v in text]


def name_is_notebook(text: str) -> bool:
    return text.lstrip().startswith("{")
