"""Main of the downloaded `selfcheck.py`: check one notebook on the student's own computer or Colab.

The environment is diagnosed before anything heavy is imported. The notebook then runs in a fresh
kernel of *this* Python (a private kernelspec on JUPYTER_PATH, so a user-level or Colab kernelspec
cannot substitute another interpreter), with the grader's harness on PYTHONPATH and the student's
own HOME / KERAS_HOME, so Keras finds (or fetches, as it always does) Fashion-MNIST where it
normally keeps it. The grader's test-set hashes are computed from that same Keras cache.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from grader.selfcheck.diagnose import (
    ERROR, Finding, describe_environment, environment_findings, environment_versions, merged, notebook_findings,
    path_findings, run_findings,
)
from grader.selfcheck.text import Printer, show_findings, show_result

TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
KERAS_LOAD_TIMEOUT_S = 600


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="selfcheck.py",
        description="提出前のセルフチェック: ノートブックを新しいカーネルで上から実行し、採点の公開チェックの結果を表示します。",
    )
    parser.add_argument("notebook", help="チェックするノートブック（.ipynb）")
    parser.add_argument("--json", metavar="PATH", help="結果を JSON でも書き出す")
    parser.add_argument("--html", metavar="PATH",
                        help="HTML のレポート（採点と同じ形式、拡張した画像つき）の保存先（既定: ノートブックと同じフォルダの "
                             "<名前>.selfcheck.html）")
    parser.add_argument("--executed", metavar="PATH",
                        help="実行後のノートブック（エラーの詳しい表示つき）をここに保存する")
    parser.add_argument("--gpu", action="store_true",
                        help="GPU を使う（既定では CPU で実行します。Colab で開いているノートブックと GPU メモリを取り合わないため）")
    return parser.parse_args(argv)


def main(argv: list[str], *, public: dict[str, Any], events: list[dict[str, Any]], build: dict[str, Any]) -> int:
    out = Printer(sys.stdout)
    Printer(sys.stderr)  # stderr too must never fail on an encoding
    args = parse_args(argv)
    title = (public.get("assignment", {}).get("title") or {}).get("ja") or public.get("assignment", {}).get("id", "")
    out(f"== {title} セルフチェック ==")
    versions = environment_versions()
    out(f"環境: {describe_environment(versions)}")
    path = Path(args.notebook).expanduser()
    stop = environment_findings(versions) + path_findings(path)
    if any(f.level == ERROR for f in stop):
        show_findings(out, stop)
        return 2
    out(f"ノートブック: {path}")
    before = merged(stop, notebook_findings(path, versions.get("keras")))
    show_findings(out, before)
    quick = public["budgets"]["quick"]
    out(f"実行中: 新しいカーネルで上から順に実行しています（学習は最大 {quick.get('max_epochs')} エポック × "
        f"{quick.get('max_steps_per_epoch')} ステップに短縮。30 秒ほどかかります）…")
    if sys.platform == "win32":  # pyzmq needs a selector event loop on Windows
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    try:
        with quiet_stderr():
            outcome = asyncio.run(check(path, public=public, events=events, use_gpu=args.gpu,
                                        executed=Path(args.executed) if args.executed else None,
                                        page=Page(Path(args.html) if args.html else None, before)))
    except KeyboardInterrupt:
        out("中断しました。")
        return 130
    after = [f for f in run_findings(outcome) if f not in before]
    show_findings(out, after)
    out()
    show_result(out, outcome)
    out(f"（{build.get('assignment', '')} セルフチェック, grader {build.get('grader', '?')}, "
        f"期待値: 参照解の {build.get('budget', 'quick')} 実行）")
    out(f"レポート: {outcome.page}" if outcome.page else "レポート（HTML）は書き出せませんでした。")
    if args.json:
        report = {**outcome.to_dict(), "notebook": str(path), "build": build,
                  "findings": [f.to_dict() for f in merged(before, after)]}
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return outcome.exit_code


class Page:
    """Where the HTML report goes (None: beside the notebook) and the findings made before the run."""

    def __init__(self, target: Path | None, before: list[Any]) -> None:
        self.target, self.before = target, before


async def check(path: Path, *, public: dict[str, Any], events: list[dict[str, Any]], use_gpu: bool = False,
                executed: Path | None = None, page: Page | None = None):
    """Run the engine on this computer; everything temporary is removed afterwards.

    The grader modules (nbclient, nbformat, numpy) are imported only now, after the diagnosis."""
    from grader.engine.pipeline import Submission
    from grader.selfcheck import engine

    work = Path(tempfile.mkdtemp(prefix="selfcheck-"))
    try:
        install_kernel_spec(work / "jupyter")
        launcher = student_launcher(use_gpu=use_gpu)
        spec = engine.load_public_spec(public, work)
        (work / "jobs").mkdir()
        session = engine.make_session(
            spec=spec, reference=engine.public_reference(events, work / "reference"), launcher=launcher,
            data_dir=keras_dataset_dirs()[0], out_dir=work / "out", work_root=work / "jobs", lang="ja",
        )
        outcome = await engine.run_self_check(Submission("selfcheck", path), session,
                                              load_test_hashes=lambda run: test_hashes(run, work),
                                              hidden=public.get("hidden"))
        if executed is not None and (outcome.run.out_dir / "executed.ipynb").is_file():
            shutil.copyfile(outcome.run.out_dir / "executed.ipynb", executed)
        outcome.page = write_html(outcome, path, public, page) if page is not None else None
        return outcome
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_html(outcome: Any, notebook: Path, public: dict[str, Any], page: Page) -> Path | None:
    """The grader's own report page for this run (grader.selfcheck.page), while the run's files exist;
    None when it cannot be written (a read-only folder): the text above still says everything."""
    from grader.assignment.content import Content, parse_content
    from grader.selfcheck.page import page_path, write_page

    content = parse_content(public["content"], where="selfcheck.py") if public.get("content") else Content()
    findings = merged(page.before, [f for f in run_findings(outcome) if f not in page.before])
    try:
        return write_page(outcome, notebook=notebook, target=page.target or page_path(notebook), findings=findings,
                          content=content)
    except OSError:
        return None


@contextlib.contextmanager
def quiet_stderr():
    """While the notebook runs, file descriptor 2 goes to a scratch file: the kernel inherits it
    where jupyter_client < 7 (Colab) cannot send its TensorFlow and debugger chatter to a log."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


# ---------------------------------------------------------------- the kernel on this computer
def install_kernel_spec(folder: Path) -> None:
    """A `python3` kernelspec for this very interpreter, first on JUPYTER_PATH."""
    spec_dir = folder / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable] + (["-Xfrozen_modules=off"] if sys.version_info >= (3, 11) else [])
    argv += ["-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "Python 3 (self-check)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder)] + [p for p in [os.environ.get("JUPYTER_PATH")] if p])


def student_launcher(*, use_gpu: bool):
    from grader.kernel.grader_kernel import CONFIG_ENV
    from grader.isolation.launch import KERNEL_DIR, KernelJob, LocalLauncher

    original_pythonpath = os.environ.get("PYTHONPATH")

    class StudentLauncher(LocalLauncher):
        """The student's own environment (HOME, KERAS_HOME, PATH kept) plus what the harness needs."""

        name = "none (self-check on this computer)"

        def overlay(self, job: KernelJob) -> dict[str, str]:
            env = {
                "PYTHONPATH": os.pathsep.join([str(KERNEL_DIR)] + [p for p in [original_pythonpath] if p]),
                CONFIG_ENV: str(job.harness_config),
                "MPLBACKEND": "Agg",
                "KERAS_BACKEND": "tensorflow",
                "PYTHONIOENCODING": "utf-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
            if not use_gpu:
                env["CUDA_VISIBLE_DEVICES"] = "-1"
            return env

        def setup_job(self, job: KernelJob) -> None:
            for folder in (job.cwd, job.evidence_dir, job.home):  # no data link: Keras uses its own cache
                folder.mkdir(parents=True, exist_ok=True)
            # jupyter_client < 7 (as on Colab) starts kernels with os.environ, not with environment().
            os.environ.update(self.overlay(job))

        def environment(self, job: KernelJob) -> dict[str, str]:
            return {**os.environ, **self.overlay(job)}

    return StudentLauncher()


# ---------------------------------------------------------------- the test set, as the grader sees it
def keras_dataset_dirs() -> list[Path]:
    """Where keras.datasets.fashion_mnist keeps its files, in the order Keras itself tries them."""
    homes = [Path(os.environ["KERAS_HOME"])] if os.environ.get("KERAS_HOME") else []
    homes.append(Path.home() / ".keras")
    homes.append(Path("/tmp" if Path("/tmp").is_dir() else tempfile.gettempdir()) / ".keras")
    return [home / "datasets" / "fashion-mnist" for home in homes]


def test_hashes(run: Any, work: Path):
    """Hashes of the test images the notebook could load: from the Keras cache, else via Keras."""
    from grader.assignment.data import read_idx
    from grader.errors import GraderError
    from grader.kernel.grader_kernel import image_hashes

    for folder in keras_dataset_dirs():
        try:
            if (folder / TEST_IMAGES).is_file():
                return image_hashes(read_idx(folder / TEST_IMAGES))
        except (GraderError, OSError):
            continue
    if not (run.evidence and run.evidence.of("evaluate")):
        return None  # nothing to compare with
    target = work / "x_test.npy"
    code = ("import sys, numpy\nfrom keras.datasets import fashion_mnist\n"
            "(_, _), (x, _) = fashion_mnist.load_data()\nnumpy.save(sys.argv[1], x)\n")
    try:
        subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, timeout=KERAS_LOAD_TIMEOUT_S,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
        import numpy as np

        return image_hashes(np.load(target, allow_pickle=False))
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


__all__ = ["Finding", "check", "main"]
