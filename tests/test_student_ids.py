"""Student ids (grader.student_ids): kept as written, refused with a reason, never clashing with
each other or with anything the grader writes at OUT's top level."""

from __future__ import annotations

import shutil
import unicodedata

import pytest

from conftest import FIXTURES, ROOT
from grader import student_ids
from grader.commands.grade import scan_submissions


@pytest.mark.parametrize("name", ["s2601001", "課題8_山田太郎", "課題8_佐藤花子", "Taro Yamada", "ｶﾀｶﾅ", "a.b", "s-1_2"])
def test_names_are_kept_as_written(name):
    assert student_ids.problem(name) is None and student_ids.student_id(name) == unicodedata.normalize("NFC", name)


@pytest.mark.parametrize("name, reason", [
    ("", "empty"), ("a/b", "contains /"), ("a\\b", "contains \\"), ("..", "dot"), (".hidden", "dot"),
    ("s2601002\n", "U+000A"), ("s\t1", "U+0009"), ("s\x001", "U+0000"), ("\u202es1", "U+202E"), ("s\u200b1", "U+200B"),
    (" s1", "whitespace"), ("s1 ", "whitespace"), ("s2601001\u3000", "whitespace"), ("\u3000s1", "whitespace"),
    ("s1\u00a0", "whitespace"), ("s1.", "ends with a dot"), ("a#b", "#"), ("a%41", "%"), ("a:b", ":"),
    ("index.html", "reserved"), ("INDEX.HTML", "reserved"), ("grades.csv", "reserved"), ("Grades", "reserved"),
    ("gradebook.sqlite-wal", "reserved"), ("submissions.json", "reserved"), ("similarity", "reserved"),
    ("grader-notes", "reserved"), ("CON", "device"), ("nul.txt", "device"), ("x" * 121, "too long"),
    ("s1\udcff", "UTF-8"),
])
def test_refused_names_say_why(name, reason):
    why = student_ids.problem(name)
    assert why is not None and reason in why, (name, why)
    with pytest.raises(student_ids.InvalidStudentId, match="使えません"):
        student_ids.student_id(name)


def test_a_dollar_anchored_newline_cannot_slip_through():
    assert student_ids.problem("s2601002\n") is not None  # re.match(r"…$") would have accepted it


def test_names_that_would_be_one_id_are_all_refused():
    nfd = unicodedata.normalize("NFD", "課題8_がくせい")
    usable, refused = student_ids.group_sources({
        "課題8_がくせい": ["課題8_がくせい.ipynb"], nfd: [f"{nfd}.ipynb"], "S1": ["S1.ipynb"], "s1": ["s1.ipynb"],
        "ｓ２": ["ｓ２.ipynb"], "s2": ["s2.ipynb"], "both": ["both.ipynb", "both/"], "課題8_山田太郎": ["課題8_山田太郎.ipynb"]})
    assert usable == {"課題8_山田太郎": "課題8_山田太郎"}
    assert len(refused) == 8 and all("one id" in r.reason for r in refused)


def test_a_submissions_folder_is_scanned_into_submissions_and_refusals(tmp_path):
    for name in ("課題8_山田太郎.ipynb", "課題8_佐藤花子.ipynb", "s2601001.ipynb", "s2601001\u3000.ipynb", "index.html.ipynb",
                 "x\n.ipynb", "A.ipynb", "a.ipynb", "folder/one.ipynb", "folder/two.ipynb"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}", encoding="utf-8")
    scan = scan_submissions(tmp_path)
    assert [s.student for s in scan.submissions] == ["folder", "s2601001", "課題8_佐藤花子", "課題8_山田太郎"]
    assert {s.student: s.path.name for s in scan.submissions}["s2601001"] == "s2601001.ipynb"
    assert sorted(r.name for r in scan.refused) == ["A.ipynb", "a.ipynb", "index.html.ipynb", "s2601001\\u3000.ipynb",
                                                    "x\\u000a.ipynb"]


def test_everything_grade_review_and_similarity_write_at_the_top_level_is_reserved(graded_batch, tmp_path):
    """Enumerates OUT after grade, a review save (republish) and similarity: no student can be named
    like any of it. A new top-level file must get a reserved name (see grader.student_ids)."""
    from grader.commands import similarity
    from grader.review_app import create_app

    results, summary = graded_batch
    out = tmp_path / "out"
    shutil.copytree(summary.out_dir, out)
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for notebook in FIXTURES.glob("*.ipynb"):
        shutil.copy(notebook, submissions / notebook.name)
    similarity.main(out=out, submissions=submissions, project_root=ROOT, threshold=0.0)
    client = create_app(out=out, project_root=ROOT, assignment="kadai8", token="t").test_client()
    client.get("/?token=t")
    saved = client.post("/student/correct", data={"token": "t", "reviewer": "TA",
                                                  "manual_points__discussion.answered": "5"})
    assert saved.status_code == 302
    students = set(results)
    written = {p.name for p in out.iterdir()} - students
    assert {"index.html", "grades.csv", "gradebook.sqlite", "similarity.json", "similarity"} <= written
    assert all(student_ids.problem(name) for name in written), [n for n in written if not student_ids.problem(n)]
    assert all(name.startswith(".") or "reserved" in student_ids.problem(name) for name in written)
    assert all(student_ids.is_valid(name) for name in students)
