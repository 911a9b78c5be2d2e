"""Friendly diagnosis around a self-check: the Python environment, the saved notebook, the run.

Findings explain; they never change a verdict (those are the grader's). Standard library only
(plus what a finished run already holds), so the environment can be diagnosed before anything
heavier is imported.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from grader.assignment.paths import course_timezone
from grader.assignment.student_ids import printable
from grader.i18n.times import when
from grader.assignment.student_ids import problem as student_id_problem
from grader.results import ERROR as FAILED_CELL, GRADER_ERROR, KERNEL_DIED, TIMEOUT

ERROR, WARNING, INFO = "error", "warning", "info"

TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel", "tf-nightly")
OTHER_PACKAGES = ("keras", "numpy", "nbformat", "nbclient", "ipykernel", "jupyter_client")
INSTALL_HINT = "pip install tensorflow nbformat nbclient ipykernel"

# The slides' Keras 2 spelling, which Keras 3 rejects.
KERAS2_IMPORT = re.compile(
    r"^\s*from\s+keras\.preprocessing\.image\s+import\s+[^\n]*\bImageDataGenerator\b"
    r"|\bkeras\.preprocessing\.image\.ImageDataGenerator\b", re.MULTILINE)
KERAS3_SPELLING = "from tensorflow.keras.preprocessing.image import ImageDataGenerator"
# steps_per_epoch=len(x) / batch_size: a float, which Keras 3 rejects.
FLOAT_STEPS = re.compile(r"steps_per_epoch\s*=\s*[^,\n]*?[^/\n]/(?!/)")

SHIM_EXPLANATIONS = {
    "keras.preprocessing.image.ImageDataGenerator": (
        "スライドの `from keras.preprocessing.image import ImageDataGenerator` は Keras 3 では ImportError に"
        f"なります。採点では互換シムで動かしますが、あなたの Colab / PC ではエラーになります。`{KERAS3_SPELLING}` "
        "に書き換えてください。"),
    "steps_per_epoch float → int": (
        "steps_per_epoch に小数（len(x_train2) / batch_size）を渡しています。Keras 3 ではエラーになるため採点では"
        "切り上げて動かしますが、`len(x_train2) // batch_size` と整数にしてください。"),
}


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | info
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "text": self.text}


def merged(*groups: list[Finding]) -> list[Finding]:
    """The findings of several groups in order, each text once."""
    seen: set[str] = set()
    out = []
    for finding in (f for group in groups for f in group):
        if finding.text not in seen:
            seen.add(finding.text)
            out.append(finding)
    return out


# ---------------------------------------------------------------- environment
def environment_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing heavy is imported)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions["tensorflow"] = next((v for v in map(_version, TENSORFLOW_DISTRIBUTIONS) if v), None)
    for name in OTHER_PACKAGES:
        versions[name] = _version(name)
    return versions


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def major(version: str | None) -> int | None:
    match = re.match(r"(\d+)", version or "")
    return int(match.group(1)) if match else None


def describe_environment(versions: dict[str, str | None]) -> str:
    shown = [f"Python {versions['python']}"]
    for key, label in (("tensorflow", "TensorFlow"), ("keras", "Keras"), ("numpy", "numpy")):
        shown.append(f"{label} {versions.get(key) or '（なし）'}")
    return " / ".join(shown) + f"（{sys.executable}）"


def environment_findings(versions: dict[str, str | None]) -> list[Finding]:
    """Errors here mean the notebook cannot run as it will be graded: stop before running it."""
    found: list[Finding] = []
    missing = [name for name in ("tensorflow", "keras", "numpy", "nbformat", "nbclient", "ipykernel")
               if not versions.get(name)]
    if missing:
        found.append(Finding(ERROR, f"{', '.join(missing)} がインストールされていません。Colab では最初から入っています。"
                                    f"PC では `{INSTALL_HINT}` でインストールしてください。"))
    keras_major = major(versions.get("keras"))
    if keras_major is not None and keras_major < 3:
        found.append(Finding(ERROR, f"Keras {versions['keras']} です。採点は Keras 3（TensorFlow 2.16 以降）で行うため、"
                                    "`pip install -U tensorflow` で更新するか、Colab で実行してください。"))
    return found


# ---------------------------------------------------------------- the saved notebook
def path_findings(path: Path) -> list[Finding]:
    """Problems that leave nothing to run: a missing file, a folder, no Google Drive."""
    if path.is_dir():
        return [Finding(ERROR, f"{path} はフォルダです。ノートブック（.ipynb ファイル）を指定してください。")]
    if path.exists():
        return []
    found = [Finding(ERROR, f"ファイルが見つかりません: {path}")]
    if str(path).startswith("/content/drive") and not Path("/content/drive").exists():
        found.append(Finding(INFO, "Google ドライブがマウントされていません。先に "
                                   "`from google.colab import drive; drive.mount('/content/drive')` を実行してください。"))
    elif path.parent.is_dir():
        nearby = sorted(p.name for p in path.parent.glob("*.ipynb"))[:8]
        if nearby:
            found.append(Finding(INFO, f"{path.parent} にあるノートブック: {', '.join(nearby)}"))
    return found


def notebook_findings(path: Path, keras_version: str | None) -> list[Finding]:
    """What the saved file says before it runs: not saved / not JSON, Keras 2 spellings, run order."""
    found: list[Finding] = []
    try:
        raw = path.read_bytes()
        # in the course's zone: Colab's clock is UTC, the student's is not
        stamp = when(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(), "ja", course_timezone())
    except OSError as exc:
        return [Finding(ERROR, f"ファイルを読めません: {exc}")]
    found.append(Finding(INFO, f"保存されたファイル（{stamp} 保存）を新しいカーネルで上から順に実行します。"
                               "保存していない変更はチェックされません。"))
    if path.suffix.lower() != ".ipynb":
        found.append(Finding(WARNING, f"拡張子が .ipynb ではありません（{path.name}）。提出するノートブックを指定してください。"))
    name_problem = student_id_problem(path.stem)
    if name_problem:  # the same rules as `grader pull` / `grade` (grader.assignment.student_ids)
        found.append(Finding(WARNING, f"このファイル名 {printable(path.stem)} のままでは採点で受け付けられません: "
                                      f"{name_problem}。ファイル名を変えて提出してください。"))
    if not raw.strip():
        found.append(Finding(ERROR, "ファイルが空です（0 バイト）。ファイルを保存しましたか？ Jupyter では Ctrl+S、"
                                    "Colab では「ファイル → 保存」のあと、もう一度試してください。"))
        return found
    try:
        nb = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        found.append(Finding(ERROR, "ファイルが UTF-8 ではありません。Jupyter / Colab で保存し直してください。"))
        return found
    except json.JSONDecodeError as exc:
        head = raw.lstrip()[:20].lower()
        why = ("HTML のようです（ブラウザでページを保存した？）。" if head.startswith((b"<", b"<!doctype"))
               else "途中で切れているか、壊れています。")
        found.append(Finding(ERROR, f"ノートブックが JSON として読めません（{exc.msg}, {exc.lineno} 行目）: {why}"
                                    "ファイルを保存しましたか？ Colab では「ファイル → ダウンロード → .ipynb をダウンロード」"
                                    "で保存したファイルを指定してください。"))
        return found
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        found.append(Finding(ERROR, "ノートブックの形式ではありません（cells がありません）。"))
        return found
    code = [c for c in nb["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    source = "\n".join(_source(c) for c in code)
    if not code:
        found.append(Finding(WARNING, "コードセルがありません。"))
    if KERAS2_IMPORT.search(source) and (major(keras_version) or 3) >= 3:
        found.append(Finding(WARNING, SHIM_EXPLANATIONS["keras.preprocessing.image.ImageDataGenerator"]))
    if FLOAT_STEPS.search(source):
        found.append(Finding(WARNING, SHIM_EXPLANATIONS["steps_per_epoch float → int"]))
    order = out_of_order(code)
    if order:
        before, after = order
        found.append(Finding(INFO, f"保存されたノートブックはセルが上から順に実行されていません（[{before}] の下に [{after}]）。"
                                   "採点は新しいカーネルで上から順に実行した結果で行います（このチェックと同じ）。"))
    return found


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def out_of_order(code_cells: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The first pair of execution counts that go down from one code cell to a later one."""
    previous = None
    for cell in code_cells:
        count = cell.get("execution_count")
        if not isinstance(count, int):
            continue
        if previous is not None and count < previous:
            return previous, count
        previous = count
    return None


# ---------------------------------------------------------------- after the run
def run_findings(outcome: Any) -> list[Finding]:
    """What the fresh run showed: the kernel's versions, shims used, why it stopped early."""
    found: list[Finding] = []
    run, result = outcome.run, outcome.result
    evidence = run.evidence
    ready = evidence.first("harness_ready") if evidence else None
    if ready and ready.get("versions"):
        v = ready["versions"]
        found.append(Finding(INFO, f"実行したカーネル: Python {v.get('python')} / TensorFlow {v.get('tensorflow')} / "
                                   f"Keras {v.get('keras')} / numpy {v.get('numpy')}"))
    for shim in (evidence.compat_shims() if evidence else []):
        text = SHIM_EXPLANATIONS.get(shim)
        if text and not any(f.text == text for f in found):
            found.append(Finding(WARNING, text))
    execution = run.execution
    if result.status == TIMEOUT:
        found.append(Finding(WARNING, "制限時間内に終わりませんでした。無限ループや、学習以外の重い処理がないか確認してください"
                                      "（セルフチェックでは model.fit が短縮されます）。"))
    elif result.status == KERNEL_DIED:
        found.append(Finding(WARNING, "カーネルが途中で終了しました。メモリ不足（大きな配列のコピーなど）や "
                                      "os._exit / sys.exit の呼び出しがないか確認してください。"))
    elif result.status == FAILED_CELL and execution and execution.errors:
        first = execution.errors[0]
        if first.ename in ("ModuleNotFoundError", "ImportError"):
            found.append(Finding(WARNING, f"import に失敗しています（{first.evalue[:120]}）。Colab にないパッケージを"
                                          "使っていないか、スペルを確認してください。"))
    elif result.status == GRADER_ERROR:
        found.append(Finding(WARNING, "チェックの仕組みが動きませんでした。TensorFlow / Keras のバージョンを確認し、"
                                      "解決しなければ担当教員に上のメッセージを伝えてください。"))
    return found
