"""Pairwise similarity of students' code, to point instructors at possibly copied notebooks.

The comparison is copydetect's (PyPI `copydetect`, MIT): winnowing fingerprints as in MOSS
(Schleimer, Wilkerson & Aiken 2003) over Pygments tokens in which every identifier becomes `V`,
function names `F`, class names `O` and string literals `S`, so renaming variables or rewording
strings does not hide a copy, while keywords, operators, calls' structure and numbers stay.
It is a maintained, tested implementation of exactly the algorithm we would otherwise write by
hand, and it returns the matching character ranges, which the side-by-side view highlights.

What is compared per student: the code cells of the notebook, without
  * lines identical (after stripping) to a line of the template's code cells, and IPython magics;
  * fingerprints of code everyone was given: the template and the lecture's reference notebook
    (copydetect's `boilerplate`), so following the slides is not evidence of copying.

A pair's similarity is the mean of the two directions (matched tokens ÷ the student's own
fingerprinted tokens). The default threshold (0.5) was chosen on the sample class (submissions/):
a notebook with only its variables renamed scores ≈ 1.0, the independent pair s2601001 / s2601002
scores 0.0 (0.2 even without removing the lecture code), and a pair needs at least MIN_TOKENS
matched tokens so two nearly empty notebooks are not flagged.
"""

from __future__ import annotations

import html
import io
import itertools
from dataclasses import asdict, dataclass
from collections.abc import Sequence
from pathlib import Path

import nbformat

K = 25            # k-gram length in normalized characters (copydetect's default noise threshold)
WINDOW = 6        # winnowing window: guarantee threshold 30 = K + WINDOW − 1, copydetect's default
THRESHOLD = 0.5
MIN_TOKENS = 40


@dataclass
class Pair:
    a: str
    b: str
    similarity: float
    a_in_b: float      # share of a's fingerprinted code found in b
    b_in_a: float
    tokens: int        # matched tokens
    flagged: bool
    html: str = ""     # OUT-relative side-by-side view, for flagged pairs


@dataclass
class SimilarityReport:
    threshold: float
    pairs: list[Pair]
    students: dict[str, int]  # fingerprinted tokens per student
    method: str = f"copydetect winnowing, k={K}, window={WINDOW}; template lines removed; identifiers normalized"

    @property
    def flagged(self) -> list[Pair]:
        return [p for p in self.pairs if p.flagged]

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "method": self.method, "students": self.students,
                "pairs": [asdict(p) for p in self.pairs]}


def notebook_code(path: Path) -> str:
    """Code cells joined; an unreadable notebook has no code (grading reports it as invalid)."""
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - invalid notebooks are the grader's business, not this one's
        return ""
    return "\n".join(c.source for c in notebook.cells if c.cell_type == "code")


def student_code(code: str, template_lines: set[str]) -> str:
    kept = []
    for line in code.splitlines():
        text = line.strip()
        if not text or text in template_lines or text.startswith(("%", "!")):
            continue
        kept.append(line)
    return "\n".join(kept)


def _fingerprint(name: str, code: str, boilerplate: list[int] | None = None):
    from copydetect import CodeFingerprint

    return CodeFingerprint(f"{name}.py", K, WINDOW, boilerplate=boilerplate, fp=io.StringIO(code), language="python")


def compare(notebooks: dict[str, Path], *, template: Path | None, given: Sequence[Path] = (),
            threshold: float = THRESHOLD) -> tuple[SimilarityReport, dict[str, str], dict[tuple[str, str], tuple]]:
    """(report, cleaned code by student, matched slices by pair)."""
    from copydetect import compare_files

    template_code = notebook_code(template) if template else ""
    template_lines = {line.strip() for line in template_code.splitlines() if line.strip()}
    boilerplate: set[int] = set()
    for code in [template_code, *(notebook_code(p) for p in given)]:
        if code.strip():
            boilerplate |= set(_fingerprint("given", code).hashes)
    codes = {name: student_code(notebook_code(path), template_lines) for name, path in sorted(notebooks.items())}
    prints = {name: _fingerprint(name, code, sorted(boilerplate)) for name, code in codes.items()}
    pairs, slices = [], {}
    for a, b in itertools.combinations(sorted(prints), 2):
        if not prints[a].token_coverage or not prints[b].token_coverage:
            pairs.append(Pair(a, b, 0.0, 0.0, 0.0, 0, False))
            continue
        tokens, (a_in_b, b_in_a), (slice_a, slice_b) = compare_files(prints[a], prints[b])
        score = (float(a_in_b) + float(b_in_a)) / 2
        pairs.append(Pair(a, b, round(score, 4), round(float(a_in_b), 4), round(float(b_in_a), 4), int(tokens),
                          bool(score >= threshold and tokens >= MIN_TOKENS)))
        slices[(a, b)] = (slice_a, slice_b)
    pairs.sort(key=lambda p: (-p.similarity, p.a, p.b))
    report = SimilarityReport(threshold, pairs, {n: int(p.token_coverage) for n, p in prints.items()})
    return report, codes, slices


def highlighted(code: str, ranges) -> str:
    """Escaped code with the matched character ranges in <mark>."""
    spans = sorted(zip(*ranges)) if len(ranges) and len(ranges[0]) else []
    out, position = [], 0
    for start, end in spans:
        start, end = max(int(start), position), int(end)
        if end <= start:
            continue
        out.append(html.escape(code[position:start]))
        out.append(f"<mark>{html.escape(code[start:end])}</mark>")
        position = end
    out.append(html.escape(code[position:]))
    return "".join(out)
