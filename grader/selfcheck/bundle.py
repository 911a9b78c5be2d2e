"""Generate `assignments/<id>/selfcheck.py`: the self-check as one file that needs no grader install.

The file embeds, as data:
  * CODE: a zip of every grader module that `grader.selfcheck.student` imports, found by reading
    their import statements (plus messages.toml). It is extracted to a temporary folder and
    imported from there, and its kernel/ folder goes on the kernel's PYTHONPATH: the student runs
    the grader's own steps, harness, check kinds and messages, so the two cannot drift;
  * SPEC: the spec's visible checks and the quick budget (engine.public_spec); hidden checks are absent;
  * REFERENCE: the reference run's public events (engine.public_events) on the real data, quick budget.

    python -m grader.selfcheck.bundle            regenerate (reuses the embedded events while the reference's
                                       sources are unchanged; else runs the reference, cached)
    python -m grader.selfcheck.bundle --check    exit 1 when the file is not what the generator makes now
    python -m grader.selfcheck.bundle --refresh  always take the events from a reference run

Byte-for-byte reproducible: same sources and events give the same file (tests compare).
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import __version__
from grader.errors import GraderError
from grader.kernel import harness_source
from grader.selfcheck.engine import PUBLIC_FIELDS, SELF_CHECK_BUDGET, SUMMARY_KEYS, public_spec
from grader.assignment.spec import load_spec

PACKAGE_DIR = Path(__file__).resolve().parent.parent
ENTRY_MODULE = "grader.selfcheck.student"
# Read next to their module at run time: the words, and the templates of the student report that the
# self-check's page is (grader.selfcheck.page; report.html.j2 and what it includes).
DATA_FILES = ("i18n/messages.toml", *(f"report/templates/{name}.j2" for name in (
    "report.html", "_style.css", "_selfcheck.html", "_check_status.html", "_check_message.html", "_override.html")))
SELFCHECK_NAME = "selfcheck.py"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
B64_LINE = 100


# ---------------------------------------------------------------- the code
def module_path(name: str) -> Path | None:
    """File of a grader module or package (None for anything outside the package)."""
    parts = name.split(".")
    if parts[0] != "grader":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def existing_path(name: str) -> Path:
    path = module_path(name)
    if path is None:
        raise ValueError(f"{name} is not a module of the grader package")
    return path


def imported_grader_modules(path: Path) -> set[str]:
    """Every `grader...` module a file imports, at any depth (lazy imports in functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from grader import pipeline`
    return {name for name in found if module_path(name) is not None}


def module_closure(entry: str = ENTRY_MODULE) -> list[str]:
    """The entry module, what it imports transitively, and every parent package."""
    todo, seen = [entry], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        todo.extend(imported_grader_modules(existing_path(name)))
    return sorted(seen)


def bundle_files(entry: str = ENTRY_MODULE) -> dict[str, bytes]:
    """Archive name → bytes, for the modules of module_closure and the data files they read."""
    files = {}
    for name in module_closure(entry):
        path = existing_path(name)
        files[path.relative_to(PACKAGE_DIR.parent).as_posix()] = path.read_bytes()
    for data in DATA_FILES:
        files[f"grader/{data}"] = (PACKAGE_DIR / data).read_bytes()
    return dict(sorted(files.items()))


def code_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


# ---------------------------------------------------------------- what the expected values depend on
def source_key(project_root: Path, assignment: str) -> str:
    """Changes whenever the reference's public events could: its notebook, the harness, the quick
    budget and seed, or what is kept of the events. (Data and library versions are recorded apart.)"""
    spec = load_spec(project_root, assignment)
    digest = hashlib.sha256()
    for part in (
        spec.reference.read_bytes(),
        harness_source(),
        json.dumps({"caps": spec.budget(SELF_CHECK_BUDGET).caps(), "seed": spec.seed}, sort_keys=True).encode(),
        json.dumps({"fields": PUBLIC_FIELDS, "summary": SUMMARY_KEYS}, sort_keys=True).encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


# ---------------------------------------------------------------- the file
@dataclass(frozen=True)
class Embedded:
    build: dict[str, Any]
    spec: dict[str, Any]
    events: list[dict[str, Any]]
    code_sha256: str
    code: bytes


def render(*, project_root: Path, assignment: str, events: list[dict[str, Any]], data: str) -> str:
    """The text of selfcheck.py for these reference events (`data` says which data set they come from)."""
    spec = load_spec(project_root, assignment)
    public = public_spec(tomllib.loads(spec.source_bytes.decode("utf-8")))
    content = spec.root / "content.toml"  # class names and the slides' comments, for the HTML page
    if content.is_file():
        public["content"] = tomllib.loads(content.read_text(encoding="utf-8"))
    blob = code_zip(bundle_files())
    build = {"assignment": spec.id, "grader": __version__, "budget": SELF_CHECK_BUDGET,
             "source_key": source_key(project_root, assignment), "data": data}
    spec_json = json.dumps(public, ensure_ascii=False, indent=1)
    events_json = json.dumps(events, ensure_ascii=False, separators=(",", ":")).replace("},{", "},\n{")
    for text in (spec_json, events_json):
        if '"""' in text or text.endswith("\\"):
            raise ValueError("embedded JSON cannot be written as a raw triple-quoted string")
    encoded = base64.b64encode(blob).decode("ascii")
    lines = "\n".join(encoded[i:i + B64_LINE] for i in range(0, len(encoded), B64_LINE))
    title = public["assignment"].get("title", {})
    title = title.get("ja", spec.id) if isinstance(title, dict) else str(title)
    return TEMPLATE.format(
        title=title, name=SELFCHECK_NAME, notebook=f"{title.split()[0]}.ipynb",
        build=json.dumps(build, ensure_ascii=False, sort_keys=True), spec=spec_json, events=events_json,
        sha=hashlib.sha256(blob).hexdigest(), code=lines,
    )


def read_embedded(text: str) -> Embedded:
    """The data parts of a generated selfcheck.py (without running it)."""
    values = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("BUILD", "SPEC", "REFERENCE", "CODE_SHA256", "CODE"):
                values[name] = ast.literal_eval(node.value)
    return Embedded(build=json.loads(values["BUILD"]), spec=json.loads(values["SPEC"]),
                    events=json.loads(values["REFERENCE"]), code_sha256=values["CODE_SHA256"],
                    code=base64.b64decode(values["CODE"]))


def target_path(project_root: Path, assignment: str) -> Path:
    return project_root / "assignments" / assignment / SELFCHECK_NAME


TEMPLATE = '''#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""{title} セルフチェック — 提出前に、採点と同じ公開チェックを自分のパソコンや Colab で。

使い方（このファイルとノートブックだけあれば動きます）:
    python {name} {notebook}
    !python {name} /content/drive/MyDrive/{notebook}        ← Colab のセルで

ノートブックを「保存されたファイル」から新しいカーネルで上から順に実行し（学習は短縮）、採点で
公開されているチェックの結果（✓/✗、点、理由、ヒント）を表示します。保存していない変更や、
セルを実行した順番の違いは、採点と同じく反映されません。非公開のチェック（テスト正解率など）は
含まれていません。必要なのは Colab に最初から入っているもの（Python 3.10 以上、TensorFlow/Keras、
numpy、nbformat、nbclient、ipykernel）だけです。データは keras.datasets がいつもどおり取得します。
終了コード: 0 = 公開チェックがすべて OK（TA が採点する項目は回答があれば OK）、1 = 直すところがある、
2 = 実行できなかった（ファイルがない、環境が足りない）。

Generated by `make selfcheck` (python -m grader.selfcheck.bundle) from the grader's own code: do not edit.
"""

import sys

BUILD = r"""{build}"""

# The visible checks of the spec, as the grader reads them.
SPEC = r"""{spec}"""

# What the visible checks compare with: the reference solution's run, reduced to shapes and counts.
REFERENCE = r"""{events}"""

# The grader's own modules (zip, base64).
CODE_SHA256 = "{sha}"
CODE = """
{code}
"""


def _main(argv):
    if sys.version_info < (3, 10):
        print("Python 3.10 以上が必要です（いまは %s）。Colab か新しい Python で実行してください。" % sys.version.split()[0])
        return 2
    import base64
    import hashlib
    import io
    import json
    import shutil
    import tempfile
    import zipfile

    blob = base64.b64decode(CODE)
    if hashlib.sha256(blob).hexdigest() != CODE_SHA256:
        print("{name} が壊れています。もう一度ダウンロードしてください。")
        return 2
    folder = tempfile.mkdtemp(prefix="selfcheck-code-")
    try:
        zipfile.ZipFile(io.BytesIO(blob)).extractall(folder)
        sys.path.insert(0, folder)
        try:
            import tomllib  # noqa: F401
        except ImportError:  # Python 3.10: the same parser under its older name
            try:
                import tomli as tomllib
            except ImportError:
                try:
                    from pip._vendor import tomli as tomllib
                except ImportError:
                    print("Python 3.11 以上を使うか、pip install tomli を実行してください。")
                    return 2
            sys.modules["tomllib"] = tomllib
        from grader.selfcheck.student import main

        return main(argv, public=json.loads(SPEC), events=json.loads(REFERENCE), build=json.loads(BUILD))
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
'''


# ---------------------------------------------------------------- command line (make selfcheck)
def reference_events(*, project_root: Path, assignment: str, keras_home: Path, cache_root: Path) -> tuple[list, str]:
    """Public events of the quick reference run on the data in keras_home (run once, then cached)."""
    from grader.selfcheck.project import quick_reference
    from grader.assignment.data import recorded_info
    from grader.selfcheck.engine import public_events

    reference = quick_reference(project_root=project_root, assignment=assignment, keras_home=keras_home,
                                cache_root=cache_root)
    info = recorded_info(keras_home)
    data = f"{info.source} {info.fingerprint}" if info else "unknown"
    return public_events(reference.evidence), data


def generate(*, project_root: Path, assignment: str, keras_home: Path, cache_root: Path, refresh: bool) -> str:
    target = target_path(project_root, assignment)
    current = read_embedded(target.read_text(encoding="utf-8")) if target.is_file() else None
    key = source_key(project_root, assignment)
    if current and not refresh and current.build.get("source_key") == key:
        events, data = current.events, current.build.get("data", "unknown")
    else:
        events, data = reference_events(project_root=project_root, assignment=assignment, keras_home=keras_home,
                                        cache_root=cache_root)
    return render(project_root=project_root, assignment=assignment, events=events, data=data)


def main(argv: list[str] | None = None) -> int:
    from grader.assignment.paths import CACHE_ROOT, DATA_HOME, DEFAULT_ASSIGNMENT, PROJECT_ROOT

    parser = argparse.ArgumentParser(prog="python -m grader.selfcheck.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignment", default=DEFAULT_ASSIGNMENT)
    parser.add_argument("--keras-home", type=Path, default=DATA_HOME)
    parser.add_argument("--cache", type=Path, default=CACHE_ROOT)
    parser.add_argument("--check", action="store_true", help="only report whether the file is up to date")
    parser.add_argument("--refresh", action="store_true", help="take the events from a reference run")
    args = parser.parse_args(argv)
    target = target_path(PROJECT_ROOT, args.assignment)
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        embedded = read_embedded(current) if current else None
        if not embedded or embedded.build.get("source_key") != source_key(PROJECT_ROOT, args.assignment):
            print(f"{target}: out of date (the reference's sources changed): run `make selfcheck`")
            return 1
        if render(project_root=PROJECT_ROOT, assignment=args.assignment, events=embedded.events,
                  data=embedded.build.get("data", "unknown")) != current:
            print(f"{target}: out of date (grader code or spec changed): run `make selfcheck`")
            return 1
        print(f"{target}: up to date")
        return 0
    try:
        text = generate(project_root=PROJECT_ROOT, assignment=args.assignment, keras_home=args.keras_home,
                        cache_root=args.cache, refresh=args.refresh)
    except GraderError as exc:  # no data (`make data`), reference failed, ...
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    target.write_text(text, encoding="utf-8", newline="\n")
    size = len(text.encode("utf-8"))
    print(f"{target}: {size // 1000} kB, {len(bundle_files())} files of grader code, "
          f"data {read_embedded(text).build['data']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
