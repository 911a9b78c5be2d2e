"""`grader export`: the final grades as a file an LMS uploads as it is (or a plain CSV for anything else).

Scores are the final ones (grader.lms.release → grader.gradebook.final), never recomputed. A provisional
score (a 考察 not scored yet, a flagged submission not decided: `StudentResult.complete`) is never sent
as a grade: the LMS formats leave its Grade cell empty and say 暫定 in the comment; the generic CSV
carries it with `complete` = 0.

Formats, with the columns each system documents:

* `moodle`: the assignment's *grading worksheet* (Assignment → Feedback types → Offline grading
  worksheet; View all submissions → Grading action → "Upload grading worksheet"). Moodle's own worksheet
  has the columns MOODLE_COLUMNS; its importer (mod/assign/feedback/offline/importgradeslib.php) finds the
  columns by their names in the uploading user's language (get_string 'recordid' = "Identifier",
  'grade' = "Grade", 'lastmodifiedgrade' = "Last modified (grade)", and the feedback plugin's field
  "Feedback comments"), reads the participant id after "Participant " and, unless "Ignore last modified
  date" is ticked, skips a row whose Moodle grade changed after "Last modified (grade)". The headers here
  are Moodle's English ones: upload with Moodle set to English.
  https://docs.moodle.org/401/en/Assignment_settings (Feedback types: Offline grading worksheet)
* `canvas`: the Gradebook import CSV (Grades → Import). Canvas's export and import have Student, ID,
  SIS User ID, SIS Login ID, Section, then one column per assignment named "<name> (<assignment id>)"
  (a name without an id creates a new assignment), and a "Points Possible" row under the header.
  https://teaching.resources.osu.edu/toolsets/carmencanvas/guides/calculating-final-grades/import-csv-file-carmen-grades
  (the columns; "Student Name OR ID OR SIS User ID" identifies the student) and
  https://nemogb-dev.github.io/nemogb-r/articles/detailed-canvas-export-info.html ("Quiz 1 (87568490)").
* `csv`: one row per student with the score, `complete`, the TA's comments and the summary (UTF-8 BOM).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from grader.errors import ConfigError
from grader.i18n import both, t
from grader.lms.release import GradedClass, LmsStudent, last_modified, load_class, moodle_students, ta_comments
from grader.report.pages import _csv_safe as csv_safe
from grader.results import PASS, StudentResult

FORMATS = ("moodle", "canvas", "csv")
MOODLE_COLUMNS = ("Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments")
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_POINTS_ROW = "    Points Possible"  # as Canvas writes it in its own export (the importer skips the row)
CSV_COLUMNS = ("student", "lms_id", "status", "score", "max_score", "complete", "ta_comments", "summary",
               "submitted_at", "late")


@dataclass
class Exported:
    path: Path
    format: str
    students: int
    provisional: list[str]  # students whose grade is not final (left without a grade in LMS formats)


def export(*, out: Path, project_root: Path, assignment: str, format: str, to: Path | None = None,
           canvas_assignment_id: str | None = None) -> Exported:
    if format not in FORMATS:
        raise ConfigError(both("export_unknown_format", format=format, formats=", ".join(FORMATS)))
    graded = load_class(out, project_root, assignment)
    if format == "moodle":
        text, encoding = moodle_worksheet(graded), "utf-8"
    elif format == "canvas":
        text, encoding = canvas_gradebook(graded, canvas_assignment_id), "utf-8"
    else:
        text, encoding = generic_csv(graded), "utf-8-sig"  # Excel on Japanese Windows reads the BOM
    path = to or out / f"grader-export-{format}.csv"  # OUT's own names start with "grader" (student_ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding, newline="")
    provisional = [s for s, r in graded.results.items() if not r.complete]
    return Exported(path, format, len(graded.results), provisional)


def summary_line(result: StudentResult) -> str:
    """One line a student reads in the LMS: score, automatic checks passed, provisional or not."""
    automatic = [c for c in result.checks if c.id not in result.answers]
    text = t("export_summary", result.lang, score=result.score, max_score=result.max_score,
             passed=sum(1 for c in automatic if c.status == PASS), total=len(automatic))
    return text + ("" if result.complete else " " + t("export_provisional", result.lang))


def feedback_comment(result: StudentResult, graded: GradedClass) -> str:
    comment = ta_comments(result, graded.reviews)
    return f"{comment}\n{summary_line(result)}" if comment else summary_line(result)


def _rows_to_text(header: tuple[str, ...] | list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def moodle_worksheet(graded: GradedClass) -> str:
    """Moodle's grading worksheet; every student needs a Moodle participant id (from `grader pull`)."""
    people = moodle_students(graded)
    rows = []
    for name, result in graded.results.items():
        who = people[name]
        handed_in = (result.submission or {}).get("submitted_at") or ""
        rows.append([f"Participant {who.lms_id}", csv_safe(who.name), "", t("export_moodle_status", result.lang),
                     result.score if result.complete else "", result.max_score, "Yes", handed_in,
                     last_modified(result, graded.reviews), csv_safe(feedback_comment(result, graded))])
    return _rows_to_text(MOODLE_COLUMNS, rows)


def canvas_gradebook(graded: GradedClass, assignment_id: str | None) -> str:
    """Canvas's Gradebook import: matched by Canvas user id (ID) when `grader pull` read it from Canvas's
    file names, else by SIS User ID (the student id)."""
    title = graded.spec.title.get(graded.lang)
    column = f"{title} ({assignment_id})" if assignment_id else title
    max_score = next(iter(graded.results.values())).max_score
    rows: list[list[object]] = [[CANVAS_POINTS_ROW, "", "", "", "", max_score]]
    for name, result in graded.results.items():
        who = graded.lms.get(name, LmsStudent())
        canvas_id = who.lms_id if who.layout == "canvas" else ""
        sis_id = name if name != canvas_id else ""
        rows.append([csv_safe(who.name or name), canvas_id, csv_safe(sis_id), "", "",
                     result.score if result.complete else ""])
    return _rows_to_text([*CANVAS_COLUMNS, column], rows)


def generic_csv(graded: GradedClass) -> str:
    rows = []
    for name, result in graded.results.items():
        handed_in = result.submission or {}
        late = handed_in.get("late")
        rows.append([csv_safe(name), graded.lms.get(name, LmsStudent()).lms_id, result.status, result.score,
                     result.max_score, int(result.complete), csv_safe(ta_comments(result, graded.reviews)),
                     csv_safe(summary_line(result)), handed_in.get("submitted_at") or "",
                     "" if late is None else int(bool(late))])
    return _rows_to_text(CSV_COLUMNS, rows)
