"""One home per decision: status words only in grader/results.py (code and templates compare with
its names), read from the source with `ast` and from the templates as text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from grader import results

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "grader"
STATUS_WORDS = {*results.STUDENT_STATUSES, *results.CHECK_STATUSES, results.RUNNING, results.FINISHED,
                results.INTERRUPTED}


def _words(node: ast.AST) -> list[str]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [e.value for e in items if isinstance(e, ast.Constant) and e.value in STATUS_WORDS]


def status_literals(path: Path) -> list[str]:
    """Comparisons of a status with a string literal, and tables keyed by status literals."""
    found = []
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            mentions_status = any("status" in ast.unparse(o) for o in operands)
            words = [w for o in operands for w in _words(o)]
            if mentions_status and words:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} compares a status with {words}")
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in STATUS_WORDS]
            if len(keys) >= 2:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} table keyed by status literals {keys}")
        elif isinstance(node, (ast.Set, ast.Tuple)) and len(_words(node)) >= 3:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} set of status literals {_words(node)}")
    return found


def test_status_words_are_spelled_only_in_results_py():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "results.py" or "kernel" in path.relative_to(PACKAGE).parts:
            continue
        found += status_literals(path)
    assert not found, "use the names in grader/results.py:\n  " + "\n  ".join(found)


TEMPLATE_COMPARISON = re.compile(r"status\s*(?:==|!=|not in|in)\s*[(\[]?\s*['\"](\w+)['\"]")


def test_templates_compare_statuses_by_name_too():
    found = []
    for path in sorted((PACKAGE / "report" / "templates").glob("*.j2")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{path.name}:{number} {m}" for m in TEMPLATE_COMPARISON.findall(line) if m in STATUS_WORDS]
    assert not found, "templates get the status names as `S` (S.PASS, S.MANUAL, …):\n  " + "\n  ".join(found)


def test_the_scan_finds_a_status_literal(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('if check.status == "pass":\n    pass\nLABELS = {"pass": "ok", "fail": "no"}\n')
    (tmp_path / "grader").mkdir()
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(status_literals(sample)) == 2
    finally:
        ROOT = saved


# ---------------------------------------------------------------- the course's content
def test_the_courses_words_live_in_the_assignment_folder_not_in_the_grader():
    from grader.assignment.content import load_content

    content = load_content(ROOT / "assignments" / "kadai8")
    assert content.dataset == "Fashion-MNIST" and content.class_names("en", 10)[7] == "Sneaker"
    words = [*content.classes["ja"], *content.classes["en"], *(g.legend.ja for g in content.groups),
             *(g.legend.en for g in content.groups), *(t.ja[:20] for t in content.commentary.values()),
             *(t.en[:20] for t in content.commentary.values())]
    found = []
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.j2")]:
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(ROOT)}: {word!r}" for word in words if len(word) > 3 and word in text]
    assert not found, "course content belongs in assignments/<id>/content.toml:\n  " + "\n  ".join(found)


def test_the_default_assignment_is_named_once():
    from grader.assignment.paths import DEFAULT_ASSIGNMENT, default_assignment

    assert DEFAULT_ASSIGNMENT == "kadai8" == default_assignment(ROOT)
    spelled = [f"{p.relative_to(ROOT)}" for p in PACKAGE.rglob("*.py") if '"kadai8"' in p.read_text(encoding="utf-8")]
    assert not spelled, f"the default assignment comes from assignments/course.toml: {spelled}"
