"""The proof of the self-check: it agrees with `grader grade` on every visible check.

`selfcheck.py` is generated exactly as `make selfcheck` does, but with expected values from the
tiny data set's reference run (the one `graded_batch` used), and run as a student would: in a venv
with only Colab's packages (tests/selfcheck-venv.txt; no grader), `python selfcheck.py NOTEBOOK`,
KERAS_HOME pointing at the tiny data. `grader check` is checked the same way.

The venv is built by `make setup` (tests/selfcheck_venv.py) under .cache/selfcheck-venv/<key>,
keyed by the requirements file and the Python version; nothing is downloaded during the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader.selfcheck import bundle
from grader.assignment.data import fingerprint
from grader.evidence.reader import Evidence
from grader.engine.reference import cache_key
from grader.selfcheck.engine import public_events
from grader.assignment.spec import load_spec

import selfcheck_venv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"
REALISTIC = ROOT / "tests" / "fixtures" / "realistic"
COMPARED = ("id", "status", "points", "max_points", "message", "expected", "actual", "title", "hint")
CP932_FIXTURE = "batch32"  # run on a cp932 console (Japanese Windows)


@pytest.fixture(scope="session")
def colab_python() -> Path:
    """Python of the venv holding only the Colab packages, built by `make setup`."""
    if not selfcheck_venv.ready():
        pytest.fail("the Colab-like venv is missing: run `make setup` (it builds .cache/selfcheck-venv/)")
    python = selfcheck_venv.venv_dir() / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a developer's checkout is not the venv
    no_grader = subprocess.run([str(python), "-c", "import grader"], capture_output=True, cwd="/", env=clean)
    assert no_grader.returncode != 0, "the Colab-like venv must not have the grader"
    return python


@pytest.fixture(scope="session")
def tiny_selfcheck(graded_batch, reference_cache, test_project, tiny_keras_home, tmp_path_factory) -> Path:
    """selfcheck.py with the expected values of the reference run that graded_batch used."""
    spec = load_spec(test_project, "kadai8")
    key = cache_key(SimpleNamespace(spec=spec, budget=spec.budget("quick")), fingerprint(tiny_keras_home))
    evidence = Evidence.load(reference_cache / "kadai8" / f"quick-{key}" / "evidence")
    assert evidence.events, "the reference run of graded_batch is not in the cache"
    text = bundle.render(project_root=test_project, assignment="kadai8", events=public_events(evidence),
                         data="synthetic (tests)")
    path = tmp_path_factory.mktemp("download") / "selfcheck.py"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def selfchecked(colab_python, tiny_selfcheck, tiny_keras_home, tmp_path_factory):
    """Every fixture notebook through `python selfcheck.py NOTEBOOK --json R`, two at a time."""
    home = tmp_path_factory.mktemp("student-home")
    out = tmp_path_factory.mktemp("selfcheck-results")

    def one(notebook: Path):
        encoding = "cp932" if notebook.stem == CP932_FIXTURE else "utf-8"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
               "KERAS_HOME": str(tiny_keras_home), "PYTHONIOENCODING": encoding,
               "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
        report, page = out / f"{notebook.stem}.json", out / f"{notebook.stem}.selfcheck.html"
        done = subprocess.run([str(colab_python), str(tiny_selfcheck), str(notebook), "--json", str(report),
                               "--html", str(page)], capture_output=True, env=env, cwd=str(home), timeout=600)
        data = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None
        if data is not None:  # the HTML page, for the parity test with `grader check`
            data["page"] = page.read_text(encoding="utf-8") if page.is_file() else ""
        return notebook.stem, (data, done, done.stdout.decode(encoding, errors="strict"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, sorted(FIXTURES.glob("*.ipynb"))))


def visible(checks) -> list[dict]:
    return [{k: c[k] for k in COMPARED} for c in checks if c.get("visible", True)]


def test_selfcheck_agrees_with_grader_grade_on_every_visible_check(graded_batch, selfchecked):
    results, _ = graded_batch
    assert set(selfchecked) == set(results)
    for student, graded in results.items():
        report, done, stdout = selfchecked[student]
        assert report is not None, f"{student}: no report\n{stdout}\n{done.stderr.decode(errors='replace')}"
        expected = visible([c.__dict__ for c in graded.checks])
        differ = [(mine, theirs) for mine, theirs in zip(visible(report["result"]["checks"]), expected) if mine != theirs]
        assert not differ and len(report["result"]["checks"]) == len(expected), (
            f"{student} disagrees (self-check, grader): {differ}\ngrader: {graded.status} {graded.message}\n{stdout}")
        assert (report["result"]["status"], report["result"]["message"]) == (graded.status, graded.message)
        hidden = [c for c in graded.checks if not c.visible]
        assert report["hidden"] == {"checks": len(hidden), "points": sum(c.max_points for c in hidden)}
        assert not {c.id for c in hidden} & {c["id"] for c in report["result"]["checks"]}


def test_selfcheck_exit_status_is_0_only_when_every_visible_check_is_ok(selfchecked):
    codes = {student: done.returncode for student, (_, done, _) in selfchecked.items()}
    # The slides' notebook passes every visible check (the shim runs its Keras 2 import), with warnings.
    assert {s: c for s, c in codes.items() if c == 0} == {"correct": 0, "slides_verbatim": 0}, codes
    assert set(codes.values()) == {0, 1}, codes  # every other fixture has a visible problem or a failed run


def test_selfcheck_prints_the_table_in_japanese_even_on_a_cp932_console(selfchecked):
    _, done, stdout = selfchecked[CP932_FIXTURE]  # decoded as cp932 strictly: no mojibake, no crash
    assert "×" in stdout and "○" in stdout and "ジェネレータの長さ" in stdout
    assert "len(g) が参照解と違います" in stdout and "ヒント:" in stdout
    assert "batch_size=16," in stdout and "バッチ" in stdout  # names whole (wrapped at word boundaries), units said
    assert "Traceback" not in done.stderr.decode("cp932", errors="replace")
    _, _, correct = selfchecked["correct"]
    assert "✓ 公開チェックはすべて OK です。" in correct and "非公開の項目が 3 つ" in correct


def test_selfcheck_explains_the_slides_keras2_import_and_the_float_steps(selfchecked):
    _, _, stdout = selfchecked["slides_verbatim"]
    assert "from tensorflow.keras.preprocessing.image import ImageDataGenerator" in stdout
    assert "len(x_train2) // batch_size" in stdout


def checks_table(page: str) -> str:
    return page[page.index('<table class="checks'):page.index("</table>", page.index('<table class="checks'))]


@pytest.mark.parametrize("student", ["correct", "batch32"])
def test_grader_check_agrees_too_and_writes_a_report_beside_the_notebook(
        graded_batch, selfchecked, student, tmp_path, test_project, tiny_keras_home, reference_cache):
    from grader.commands import check

    notebook = tmp_path / f"{student}.ipynb"
    shutil.copy(FIXTURES / f"{student}.ipynb", notebook)
    report = check.main(notebook=notebook, project_root=test_project, assignment="kadai8",
                        keras_home=tiny_keras_home, cache_root=reference_cache)
    results, _ = graded_batch
    assert visible([c.__dict__ for c in report.outcome.result.checks]) == visible(
        [c.__dict__ for c in results[student].checks])
    assert report.exit_code == (0 if student == "correct" else 1)
    html = (tmp_path / f"{student}.selfcheck.html").read_text(encoding="utf-8")
    assert "セルフチェック" in html and "ジェネレータの長さ" in html
    assert "model.test_accuracy" not in html
    # selfcheck.py (Colab's packages only) writes the same page: the grader's report, pictures included
    downloaded = selfchecked[student][0]["page"]
    assert checks_table(downloaded) == checks_table(html)
    for page in (html, downloaded):
        pictures = page[page.index('id="augmentation"'):page.index("</figure>", page.index('id="augmentation"'))]
        assert "data:image/png;base64," in pictures
        assert 'id="selfcheck"' in page and "../index.html" not in page and "result.json" not in page
        assert '{"' not in checks_table(page)
    if student == "batch32":
        assert re.search(r">[\d,]+ バッチ<", checks_table(downloaded))  # values in words, with their unit
        assert 'class="cell-link' in checks_table(downloaded)
        # the link lands on the cell that called flow() (kernel records count cells as the notebook does)
        for page in (html, downloaded):
            row = page[page.index('data-check="generator.length"'):]
            cell = re.search(r'class="cell-link no-print" href="#cell-(\d+)"', row[:row.index("</tr>")]).group(1)
            source = re.search(rf'id="cell-{cell}"><div class="prompt">.*?</div><pre class="source">(.*?)</pre>', page, re.S)
            assert source and ".flow(" in source.group(1), cell


def test_selfcheck_bridges_keras2_code_in_colabs_environment_as_the_grader_does(
        realistic_batch, colab_python, tiny_selfcheck, tiny_keras_home, tmp_path):
    """tensorflow.python.keras, np_utils, SGD(lr, decay), metrics='acc', save_to_dir into a missing folder:
    run by selfcheck.py in the Colab-like venv, the bridge and the checks give the grader's verdicts."""
    student = "課題8_鈴木"
    report = tmp_path / "report.json"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "KERAS_HOME": str(tiny_keras_home), "PYTHONIOENCODING": "utf-8", "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    done = subprocess.run([str(colab_python), str(tiny_selfcheck), str(REALISTIC / f"{student}.ipynb"),
                           "--json", str(report), "--html", str(tmp_path / "report.html")],
                          capture_output=True, env=env, cwd=str(tmp_path), timeout=600)
    assert report.is_file(), done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    mine = json.loads(report.read_text(encoding="utf-8"))["result"]
    results, _ = realistic_batch
    assert visible(mine["checks"]) == visible([c.__dict__ for c in results[student].checks])
    assert any("tensorflow.python.keras" in note for note in mine["notes"])
