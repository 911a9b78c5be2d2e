"""Reports rendered for fixture results (pass, fail, error, timeout, kernel died, invalid): content,
hidden-check redaction, sanitizing of untrusted notebook output, the class page and grades.csv.
No kernels, no TensorFlow: see report_fixtures.py."""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import re
import shutil
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from grader.report import figures
from grader.report import pages as report
from grader.report.render_notebook import merge_streams, png_bytes, render_notebook, sanitize_html, terminal_text
from grader.results import StudentResult
from report_fixtures import ATTACKS, DISCUSSION, THRESHOLD_TEXT, build_class, png_b64


@pytest.fixture(scope="module")
def graded(report_class):
    return report_class


def page(out: Path, student: str) -> str:
    return (out / student / "report.html").read_text(encoding="utf-8")


class Tags(HTMLParser):
    """Every start tag with its attributes, to assert on the markup rather than on text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def check_row(html: str, check_id: str) -> str:
    match = re.search(rf'<tr class="check" data-check="{re.escape(check_id)}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no row for {check_id}"
    return match.group(1)


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(b64) for _, b64 in re.findall(r'src="data:image/(png);base64,([A-Za-z0-9+/=]+)"', html)]


# ---------------------------------------------------------------- per student
def test_passing_report_has_the_header_a_verdict_and_pictures(graded):
    out, results = graded
    html = page(out, "s001_pass")
    assert '<html lang="ja">' in html
    assert "90 / 100" in html and "採点済み" in html
    assert "自動チェックはすべて合格です" in html and "TA の採点待ち" in html
    assert "quick: 1 / 50 エポック, 15 / 15 ステップ" in html  # effective / as written
    assert "TensorFlow 2.21.0" in html and "grader 0.1.0" in html and "synthetic f1x7ure5f1x7ure5" in html
    pictures = embedded_pngs(html)
    # 3 demo generators + the training generator, learning curves, confusion matrix, per-class accuracy
    assert len(pictures) >= 7
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pictures)
    assert "混同行列" in html and "クラス別正解率" in html and "靴は常に左向き" in html
    assert "学習曲線" in html and "テスト正解率: <strong>0.640</strong>" in html


def test_every_check_shows_status_points_message_expected_actual_and_hint(graded):
    out, results = graded
    html = page(out, "s002_fail")
    row = check_row(html, "generator.length")
    assert "不合格" in row and "0 / 5" in row
    assert "len(g) が参照解と違います" in row
    assert ">75 バッチ<" in row and ">38 バッチ<" in row  # expected vs actual, with their unit
    assert "講義「ImageDataGenerator と flow()」" in row
    assert "自動チェック 3 件が未達成" in html


def test_hidden_checks_show_only_outcome_and_failure_message(graded):
    out, results = graded
    html = page(out, "s002_fail")
    accuracy = next(c for c in results["s002_fail"].checks if c.id == "model.test_accuracy")
    assert accuracy.status == "fail" and THRESHOLD_TEXT in accuracy.message  # the full message stays in result.json
    assert 'data-check="model.test_accuracy"' not in html and "model.test_accuracy" not in html
    assert "data.no_test_leak" not in html
    assert THRESHOLD_TEXT not in html and "reference 0.612" not in html
    assert "保存されたモデルのテスト正解率が基準に届きません。" in html
    hidden_rows = re.findall(r'<tr class="check" data-check="hidden"[^>]*>(.*?)</tr>', html, re.S)
    assert len(hidden_rows) == 3 and all("非公開" in row for row in hidden_rows)
    assert not any("講義" in row for row in hidden_rows)  # no hint either


def test_error_report_marks_the_failing_cell_and_links_to_it(graded):
    out, results = graded
    html = page(out, "s003_error")
    assert "エラー" in html and "セル [4] でエラー: ValueError" in html
    failing = [attrs for tag, attrs in tags(html) if tag == "div" and "failed" in (attrs.get("class") or "")]
    assert [a["id"] for a in failing] == ["cell-4", "cell-5"]
    assert 'href="#cell-4"' in html
    assert "\x1b" not in html and "[0;31m" not in html  # ANSI colours stripped from the traceback
    assert "Traceback (most recent call last)" in html and "grader_kernel" not in html  # harness frames hidden


def test_timeout_report_shows_where_it_stopped_and_hides_stale_outputs(graded):
    out, results = graded
    html = page(out, "s004_timeout")
    assert "時間切れ" in html and "ここで停止" in html and "未実行" in html
    assert "STALE OUTPUT" not in html
    assert "それ以降のセルは採点時に実行されていません" in html
    assert "still running" in html


def test_kernel_death_and_invalid_reports_explain_what_happened(graded):
    out, results = graded
    died = page(out, "s005_died")
    assert "カーネル停止" in died and "カーネルが途中で終了しました" in died
    invalid = page(out, "s006_invalid")
    assert "無効" in invalid and "JSON として読めません" in invalid
    assert "Jupyter で開いて保存し直し" in invalid
    assert "0 / 100" in invalid and not embedded_pngs(invalid)


def test_discussion_is_shown_for_the_ta_with_room_for_the_score(graded):
    out, results = graded
    html = page(out, "s001_pass")
    assert results["s001_pass"].answers["discussion.answered"] == DISCUSSION
    assert DISCUSSION in html and "TA 採点: ______ / 10" in html


def test_progress_bars_collapse_and_notes_are_shown(graded):
    out, results = graded
    html = page(out, "s001_pass")
    assert "15/15" in html and "\b" not in html and " 7/15" not in html  # only the final state of the bar
    assert "互換シムを使用" in html
    assert "予算により epochs 50→1" in html


def test_untrusted_notebook_output_is_sanitized(graded):
    out, results = graded
    html = page(out, "s002_fail")
    notebook = html[html.index('id="notebook"'):]
    for tag, attrs in tags(notebook):
        assert tag not in {"script", "iframe", "form", "input", "object", "embed", "style", "svg"}
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs, (tag, attrs)
        for name in ("href", "src"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("javascript:", "http:", "https:", "data:text")), (tag, attrs)
            if tag == "img" and value:
                assert value.startswith("data:image/png;base64,")
    assert "window.__xss" not in html  # not even as text: the script's content is dropped
    assert "before" in notebook and "after" in notebook and "click me" in notebook and "styled" in notebook
    assert "安全のため表示していない出力：application/javascript" in html
    # the real PNG output is embedded, the fake one is not
    assert png_b64(32) in notebook
    assert base64.b64encode(b"<svg onload=alert(1)>").decode() not in html
    assert "出力を省略しました" in notebook and "x" * 7000 not in html


def test_reports_forbid_network_and_scripts_by_csp(graded):
    out, results = graded
    html = page(out, "s001_pass")
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in policy and "img-src data:" in policy and "script-src 'none'" in policy
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing loaded from outside


def test_english_reports(tmp_path):
    out, results = build_class(tmp_path, lang="en")
    html = page(out, "s002_fail")
    assert '<html lang="en">' in html and "Checks" in html and "Training budget" in html
    assert "quick: 1 / 50 epochs, 15 / 15 steps" in html
    assert "The saved model's test accuracy is below the threshold." in unescape(html)
    assert "採点結果" not in html
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "Needs attention" in index and "Pass rate per check" in index


# ---------------------------------------------------------------- the class
def test_class_page_lists_who_needs_attention_and_why(graded):
    out, results = graded
    index = (out / "index.html").read_text(encoding="utf-8")
    attention = index[index.index('id="attention"'):index.index('id="distribution"')]
    order = [s for s in re.findall(r'href="(s\d+_\w+)/report.html"', attention)]
    assert order[:4] == ["s006_invalid", "s005_died", "s004_timeout", "s003_error"]  # most urgent first
    assert set(order) == set(results)  # everyone here has the 考察 pending
    assert "JSON として読めません" in attention and "ValueError: Shapes" in attention
    assert "未達成 3 件：ジェネレータの長さ" in attention  # s002_fail: what was not met
    assert "正解率 0.310 &lt; 0.462" in attention  # below the threshold, for the instructor
    assert "TA 採点待ち" in attention


def test_class_page_has_distributions_pass_rates_and_a_sortable_table(graded):
    out, results = graded
    index = (out / "index.html").read_text(encoding="utf-8")
    assert len(embedded_pngs(index)) == 2  # score histogram, accuracy against the threshold
    assert "0.462" in index and "0.612" in index  # threshold and reference accuracy
    rates = index[index.index('id="checks"'):index.index('id="students"')]
    assert "ジェネレータの長さ" in rates and "67%" in rates
    table = index[index.index('id="student-table"'):]
    for student in results:
        assert f'href="{student}/report.html"' in table
        assert (out / student / "report.html").is_file()
    assert 'data-sort="70"' in table and 'class="sortable"' in index
    script = re.search(r"<script>(.*?)</script>", index, re.S).group(1)
    assert script == report.SORT_SCRIPT and "localeCompare" in script
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in index


def test_grades_csv_opens_in_excel(graded):
    out, results = graded
    raw = (out / "grades.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    header, body = rows[0], rows[1:]
    check_ids = [c.id for c in results["s001_pass"].checks]
    assert header[:4] == ["student", "status", "score", "max_score"] and header[4:4 + len(check_ids)] == check_ids
    assert [r[0] for r in body] == sorted(results)
    by_student = {r[0]: dict(zip(header, r)) for r in body}
    assert by_student["s002_fail"]["score"] == "70" and by_student["s002_fail"]["generator.length"] == "0"
    assert by_student["s001_pass"]["discussion.answered"] == "manual"
    assert by_student["s006_invalid"]["status"] == "invalid" and "JSON として読めません" in by_student["s006_invalid"]["message"]
    assert by_student["s002_fail"]["test_accuracy"] == "0.3100"


def test_csv_cells_cannot_become_formulas(tmp_path):
    result = StudentResult(student="s9", assignment="kadai8", status="error", message="=HYPERLINK(\"x\")",
                           score=0, max_score=0)
    report.write_grades_csv([result], tmp_path / "g.csv")
    assert "'=HYPERLINK" in (tmp_path / "g.csv").read_text(encoding="utf-8-sig")


def test_result_json_round_trips(graded):
    out, results = graded
    import json

    for student, result in results.items():
        data = json.loads((out / student / "result.json").read_text(encoding="utf-8"))
        assert StudentResult.from_dict(data).to_dict() == result.to_dict()
        assert data["reference"]["threshold"] == pytest.approx(0.4623)


# ---------------------------------------------------------------- building blocks
def test_terminal_text_keeps_what_a_terminal_shows():
    assert terminal_text("a\x1b[31mred\x1b[0m") == "ared"
    assert terminal_text(" 1/3 [=>  ]\r 3/3 [===] done\n") == " 3/3 [===] done\n"
    assert terminal_text("abc\b\bX") == "aX"
    merged = merge_streams([new_output("stream", name="stdout", text="12"), new_output("stream", name="stdout", text="\b\b34"),
                            new_output("stream", name="stderr", text="w")])
    assert [m["text"] for m in merged] == ["12\b\b34", "w"]


def test_png_outputs_are_verified():
    assert png_bytes(png_b64()) is not None
    assert png_bytes(base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"garbage").decode()) is None
    assert png_bytes("not base64 !!!") is None
    assert png_bytes(base64.b64encode(b"GIF89a").decode()) is None


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_sanitize_html_leaves_only_inert_markup(name):
    cleaned = sanitize_html(ATTACKS[name])
    for tag, attrs in tags(cleaned):
        assert tag not in {"script", "iframe", "form", "input"}
        assert not any(a.startswith("on") or a == "style" for a in attrs)
        assert not (attrs.get("href") or "").startswith("javascript:")
    assert "__xss" not in cleaned


def test_rendered_notebook_caps_images_and_text():
    cell = new_code_cell("plots()", execution_count=1)
    cell.outputs = [new_output("display_data", data={"image/png": png_b64(), "text/plain": "fig"}) for _ in range(6)]
    cell.outputs.append(new_output("stream", name="stdout", text="line\n" * 1000))
    rendered = render_notebook(new_notebook(cells=[cell]))
    assert rendered.html.count("<img") == 4 and rendered.truncated_cells == [0]
    assert rendered.html.count("line") <= 121 and "出力を省略しました" in rendered.html


def test_figures_fall_back_to_english_labels_without_a_cjk_font(graded, monkeypatch, tmp_path):
    out, results = graded
    monkeypatch.setattr(figures, "cjk_font", lambda: None)
    assert figures.label_lang("ja") == "en"
    shutil.copytree(out / "s001_pass", tmp_path / "s001_pass")
    html = report.write_student_report(results["s001_pass"], tmp_path / "s001_pass").read_text(encoding="utf-8")
    assert len(embedded_pngs(html)) >= 7
    assert "混同行列" in html  # the page itself stays Japanese


def test_figures_reject_arrays_that_are_not_images():
    import numpy as np

    assert figures.batch_grid(np.zeros((3, 5)), None, None, "en") is None
    assert figures.batch_grid(np.zeros((2, 28, 28, 3)), None, None, "en") is None
    assert figures.confusion_matrix([[1, 2], [3, 4]], "en", [str(i) for i in range(10)]) is None
    assert figures.learning_curves({"loss": "x"}, "en") is None
    grid = figures.batch_grid(np.full((16, 28, 28, 1), np.nan), None, None, "en")
    assert grid is not None and grid.startswith("data:image/png;base64,")


def test_lateness_from_the_pull_manifest_in_csv_class_page_and_words(tmp_path):
    late = StudentResult(student="s7", assignment="kadai8", status="graded", message="", score=5, max_score=10,
                         submission={"submitted_at": "2026-07-12T02:00:00+09:00", "late": True,
                                     "late_by_s": 26 * 3600 + 61, "original_name": "課題8.ipynb"})
    on_time = StudentResult(student="s8", assignment="kadai8", status="graded", message="", score=10, max_score=10,
                            submission={"submitted_at": "2026-07-10T20:00:00+09:00", "late": False, "late_by_s": 0})
    by_lms = StudentResult(student="s9", assignment="kadai8", status="graded", message="", score=10, max_score=10,
                           submission={"submitted_at": "2026-07-12T09:00:00+09:00", "late": True, "late_by_s": None})
    unknown = StudentResult(student="s10", assignment="kadai8", status="graded", message="", score=10, max_score=10)
    assert report.late_text(late, "ja") == "期限後（1 日 2 時間）" and report.late_text(late, "en") == "late by 1 d 2 h"
    assert report.late_text(by_lms, "ja") == "期限後（LMS の記録）" and report.late_text(on_time, "ja") == ""
    report.write_grades_csv([late, on_time, by_lms, unknown], tmp_path / "g.csv")
    with open(tmp_path / "g.csv", encoding="utf-8-sig", newline="") as handle:
        rows = {r["student"]: r for r in csv.DictReader(handle)}
    assert (rows["s7"]["late"], rows["s7"]["late_by_minutes"]) == ("1", str(26 * 60 + 2))
    assert (rows["s8"]["late"], rows["s8"]["late_by_minutes"], rows["s9"]["late_by_minutes"]) == ("0", "0", "")
    assert rows["s10"]["submitted_at"] == rows["s10"]["late"] == ""
    page = report.render_class_page([late, on_time, by_lms, unknown], lang="ja", title="課題8", budget_summary="quick")
    attention = page[page.index('id="attention"'):page.index('id="distribution"')]
    assert "s7" in attention and "期限後（1 日 2 時間）" in attention and "s8" not in attention
    assert "<th>提出</th>" in page and "2026年7月10日 20:00 (JST)" in page
    assert "2026-07-1" not in page  # no ISO time anywhere, not even as a sort key


# ---------------------------------------------------------------- readable feedback (issue 15)
RAW_VALUE = re.compile(r'[{}\[\]"]')  # JSON braces, brackets or quotes in a value cell
ENGLISH_FRAGMENTS = ("flow() of an augmenting", "flow #", "datagen #", "reference 0.", "calibration ")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def value_cells(html: str) -> list[str]:
    return [unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r'<td class="value"[^>]*>(.*?)</td>', html, re.S)]


def test_expected_and_actual_are_phrases_with_units_never_json_or_english_in_the_japanese_reports(graded):
    out, results = graded
    for student in results:
        cells = value_cells(page(out, student))
        assert cells, student
        raw = [c for c in cells if RAW_VALUE.search(c) or any(f in c for f in ENGLISH_FRAGMENTS)]
        assert not raw, f"{student}: {raw}"
    failing = page(out, "s002_fail")
    assert ">(16, 28, 28, 1) の画像と (16, 10) のラベル<" in failing and ">(32, 28, 28, 1) の画像と (32, 10) のラベル<" in failing
    passing = page(out, "s001_pass")
    for phrase in ("30 文字以上", "72 文字", "テスト画像の 95% 以上", "one-hot ラベル（10 クラス）", "パラメータ 144,266 個",
                   "4 番目の flow()（3 番目の ImageDataGenerator）", "データ拡張する ImageDataGenerator の flow()"):
        assert phrase in passing, phrase


def test_english_reports_say_the_values_in_english(tmp_path):
    out, results = build_class(tmp_path, lang="en")
    html = page(out, "s002_fail")
    cells = value_cells(html)
    assert "75 batches" in cells and "38 batches" in cells
    assert "images (32, 28, 28, 1) and labels (32, 10)" in cells
    assert not [c for c in cells if RAW_VALUE.search(c) or re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", c)]
    assert "This notebook's batch_size is 32." in unescape(html) and "See cell [3]" in html


def test_one_cause_is_said_once_and_the_checks_it_stops_point_back_to_it(graded):
    out, _ = graded
    html = unescape(page(out, "s005_died"))  # model.fit never finished: five checks share that cause
    table = html[html.index('id="checks"'):html.index("</table>")]
    assert table.count("model.fit の呼び出しが見つかりませんでした。") == 1
    assert table.count("上の「スライドの CNN（パラメータ数 144,266）」と同じ原因です。") == 4
    assert 'href="#check-10"' in table  # the pointer is a link to the row that says it
    failing = unescape(page(out, "s002_fail"))  # the spec's failure text is not repeated by a generic reason
    assert "形が違います。" not in failing.replace("参照解と違います", "")


def test_a_failing_check_links_to_the_cell_that_made_what_it_judged(graded):
    out, _ = graded
    html = page(out, "s002_fail")
    row = check_row(html, "generator.length")
    target = re.search(r'<a class="cell-link no-print" href="#cell-(\d+)">セル \[(\d+)\] を見る</a>', row)
    assert target, row
    cell = re.search(rf'<div class="[^"]*" id="cell-{target.group(1)}"><div class="prompt">\[(\d+)\]', html)
    assert cell and cell.group(1) == target.group(2)  # the link's number is the prompt the reader sees there
    assert "flow(" in html[cell.end():cell.end() + 2000]
    assert "cell-link" not in check_row(html, "data.shape")  # passing checks have no link


def test_times_are_shown_in_the_course_time_zone_never_as_utc_iso(graded):
    out, results = graded
    for student in results:
        html = page(out, student)
        assert not ISO_TIME.search(html), student
        assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d \(JST\)", html), student
    assert not ISO_TIME.search((out / "index.html").read_text(encoding="utf-8"))


def test_ta_scores_and_overrides_are_shown_as_the_ta_s_not_as_passed(graded, tmp_path):
    from grader.assignment.content import load_content
    from grader.gradebook.final import final_result
    from grader.gradebook.reviews import Override
    from grader.gradebook.store import ManualScore
    from report_fixtures import ROOT

    out, results = graded
    automatic = results["s001_pass"]
    manual = {"discussion.answered": ManualScore("kadai8", "s001_pass", "discussion.answered", 6, "よく書けています",
                                                 "ta1", "2026-11-29T08:20:00+00:00")}
    overrides = {"generator.length": Override("kadai8", "s001_pass", "generator.length", 3, "flow の引数を写しただけ",
                                              "ta2", "2026-11-29T09:05:00+00:00")}
    shutil.copytree(out / "s001_pass", tmp_path / "s001_pass")
    for lang, scored, changed, when in (("ja", "TA 採点 6 / 10", "TA が変更: 3 / 5", "2026年11月29日 18:05 (JST)"),
                                        ("en", "TA score 6 / 10", "Changed by the TA: 3 / 5", "29 Nov 2026 18:05 JST")):
        final = final_result(dataclasses.replace(automatic, lang=lang), manual=manual, overrides=overrides)
        html = report.render_student_report(final, tmp_path / "s001_pass", load_content(ROOT / "assignments" / "kadai8"))
        length, answer = check_row(html, "generator.length"), check_row(html, "discussion.answered")
        assert changed in length and "flow の引数を写しただけ" in length and when in length
        assert scored in answer and "✓" not in answer and "✓" not in length
        assert not ISO_TIME.search(html)
        index = report.render_class_page([final], lang=lang, title="課題8", budget_summary="quick")
        assert re.search(r'title="考察[^"]*"[^>]*>TA</td>', index)
