"""Plain-text output of a self-check that never crashes on the console's encoding.

Windows consoles and pipes may be cp932, which has no ✓ / ✗ (nor 〜 or ≥, used in messages): the
stream is switched to errors="replace" where possible, every write is encoded defensively, and the
marks fall back to ○ × (cp932 has them) or to ASCII.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from typing import Any, TextIO

from grader.selfcheck.diagnose import ERROR, WARNING, Finding
from grader.report.phrases import actual_text, expected_text, plain
from grader.results import ERROR as CELL_ERROR, GRADED, GRADER_ERROR, INVALID, KERNEL_DIED, MANUAL, PASS, TIMEOUT

MARK_SETS = ({"ok": "✓", "ng": "✗", "ta": "－"}, {"ok": "○", "ng": "×", "ta": "－"}, {"ok": "OK", "ng": "NG", "ta": "TA"})
STATUS_JA = {GRADED: "最後まで実行", CELL_ERROR: "セルでエラー", TIMEOUT: "時間切れ", KERNEL_DIED: "カーネル停止",
             INVALID: "ノートブックが無効", GRADER_ERROR: "チェックの仕組みのエラー"}
LEVEL_PREFIX = {ERROR: "[エラー] ", WARNING: "[注意] ", "info": ""}


class Printer:
    """Writes text to a stream, replacing what its encoding cannot show."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="replace")  # type: ignore[attr-defined]
        self.encoding = getattr(stream, "encoding", None) or "ascii"
        self.marks = next((m for m in MARK_SETS if _encodable("".join(m.values()), self.encoding)), MARK_SETS[-1])

    def __call__(self, text: str = "") -> None:
        try:
            safe = text.encode(self.encoding, errors="replace").decode(self.encoding, errors="replace")
        except LookupError:
            safe = text.encode("ascii", errors="replace").decode("ascii")
        self.stream.write(safe + "\n")
        self.stream.flush()


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def mark_for(status: str, marks: dict[str, str]) -> str:
    return marks["ok"] if status == PASS else marks["ta"] if status == MANUAL else marks["ng"]


def show_findings(out: Printer, findings: list[Finding], indent: str = "  ") -> None:
    for finding in findings:
        say(out, f"{LEVEL_PREFIX.get(finding.level, '')}{finding.text}", indent)


def compact(value: Any) -> str:
    """A value without its kind, readably (grader.report.phrases.plain): never JSON braces."""
    return plain(value, "ja")


# ---------------------------------------------------------------- wrapping
WIDTH = 80  # columns of a console (and of Colab's captured output, where lines do not reflow)
NO_BREAK_BEFORE = set("、。，．・：；？！）」』】〕］｝〉》ー…’”%％)]},.:;!?")
NO_BREAK_AFTER = set("（「『【〔［｛〈《‘“([{")
NAME = re.compile(r"[\w./\\-]+")  # word characters (Japanese too) with path and extension marks
NAME_MARK = re.compile(r"\w[./\\_]\w")  # what makes such a run a file name: a.b, a/b, a_b
CODE = re.compile(r"`[^`\n]+`")  # `code` to copy, spaces and all: never cut
SHAPE = re.compile(r"\((?:\d[\d,]*|\?)(?:, (?:\d[\d,]*|\?))*,?\)")  # (16, 28, 28, 1), (16,): never cut


def columns(text: str) -> int:
    """Console columns of `text`: a wide (CJK) character takes two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


def _glues(pieces: list[str], ch: str) -> bool:
    """Does `ch` continue the last piece (no break allowed between them)?"""
    if not pieces:
        return False
    last = pieces[-1][-1]
    if ch.isspace() or last.isspace():
        return ch.isspace() and last.isspace()
    return (ch in NO_BREAK_BEFORE or last in NO_BREAK_AFTER
            or not (_wide(ch) or _wide(last)))  # a run of narrow characters: an ASCII word, `flow(x, y)`


def _tokens(text: str) -> list[str]:
    """Pieces a line may break between: spaces, each wide character, and whole runs of narrow ones
    (an ASCII word, `flow(x_train,`); `code in backquotes`, a shape and a file name or path stay one
    piece even with spaces or Japanese in them (`課題8_提出用.ipynb`); closing punctuation stays with the piece before it, opening brackets with the next."""
    pieces: list[str] = []
    at = 0
    whole = sorted([*CODE.finditer(text), *SHAPE.finditer(text), *(m for m in NAME.finditer(text)
                                              if any(_wide(ch) for ch in m.group()) and NAME_MARK.search(m.group()))],
                   key=lambda m: m.start())
    for name in whole:
        if name.start() < at:
            continue
        _add(pieces, text[at:name.start()])
        glued = _glues(pieces, name.group()[0])
        pieces[-1:] = [pieces[-1] + name.group()] if glued else [*pieces[-1:], name.group()]
        at = name.end()
    _add(pieces, text[at:])
    return pieces


def _add(pieces: list[str], text: str) -> None:
    for ch in text:
        if _glues(pieces, ch):
            pieces[-1] += ch
        else:
            pieces.append(ch)


def wrap(text: str, indent: str = "", width: int = WIDTH) -> list[str]:
    """`text` in lines of at most `width` columns, each after `indent`. Japanese breaks between any two
    characters; ASCII words and file names are never cut (a longer one gets a line of its own)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for piece in _tokens(paragraph):
            if piece.isspace():
                line += " " if line else ""
                continue
            if line and columns(indent + line.rstrip() + piece) > width:
                lines.append(indent + line.rstrip())
                line = ""
            line += piece
        lines.append(indent + line.rstrip())
    return lines


def say(out: Printer, text: str, indent: str = "") -> None:
    for line in wrap(text, indent):
        out(line)


def show_result(out: Printer, outcome: Any) -> None:
    """The checks as a table: mark, points, title [id], then message, expected/actual and hint."""
    result = outcome.result
    status = STATUS_JA.get(result.status, result.status)
    line = f"実行結果: {status}（{outcome.seconds:.1f} 秒）"
    say(out, line + (f" — {result.message}" if result.message else ""))
    out()
    out(" 判定  点       項目")
    pad = " " * 14
    for check in result.checks:
        points = f"?/{check.max_points}" if check.status == MANUAL else f"{check.points}/{check.max_points}"
        out(f"  {mark_for(check.status, out.marks)}   {points:<7} {check.title}  [{check.id}]")
        if check.status == PASS:
            continue
        if check.message:
            say(out, check.message, pad)
        if check.status != MANUAL and (check.expected is not None or check.actual is not None):
            say(out, f"期待: {expected_text(check, 'ja')}　実際: {actual_text(check, 'ja')}", pad)
        if check.hint and check.status != MANUAL:
            say(out, f"ヒント: {check.hint}", pad)
    out()
    checks = result.checks
    ok = sum(1 for c in checks if c.status == PASS)
    manual = sum(1 for c in checks if c.status == MANUAL)
    summary = f"公開チェック: {ok + manual}/{len(checks)} OK"
    if manual:
        summary += f"（うち TA 採点の {manual} 項目は、回答ありとして OK に数えています）"
    say(out, summary + f"　自動採点の点数: {result.score} / {result.max_score}")
    hidden = outcome.hidden or {}
    if hidden.get("checks"):
        say(out, f"このほか非公開の項目が {hidden['checks']} つ（{hidden.get('points', 0)} 点）あり、提出後の採点でのみ判定されます。")
    if outcome.exit_code == 0:
        out(f"{out.marks['ok']} 公開チェックはすべて OK です。")
    else:
        problems = len(checks) - ok - manual
        why = f"{problems} 項目が OK ではありません" if problems else "すべてのセルが最後まで正常に実行されていません"
        say(out, f"{out.marks['ng']} {why}。上の理由とヒントを見て直してください。")
