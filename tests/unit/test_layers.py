"""The package's layers have one direction: every import goes down (or stays inside its own folder),
and nothing imports in a circle. Read from the source with `ast`, function-level imports included.

    grader.__main__ · grader.cli                 `python -m grader`; parses the command line
    grader.commands                              one leaf per verb: parse, call, print
    grader.batch · review · lms · similarity · selfcheck      what a verb does
    grader.gradebook                             stored grades, the final score, publishing them
    grader.report · engine                       pages and figures · grading one notebook
    grader.judge                                 check kinds and verdicts (the trusted side)
    grader.evidence                              what the judge reads: evidence, trusted evaluation
    grader.isolation · assignment                sandbox and launcher · spec, paths, data, course content
    grader.results · errors · kernel · i18n      the result contract, errors, the kernel harness, words

`grader.kernel` runs inside untrusted kernels: it imports nothing from the grader.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "grader"

LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"commands"},
    {"batch", "review", "lms", "similarity", "selfcheck"},
    {"gradebook"},
    {"report", "engine"},
    {"judge"},
    {"evidence"},
    {"isolation", "assignment"},
    {"results", "errors", "kernel", "i18n", "__init__"},
]
LEAVES = {"commands"}  # folders whose modules may not import each other (nothing is shared there)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every grader module `path` imports, at any depth, resolved to a module that exists."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:  # `from grader.x import name`: the module is grader.x
                target = target.rpartition(".")[0]
            if target.startswith("grader"):
                found.add(target)
    found.discard(name)
    return found


def unit(name: str) -> str:
    """The folder (or top-level module) a module belongs to: grader.engine.pipeline → engine."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(name: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit(name) in units)


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, name, set(found)) for name, path in found.items()}


def test_every_module_belongs_to_a_declared_layer():
    undeclared = sorted({unit(name) for name in modules()} - set().union(*LAYERS))
    assert not undeclared, f"add these folders to LAYERS (and the README's diagram): {undeclared}"


def test_imports_go_down_the_layers_never_up_or_sideways():
    wrong = []
    for name, targets in graph().items():
        for target in targets:
            if unit(target) == unit(name) and unit(name) not in LEAVES:
                continue
            if unit(target) == unit(name):
                if not target.endswith(".__init__") and target != f"grader.{unit(name)}":
                    wrong.append(f"{name} → {target} (commands are leaves: share code from a lower layer)")
                continue
            if layer(target) <= layer(name):
                direction = "sideways" if layer(target) == layer(name) else "up"
                wrong.append(f"{name} → {target} ({direction})")
    assert not wrong, "imports against the layers:\n  " + "\n  ".join(sorted(wrong))


def test_the_kernel_imports_nothing_from_the_grader():
    for name, targets in graph().items():
        if unit(name) == "kernel":  # its modules may use each other (they sit side by side on the kernel's path)
            outside = sorted(t for t in targets if unit(t) != "kernel")
            assert not outside, f"{name} runs in untrusted kernels and must stand alone: {outside}"


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    cycles: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges.get(name, ())):
            if target.startswith(f"{name}.") or name.startswith(f"{target}."):
                continue  # a package and its own modules (checks/__init__ registering its kinds)
            if state.get(target) == 1:
                cycles.append(" → ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_the_layer_test_sees_function_level_imports(tmp_path):
    source = tmp_path / "grader" / "engine" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from grader.commands import grade\n", encoding="utf-8")
    assert imports_of(source, "grader.engine.x", {"grader.commands.grade"}) == {"grader.commands.grade"}


LONG_FUNCTIONS: dict[str, str] = {}  # "grader/x.py:name": why it may be longer than MAX_FUNCTION_LINES
MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_60_lines_without_a_stated_reason():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(ROOT).as_posix()}:{node.name}"
                if lines > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS:
                    long.append(f"{where} ({lines} lines)")
    assert not long, "split these, or say in LONG_FUNCTIONS why not:\n  " + "\n  ".join(long)
