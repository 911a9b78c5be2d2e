"""A small graded class for report tests, built without kernels or TensorFlow.

Not a test module. `build_class(folder)` writes, for one student per outcome (pass, fail,
error, timeout, kernel died, invalid), the evidence (with `evidence_builder`), an executed
notebook (with nbformat) and the result (through the real pipeline steps `judge_checks` and
`build_result`), then the reports, exactly as `grader grade` lays them out.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from evidence_builder import Data, pipeline
from grader.evaluate import ModelEvaluation
from grader.launch import LocalLauncher
from grader.execute import CellError, ExecutionResult
from grader.checks import DatasetHashes
from grader.kernel.grader_kernel import source_hashes
from grader.pipeline import ReferenceRun, Session, StudentRun, Submission, build_result, judge_checks
from grader.report import write_class_outputs, write_student_report
from grader.results import INVALID, StudentResult
from grader.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_ACCURACY = 0.6123  # quick budget: threshold = 0.6123 - 0.15 = 0.4623
THRESHOLD_TEXT = "0.462"
DISCUSSION = ("靴の画像はいつも左向きなので、上下反転や90度回転で学習すると、テストには出てこない向きの画像まで"
              "覚えることになり、正解率が下がったのだと思う。")
ATTACKS = {  # text/html outputs a notebook could display
    "script": "<p>before</p><script>window.__xss = 1; alert(1)</script><p>after</p>",
    "onerror": '<img src="x" onerror="window.__xss = 2">',
    "javascript": '<a href="javascript:window.__xss=3">click me</a>',
    "iframe": '<iframe src="https://example.invalid/"></iframe><form action="https://example.invalid/"><input name="q"></form>',
    "style": '<p style="background:url(https://example.invalid/x.png)" onclick="window.__xss=4">styled</p>',
}


def fixture_data(n_train: int = 1200, n_test: int = 200, seed: int = 0) -> Data:
    """Images with an orientation (a boot-like L shape whose size depends on the class), so flips show."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n_train + n_test) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 40, (n_train + n_test, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        height = 8 + int(label)
        image[24 - height:24, 5:10] = 230  # the shaft, on the left
        image[19:24, 5:22 - int(label) // 2] = 200  # the sole, pointing right
    images[:, 0, 0] = 255
    for a in (images, labels):
        a.setflags(write=False)
    return Data(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


def png_b64(size: int = 24) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (30, 120, 200)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_for(accuracy: float, n_per_class: int = 20) -> tuple[list[list[int]], list[float]]:
    """A 10×10 confusion matrix with the given accuracy, shoes better than clothes."""
    matrix = np.zeros((10, 10), dtype=int)
    for k in range(10):
        right = round(n_per_class * min(1.0, accuracy + (0.2 if k in (5, 7, 9) else -0.1)))
        matrix[k, k] = right
        matrix[k, (k + 6) % 10] = n_per_class - right
    per_class = (np.diag(matrix) / matrix.sum(axis=1)).round(4).tolist()
    return matrix.tolist(), per_class


def evaluation(accuracy: float | None, fit: int | None = 1, problem: str | None = None) -> ModelEvaluation:
    if accuracy is None:
        return ModelEvaluation(fit=fit, problem=problem)
    confusion, per_class = confusion_for(accuracy)
    return ModelEvaluation(fit=fit, accuracy=accuracy, per_class=per_class, confusion=confusion, input_scale=1 / 255)


# ---------------------------------------------------------------- notebooks
def notebook(*code: Any, discussion: str = DISCUSSION):
    """A student notebook: title, the code cells given, then the 考察."""
    cells = [new_markdown_cell("# 課題8: Kerasによるデータ拡張\n\n手順に沿って **拡張** してください。")]
    for item in code:
        cells.append(item if not isinstance(item, str) else new_code_cell(item))
    cells += [new_markdown_cell("## 考察"), new_markdown_cell(discussion)]
    return new_notebook(cells=cells)


def ran(source: str, count: int | None, *outputs: Any):
    cell = new_code_cell(source, execution_count=count)
    cell.outputs = list(outputs)
    return cell


def stream(text: str, name: str = "stdout"):
    return new_output("stream", name=name, text=text)


def error_output(ename: str, evalue: str):
    return new_output("error", ename=ename, evalue=evalue, traceback=[
        "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
        f"\x1b[0;31m{ename}\x1b[0m                                Traceback (most recent call last)",
        "Cell \x1b[0;32mIn[5], line 2\x1b[0m\n      1 batch_size = 64\n----> 2 model.fit(...)",
        "File \x1b[0;32m/opt/grader/kernel/grader_kernel.py:329\x1b[0m, in \x1b[0;36mHarness.trace_model\x1b[0m\n--> 329 result = original_fit()",
        f"\x1b[0;31m{ename}\x1b[0m: {evalue}"])


def progress(steps: int = 15) -> list[Any]:
    """Keras's progress bar: one stream output per update, each erasing the last with \\b."""
    outs = [stream("Epoch 1/1\n")]
    line = ""
    for step in range(1, steps + 1):
        erase = "\b" * len(line)
        line = f"\r{step:>3}/{steps} ━━━━━━━━━━ 0s 10ms/step - accuracy: {0.1 + step / 100:.4f} - loss: 2.2000"
        outs.append(stream(erase + line))
    outs.append(stream(" - val_accuracy: 0.4100 - val_loss: 1.7000\n"))
    return outs


def correct_cells() -> list[Any]:
    return [
        ran("from keras.datasets import fashion_mnist\n(x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()", 1),
        ran("datagen = ImageDataGenerator(rotation_range=90)\ng = datagen.flow(x_train, y_train, batch_size=16, shuffle=False)\nlen(g)", 2,
            new_output("execute_result", data={"text/plain": "75"}, execution_count=2)),
        ran("import matplotlib.pyplot as plt\nplt.imshow(g[0][0][0, :, :, 0], cmap='gray')", 3,
            new_output("display_data", data={"image/png": png_b64(), "text/plain": "<Figure>"})),
        ran("history = model.fit(datagen.flow(x_train2, y_train2, batch_size=64),\n"
            "                    steps_per_epoch=len(x_train2) / 64, epochs=50, validation_data=(x_valid, y_valid))", 4,
            *progress()),
        ran("score = model.evaluate(x_test, y_test, verbose=0)\nprint('Test accuracy:', score[1])", 5,
            stream("Test accuracy: 0.35\n")),
    ]


def hostile_cells() -> list[Any]:
    """Outputs a report must never render as live markup, plus a huge one and fake images."""
    outputs = [new_output("display_data", data={"text/html": html, "text/plain": f"<{name}>"}) for name, html in ATTACKS.items()]
    outputs += [
        new_output("display_data", data={"application/javascript": "window.__xss = 5", "text/plain": "<JS>"}),
        new_output("display_data", data={"image/png": base64.b64encode(b"<svg onload=alert(1)>").decode(), "text/plain": "<fake png>"}),
        new_output("display_data", data={"image/png": png_b64(32), "text/plain": "<real png>"}),
    ]
    markdown = new_markdown_cell("## メモ\n\n![外部画像](https://example.invalid/a.png) <script>alert(1)</script> "
                                 "[link](javascript:alert(1)) <img src=x onerror=alert(1)>")
    return [markdown, ran("show_outputs()", 6, *outputs),
            ran("print('x' * 50000)", 7, stream("LONGLINE" + "x" * 50_000 + "\n"))]


# ---------------------------------------------------------------- the class
@dataclass
class Case:
    student: str
    evidence: dict[str, Any] | None  # pipeline() keyword arguments; None: no evidence
    notebook: Any
    execution: ExecutionResult | None
    evaluation: ModelEvaluation | None
    invalid: str | None = None


def cases() -> list[Case]:
    fit_cell = 4
    return [
        Case("s001_pass", {}, notebook(*correct_cells()), ExecutionResult(seconds=21.5), evaluation(0.64)),
        Case("s002_fail", {"demo_batch_size": 32}, notebook(*correct_cells(), *hostile_cells()),
             ExecutionResult(seconds=23.0, truncated_cells=[]), evaluation(0.31)),
        Case("s003_error", {"fit": "error"},
             notebook(*correct_cells()[:3], ran("history = model.fit(datagen.flow(x_train2, y_train2))", fit_cell,
                                                error_output("ValueError", "Shapes (None, 1) and (None, 10) are incompatible")),
                      ran("score = model.evaluate(x_test, y_test)", 5, error_output("NameError", "name 'model' is not defined"))),
             ExecutionResult(seconds=9.1, errors=[
                 CellError(cell_index=fit_cell, execution_count=fit_cell, ename="ValueError",
                           evalue="Shapes (None, 1) and (None, 10) are incompatible"),
                 CellError(cell_index=fit_cell + 1, execution_count=5, ename="NameError", evalue="name 'model' is not defined")]),
             evaluation(None, problem="no_model")),
        Case("s004_timeout", {"evaluate_on": None},
             notebook(*correct_cells()[:4], ran("while True:\n    pass", 5, stream("still running\n")),
                      ran("print('done')", None, stream("STALE OUTPUT FROM THE STUDENT'S OWN RUN\n"))),
             ExecutionResult(seconds=60.0, timed_out=True, timeout_scope="cell"), evaluation(0.50)),
        Case("s005_died", {"fit": None},
             notebook(*correct_cells()[:3], ran("import os\nos._exit(1)", 4)),
             ExecutionResult(seconds=7.0, kernel_died=True), evaluation(None, fit=None, problem="no_fit")),
        Case("s006_invalid", None, None, None, None,
             invalid="ノートブックが JSON として読めません（保存されていない／壊れている可能性）: Expecting value"),
    ]


def session_for(folder: Path, lang: str, data: Data) -> Session:
    spec = load_spec(ROOT, "kadai8")
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "fingerprint.json").write_text(json.dumps({"source": "synthetic", "fingerprint": "f1x7ure5f1x7ure5"}))
    reference = ReferenceRun(evidence=pipeline(folder / "reference", data).build(), evaluation=evaluation(REFERENCE_ACCURACY),
                             seconds=12.0, key="fixturekey")
    return Session(spec=spec, budget=spec.budget("quick"), launcher=LocalLauncher(), data_dir=data_dir, x_test=data.x_test,
                   y_test=data.y_test, test_hashes=data.test_hashes, reference=reference, out_dir=folder / "out",
                   work_root=folder, lang=lang, versions={"grader": "0.1.0", "tensorflow": "2.21.0", "keras": "3.15.1"},
                   dataset_hashes=DatasetHashes(train=source_hashes(data.x_train), test=source_hashes(data.x_test)))


def grade_case(case: Case, session: Session, data: Data) -> StudentResult:
    out = session.out_dir / case.student
    out.mkdir(parents=True, exist_ok=True)
    run = StudentRun(submission=Submission(case.student, out / "submitted.ipynb"), out_dir=out, notebook=case.notebook)
    if case.invalid:
        run.status, run.message = INVALID, case.invalid
        return build_result(run, session)
    nbformat.write(case.notebook, out / "executed.ipynb")
    run.evidence = pipeline(out / "evidence", data, **case.evidence).build()
    run.execution, run.evaluation = case.execution, case.evaluation
    asyncio.run(judge_checks(run, session))  # the real check kinds; also sets status and message
    return build_result(run, session)


def build_class(folder: Path, lang: str = "ja") -> tuple[Path, dict[str, StudentResult]]:
    """Grade every case into folder/out and write the reports; returns (out dir, results by student)."""
    data = fixture_data()
    session = session_for(folder, lang, data)
    results = {}
    for case in cases():
        result = grade_case(case, session, data)
        write_student_report(result, session.out_dir / case.student)
        results[case.student] = result
    write_class_outputs(results.values(), session.out_dir, lang=lang, title=session.spec.title.get(lang),
                        budget_summary=f"quick ({session.budget.summary(lang)})")
    return session.out_dir, results
