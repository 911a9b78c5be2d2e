"""`grader feedback`: give each student their own report and executed notebook back.

Each report is the TA's report drawn for a student (grader.report.pages, audience STUDENT): no link to
the class page, no result.json or kernel log, hidden checks with their outcome and public message only,
no TA-only parts (blank score boxes, override reasons, scorer names, integrity findings beyond "確認中"),
and the TA's scores and comments only once the grade is final. The TA's own files in OUT are untouched.

Formats:

* `folder`: DIR/<student>/report.html + DIR/<student>/executed.ipynb (hand out as you like).
* `moodle`: a zip for the assignment's "Upload multiple feedback files in a zip" (View all submissions
  → Grading action; the assignment needs Feedback types → Feedback files). Moodle's importer
  (mod/assign/feedback/file/importziplib.php, is_valid_filename_for_import) splits each folder name of a
  file's path at "_" into fullname_participantid_plugintype_pluginname[_] and gives the file to that
  participant; the folders of Moodle's own "Download all submissions" have exactly this form
  (`Full Name_12345_assignsubmission_file_`), so each student's files go into the folder `grader pull`
  read their notebook from (its manifest keeps it). A file whose name and content equal one of the
  student's submitted files is skipped by Moodle, so the notebook goes back as executed.ipynb.
  https://docs.moodle.org/401/en/Assignment_settings (Feedback types: Feedback files)
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.assignment.content import Content, load_content
from grader.errors import ConfigError
from grader.i18n import both
from grader.lms.release import load_class, moodle_students
from grader.report.pages import STUDENT, render_student_report
from grader.results import StudentResult

FORMATS = ("folder", "moodle")
REPORT, NOTEBOOK = "report.html", "executed.ipynb"
MARKER = ".grader-feedback"  # marks a folder `feedback` wrote, so a rerun may replace it


@dataclass
class Released:
    path: Path
    format: str
    students: list[str]
    provisional: list[str] = field(default_factory=list)  # released with a score marked 暫定
    files: list[str] = field(default_factory=list)        # every file written, relative to `path`


def release(*, out: Path, project_root: Path, assignment: str, format: str = "folder", to: Path | None = None,
            lang: str | None = None) -> Released:
    if format not in FORMATS:
        raise ConfigError(both("feedback_unknown_format", format=format, formats=", ".join(FORMATS)))
    graded = load_class(out, project_root, assignment, lang)
    content = load_content(graded.spec.root)
    folders = ({s: who.folder for s, who in moodle_students(graded).items()} if format == "moodle"
               else {s: s for s in graded.results})
    with tempfile.TemporaryDirectory(prefix="grader-feedback-") as scratch:
        staged = Path(scratch)
        files = [f for name, result in graded.results.items()
                 for f in write_one(result, out / name, staged / folders[name], content, folders[name])]
        target = to or out / ("grader-feedback" if format == "folder" else "grader-feedback-moodle.zip")
        if format == "moodle":
            write_zip(staged, files, target)
        else:
            replace_folder(staged, target)
    provisional = [s for s, r in graded.results.items() if not r.complete]
    return Released(target, format, list(graded.results), provisional, files)


def write_one(result: StudentResult, source: Path, folder: Path, content: Content, relative: str) -> list[str]:
    """One student's report.html (+ executed.ipynb when there is one); their paths relative to the release."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = source / NOTEBOOK
    has_notebook = notebook.is_file() and not notebook.is_symlink()
    html = render_student_report(result, source, content, audience=STUDENT,
                                 notebook_file=NOTEBOOK if has_notebook else None)
    (folder / REPORT).write_text(html, encoding="utf-8")
    written = [f"{relative}/{REPORT}"]
    if has_notebook:
        shutil.copyfile(notebook, folder / NOTEBOOK)
        written.append(f"{relative}/{NOTEBOOK}")
    return written


def write_zip(staged: Path, files: list[str], target: Path) -> None:
    """Names in UTF-8 (Python flags non-ASCII names so), written to a temporary file first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(staged / name, name)
    partial.replace(target)


def replace_folder(staged: Path, target: Path) -> None:
    """The release folder holds this release only (a student no longer in the class loses their old copy);
    a folder that is not an earlier release is never emptied."""
    if target.exists():
        if not (target / MARKER).is_file() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError(both("feedback_target_not_empty", path=target))
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged, target)
    (target / MARKER).write_text("grader feedback\n", encoding="utf-8")
