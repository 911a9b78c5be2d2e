"""A graded class with a gradebook, for the review app tests (no kernels). Not a test module."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path

from report_fixtures import build_class
from grader import __version__
from grader.gradebook.publish import republish
from grader.gradebook.store import Gradebook

ROOT = Path(__file__).resolve().parent.parent


def build_reviewable_class(folder: Path, built: tuple[Path, dict] | None = None) -> tuple[Path, dict]:
    """build_class's six students, recorded in OUT/gradebook.sqlite as `grader grade` does. With
    `built` (the session's report_class), its reports are copied instead of drawn again."""
    if built is None:
        out, results = build_class(folder)
    else:
        out, results = folder / "out", built[1]
        shutil.copytree(built[0], out)
    with Gradebook.open(out) as book:
        run_id = book.start_run(assignment="kadai8", budget="quick", jobs=1, threads=1, grader_version=__version__)
        for name, result in results.items():
            notebook = folder / "submissions" / f"{name}.ipynb"
            digest = hashlib.sha256(name.encode()).hexdigest()
            book.record_submission("kadai8", name, notebook, digest)
            book.record_result(run_id, result, fingerprint=digest[:32], seconds=1.0)
        book.finish_run(run_id, students=len(results), executed=len(results), reused=0, seconds=1.0)
    return out, results


QUEUE_ANSWERS = (  # the written answers of the queue class: different lengths and points of view
    "靴はいつも左向きなので、回転や上下反転をするとテストにない向きの靴を覚えることになり、正解率が下がると思う。",
    "衣服は上下の向きが決まっているのに、上下反転で逆さまのシャツまで学習したので、紛らわしくなったのだと思う。",
    "データ拡張で画像が変わったから正解率が下がった。",
    "学習に時間がかかった。",
    "靴は常に左向きで、衣服は左右対称だが上下は決まっている。回転や上下反転はテストに出ない画像を増やすだけなので、"
    "モデルの容量をそれに使ってしまい、正解率が下がった。",
    "回転した画像を見ると、スニーカーとサンダルの区別がつきにくくなっていた。",
    "上下反転したブーツはバッグと形が似てしまうので、間違いが増えたのだと思う。",
    "エポック数が 50 では足りなかったのかもしれない。",
    "テスト画像は拡張していないので、学習した画像とテスト画像の分布がずれた。靴の向きが一定なのが大きい。",
    "<script>alert('queue')</script> 拡張しないほうがよいデータもあると分かった。",
    "Fashion-MNIST は向きがそろった画像なので、向きを変える拡張は役に立たない。",
    "回転 90 度は大きすぎたと思う。10 度程度なら正解率は下がらなかったかもしれない。",
)


def build_queue_class(folder: Path, built: tuple[Path, dict], count: int = 12) -> tuple[Path, list[str]]:
    """build_reviewable_class's class plus `count` students whose written answers wait for a TA
    (s001_pass's result under new names, each with its own answer), for the scoring queue. Returns
    (out folder, the new students' names)."""
    out, results = build_reviewable_class(folder, built)
    base = results["s001_pass"]
    names = [f"s26010{n:02d}" for n in range(1, count + 1)]
    with Gradebook.open(out) as book:
        run_id = book.start_run(assignment="kadai8", budget="quick", jobs=1, threads=1, grader_version=__version__)
        for name, answer in zip(names, QUEUE_ANSWERS * (count // len(QUEUE_ANSWERS) + 1)):
            result = copy.deepcopy(base)
            result.student = name
            result.answers = {check: answer for check in base.answers}
            shutil.copytree(out / "s001_pass", out / name)
            digest = hashlib.sha256(name.encode()).hexdigest()
            book.record_submission("kadai8", name, folder / "submissions" / f"{name}.ipynb", digest)
            book.record_result(run_id, result, fingerprint=digest[:32], seconds=1.0)
        book.finish_run(run_id, students=len(names), executed=len(names), reused=0, seconds=1.0)
    republish(out, ROOT, "kadai8", students=[])  # index.html and grades.csv with everyone (the reports are copies)
    return out, names
