"""The student self-check without kernels: what ships, what it leaves out, diagnosis, output encoding.

The end-to-end proof (the downloaded file in a Colab-like venv agreeing with `grader grade` on the
fixture notebooks) is tests/test_selfcheck_end_to_end.py.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from evidence_builder import VARIANTS, reference_like, synthetic_data, variant
from grader.selfcheck import bundle
from grader.judge.checks import CheckContext
from grader.errors import ConfigError
from grader.selfcheck import diagnose
from grader.selfcheck.engine import (
    PUBLIC_FIELDS, SUMMARY_KEYS, load_public_spec, public_events, public_reference, public_spec,
)
from grader.selfcheck.text import Printer
from grader.assignment.spec import load_spec
from grader.judge.verdicts import judge_all

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT, "kadai8")
RAW_SPEC = tomllib.loads(SPEC.source_bytes.decode("utf-8"))
SELFCHECK = ROOT / "assignments" / "kadai8" / "selfcheck.py"
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"
HIDDEN = {c.id for c in SPEC.checks if not c.visible}
VISIBLE = [c.id for c in SPEC.checks if c.visible]

# What Google Colab has besides the standard library (and what the venv of the end-to-end test has).
COLAB_IMPORTS = {"numpy", "nbformat", "nbclient", "jupyter_client", "grader",
                 # the HTML page (grader.report.pages): Colab has these too (tests/selfcheck-venv.txt)
                 "jinja2", "markupsafe", "matplotlib", "markdown_it", "PIL"}
OPTIONAL = {"ImportError", "ModuleNotFoundError"}  # `try: import x / except ImportError:` may be missing


# ---------------------------------------------------------------- what ships
def test_the_bundle_holds_the_graders_own_modules_and_nothing_instructor_only():
    files = bundle.bundle_files()
    for needed in ("grader/engine/pipeline.py", "grader/engine/execute.py", "grader/isolation/launch.py",
                   "grader/evidence/reader.py", "grader/judge/verdicts.py", "grader/i18n/messages.toml",
                   "grader/assignment/spec.py", "grader/judge/checks/generator.py",
                   "grader/judge/checks/training.py", "grader/kernel/grader_kernel.py", "grader/selfcheck/engine.py",
                   # the HTML page is the grader's own student report (grader.selfcheck.page)
                   "grader/report/pages.py", "grader/report/figures.py", "grader/report/phrases.py",
                   "grader/report/templates/report.html.j2", "grader/report/templates/_style.css.j2"):
        assert needed in files
    for instructor_only in ("grader/engine/reference.py", "grader/cli.py", "grader/gradebook/store.py",
                            "grader/selfcheck/bundle.py", "grader/batch/grade.py", "grader/kernel/predict.py",
                            "grader/report/templates/index.html.j2", "grader/review/app.py"):
        assert instructor_only not in files
    assert not any(name.endswith((".ipynb", "spec.toml")) for name in files)


def _module_level_imports(source: str) -> set[str]:
    """Top-level names imported outside functions (what runs when the module is imported)."""
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Try) and any(isinstance(h.type, ast.Name) and h.type.id in OPTIONAL
                                                   for h in node.handlers):
                visit(node.orelse)  # an optional import: the module works without it
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(source).body)
    return found


def test_bundled_modules_import_only_the_standard_library_and_what_colab_has():
    for name, data in bundle.bundle_files().items():
        if not name.endswith(".py"):
            continue
        outside = _module_level_imports(data.decode("utf-8")) - set(sys.stdlib_module_names) - COLAB_IMPORTS
        assert not outside, f"{name} imports {outside} at module level; Colab may not have it"


def test_the_code_zip_is_reproducible():
    assert bundle.code_zip(bundle.bundle_files()) == bundle.code_zip(bundle.bundle_files())


def test_public_spec_keeps_only_visible_checks_and_the_quick_budget():
    public = public_spec(RAW_SPEC)
    assert [c["id"] for c in public["checks"]] == VISIBLE
    assert set(public["budgets"]) == {"quick"} and public["assignment"]["default_budget"] == "quick"
    assert public["hidden"] == {"checks": len(HIDDEN), "points": sum(c.points for c in SPEC.checks if not c.visible)}
    assert "reference" not in public["assignment"]
    spec = load_public_spec(public, ROOT)
    assert spec.budget("quick") == SPEC.budget("quick") and spec.seed == SPEC.seed


def test_a_visible_check_that_needs_the_graders_data_is_refused():
    raw = json.loads(json.dumps(RAW_SPEC))
    next(c for c in raw["checks"] if c["id"] == "model.test_accuracy")["visible"] = True
    with pytest.raises(ConfigError, match="model.test_accuracy"):
        public_spec(raw)


def test_public_events_are_shapes_and_counts_only(tmp_path):
    events = public_events(reference_like(tmp_path))
    assert {e["kind"] for e in events} == set(PUBLIC_FIELDS)
    for event in events:
        assert set(event) <= {"seq", "kind", *PUBLIC_FIELDS[event["kind"]]}
        for value in event.values():
            for summary in (value if isinstance(value, list) else [value]):
                if isinstance(summary, dict) and "shape" in summary:
                    assert set(summary) <= set(SUMMARY_KEYS)
    text = json.dumps(events)
    for secret in ("hashes", "file", "history", "accuracy", "claimed", "layers", "min", "mean"):
        assert f'"{secret}' not in text


@pytest.mark.parametrize("name", ["correct", *VARIANTS])
def test_visible_checks_give_the_same_verdicts_on_public_events_as_on_the_full_reference(tmp_path, name):
    """The fast half of the agreement proof: full reference evidence vs what ships, per fault."""
    data = synthetic_data()
    reference = reference_like(tmp_path / "reference", data)
    student = reference_like(tmp_path / "student", data) if name == "correct" else variant(tmp_path / "s", name, data)
    shipped = public_reference(public_events(reference), tmp_path / "public").evidence
    visible = load_public_spec(public_spec(RAW_SPEC), ROOT)
    nb = new_notebook(cells=[new_markdown_cell("## 考察"), new_markdown_cell("回転や上下反転は靴や服の向きを変えてしまうので、" * 3)])

    def judged(ref):
        return judge_all(visible, lambda check: CheckContext(
            student=student, reference=ref, params=check.params, budget="quick",
            test_hashes=data.test_hashes, notebook=nb), "ja")

    assert [c.__dict__ for c in judged(shipped)] == [c.__dict__ for c in judged(reference)]


# ---------------------------------------------------------------- the committed file
def test_the_committed_selfcheck_is_what_the_generator_makes_now():
    """Regenerate with the committed reference events: code, spec and template must be current."""
    committed = SELFCHECK.read_text(encoding="utf-8")
    embedded = bundle.read_embedded(committed)
    assert embedded.build["source_key"] == bundle.source_key(ROOT, "kadai8"), (
        "the reference notebook, harness or quick budget changed: run `make selfcheck` (needs the real data)")
    regenerated = bundle.render(project_root=ROOT, assignment="kadai8", events=embedded.events,
                                data=embedded.build["data"])
    assert regenerated == committed, "assignments/kadai8/selfcheck.py is out of date: run `make selfcheck`"


def test_the_committed_selfcheck_ships_no_hidden_check_and_no_reference_value():
    embedded = bundle.read_embedded(SELFCHECK.read_text(encoding="utf-8"))
    assert {c["id"] for c in embedded.spec["checks"]} == set(VISIBLE)
    assert not HIDDEN & set(json.dumps(embedded.spec).split('"'))
    assert {e["kind"] for e in embedded.events} <= set(PUBLIC_FIELDS)
    assert embedded.build["data"].split()[0] in ("npm", "keras", "cache")  # the real data, not a test set
    names = zipfile.ZipFile(io.BytesIO(embedded.code)).namelist()
    assert sorted(names) == sorted(bundle.bundle_files())


def test_the_bundle_compiles_on_python_3_10(tmp_path):
    """Students' laptops may have Python 3.10 (TensorFlow supports it)."""
    candidates = [*sorted(Path("/root/.pyenv/versions").glob("3.10*/bin/python")), shutil.which("python3.10")]
    python310 = next((str(c) for c in candidates if c and subprocess.run(
        [str(c), "--version"], capture_output=True).returncode == 0), None)
    if python310 is None:
        pytest.skip("no Python 3.10 here")
    zipfile.ZipFile(io.BytesIO(bundle.code_zip(bundle.bundle_files()))).extractall(tmp_path)
    shutil.copy(SELFCHECK, tmp_path / "selfcheck.py")
    done = subprocess.run([python310, "-m", "compileall", "-q", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def run_selfcheck(*args: str, encoding: str = "utf-8", cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, str(SELFCHECK), *args], capture_output=True, env=env, cwd=cwd,
                          timeout=120)


def test_a_missing_notebook_is_explained_with_exit_2_even_on_a_cp932_console(tmp_path):
    (tmp_path / "課題8_提出.ipynb").write_text("{}", encoding="utf-8")
    done = run_selfcheck(str(tmp_path / "課題8.ipynb"), encoding="cp932")
    out = done.stdout.decode("cp932")
    assert done.returncode == 2, out + done.stderr.decode("cp932", "replace")
    assert "ファイルが見つかりません" in out and "課題8_提出.ipynb" in out


def test_a_notebook_that_is_not_json_asks_whether_it_was_saved(tmp_path):
    done = run_selfcheck(str(FIXTURES / "not_json.ipynb"), "--json", str(tmp_path / "r.json"),
                         "--html", str(tmp_path / "r.html"))  # not beside the fixture
    out = done.stdout.decode("utf-8")
    assert done.returncode == 1, out + done.stderr.decode()
    assert "保存しましたか" in out and "JSON" in out
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["result"]["status"] == "invalid" and report["exit_code"] == 1
    assert {c["status"] for c in report["result"]["checks"]} == {"not_run"}


# ---------------------------------------------------------------- diagnosis and output
def notebook_file(tmp_path: Path, *sources: str, counts: list | None = None) -> Path:
    cells = [new_code_cell(s, execution_count=(counts or [None] * len(sources))[i]) for i, s in enumerate(sources)]
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    return path


def texts(findings) -> str:
    return "\n".join(f.text for f in findings)


def test_the_slides_keras2_import_is_explained_with_the_keras3_spelling(tmp_path):
    path = notebook_file(tmp_path, "from keras.preprocessing.image import ImageDataGenerator",
                         "model.fit(g, steps_per_epoch=len(x_train2) / batch_size)")
    found = texts(diagnose.notebook_findings(path, "3.15.1"))
    assert "Keras 3" in found and diagnose.KERAS3_SPELLING in found
    assert "len(x_train2) // batch_size" in found
    fine = notebook_file(tmp_path, diagnose.KERAS3_SPELLING, "model.fit(g, steps_per_epoch=len(x_train2) // 64)")
    assert "ImportError" not in texts(diagnose.notebook_findings(fine, "3.15.1"))
    assert "小数" not in texts(diagnose.notebook_findings(fine, "3.15.1"))


def test_out_of_order_execution_is_noted(tmp_path):
    path = notebook_file(tmp_path, "a = 1", "b = a", "c = b", counts=[1, 5, 3])
    assert "[5] の下に [3]" in texts(diagnose.notebook_findings(path, "3.15.1"))
    ordered = notebook_file(tmp_path, "a = 1", "b = a", counts=[1, None])
    assert "順に実行されていません" not in texts(diagnose.notebook_findings(ordered, "3.15.1"))


@pytest.mark.parametrize("content, expected", [
    (b"", "空です"), (b'{"cells": [', "JSON"), (b"<!DOCTYPE html><html>", "HTML"), (b"\xff\xfe\x00", "UTF-8"),
])
def test_an_unsaved_or_broken_notebook_is_explained(tmp_path, content, expected):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    found = diagnose.notebook_findings(path, "3.15.1")
    assert any(f.level == diagnose.ERROR and expected in f.text for f in found), texts(found)


def test_environment_problems_stop_before_running():
    fine = {"python": "3.12.1", "tensorflow": "2.19.0", "keras": "3.10.0", "numpy": "2.0.2", "nbformat": "5.10.4",
            "nbclient": "0.10.2", "ipykernel": "6.17.1", "jupyter_client": "6.1.12"}
    assert diagnose.environment_findings(fine) == []
    old = diagnose.environment_findings({**fine, "keras": "2.15.0"})
    assert old[0].level == diagnose.ERROR and "Keras 3" in old[0].text
    missing = diagnose.environment_findings({**fine, "nbclient": None})
    assert "nbclient" in missing[0].text and "pip install" in missing[0].text


def test_google_drive_not_mounted_is_explained():
    found = texts(diagnose.path_findings(Path("/content/drive/MyDrive/課題8.ipynb")))
    assert "見つかりません" in found
    if not Path("/content/drive").exists():
        assert "drive.mount" in found


@pytest.mark.parametrize("encoding, ok, ng", [("utf-8", "✓", "✗"), ("cp932", "○", "×"), ("ascii", "OK", "NG")])
def test_output_never_fails_on_the_console_encoding(encoding, ok, ng):
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding=encoding)
    out = Printer(stream)
    assert (out.marks["ok"], out.marks["ng"]) == (ok, ng)
    out("画素値が 0〜1 の範囲にありません ≥ 0.95 → ✓ – 課題8")
    stream.flush()
    assert "課題8" in raw.getvalue().decode(encoding, errors="replace") or encoding == "ascii"


def test_plain_text_wraps_japanese_anywhere_but_never_inside_names_or_shapes():
    from grader.selfcheck.text import columns, wrap

    text = ("len(g) が参照解と違います。flow(x_train, y_train, batch_size=16, shuffle=False) としましたか？ "
            "/content/drive/MyDrive/課題8_提出用_最終版.ipynb を開き、selfcheck_report_with_a_long_name.html と"
            "期待: (16, 28, 28, 1) の画像と (16, 10) のラベルを確認してください。"
            "`from tensorflow.keras.preprocessing.image import ImageDataGenerator` と書いてください。")
    lines = wrap(text, " " * 14, width=60)
    joined = "\n".join(lines)
    for whole in ("batch_size=16,", "shuffle=False)", "/content/drive/MyDrive/課題8_提出用_最終版.ipynb",
                  "selfcheck_report_with_a_long_name.html", "(16, 28, 28, 1)", "(16, 10)",
                  "`from tensorflow.keras.preprocessing.image import ImageDataGenerator`"):
        assert whole in joined, (whole, lines)
    for line in lines:  # only a name longer than the line may pass the width, alone on its line
        assert columns(line) <= 60 or len(line.split()) == 1 or line.strip().startswith("`"), line
    assert len(lines) > 3 and all(line.startswith(" " * 14) for line in lines)
    assert not any(line.lstrip().startswith(("。", "、", "）")) for line in lines)  # no line starts with closing marks
