"""Plain-text output of a self-check that never crashes on the console's encoding.

Windows consoles and pipes may be cp932, which has no ✓ / ✗ (nor 〜 or ≥, used in messages): the
stream is switched to errors="replace" where possible, every write is encoded defensively, and the
marks fall back to ○ × (cp932 has them) or to ASCII.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, TextIO

from grader.selfcheck.diagnose import ERROR, WARNING, Finding
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
        out(f"{indent}{LEVEL_PREFIX.get(finding.level, '')}{finding.text}")


def compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def show_result(out: Printer, outcome: Any) -> None:
    """The checks as a table: mark, points, title [id], then message, expected/actual and hint."""
    result = outcome.result
    status = STATUS_JA.get(result.status, result.status)
    line = f"実行結果: {status}（{outcome.seconds:.1f} 秒）"
    out(line + (f" — {result.message}" if result.message else ""))
    out()
    out(" 判定  点       項目")
    pad = " " * 14
    for check in result.checks:
        points = f"?/{check.max_points}" if check.status == MANUAL else f"{check.points}/{check.max_points}"
        out(f"  {mark_for(check.status, out.marks)}   {points:<7} {check.title}  [{check.id}]")
        if check.status == PASS:
            continue
        if check.message:
            out(f"{pad}{check.message}")
        if check.status != MANUAL and (check.expected is not None or check.actual is not None):
            out(f"{pad}期待: {compact(check.expected)}  実際: {compact(check.actual)}")
        if check.hint and check.status != MANUAL:
            out(f"{pad}ヒント: {check.hint}")
    out()
    checks = result.checks
    ok = sum(1 for c in checks if c.status == PASS)
    manual = sum(1 for c in checks if c.status == MANUAL)
    summary = f"公開チェック: {ok + manual}/{len(checks)} OK"
    if manual:
        summary += f"（うち TA 採点の {manual} 項目は、回答ありとして OK に数えています）"
    out(summary + f"　自動採点の点数: {result.score} / {result.max_score}")
    hidden = outcome.hidden or {}
    if hidden.get("checks"):
        out(f"このほか非公開の項目が {hidden['checks']} つ（{hidden.get('points', 0)} 点）あり、提出後の採点でのみ判定されます。")
    if outcome.exit_code == 0:
        out(f"{out.marks['ok']} 公開チェックはすべて OK です。")
    else:
        problems = len(checks) - ok - manual
        why = f"{problems} 項目が OK ではありません" if problems else "すべてのセルが最後まで正常に実行されていません"
        out(f"{out.marks['ng']} {why}。上の理由とヒントを見て直してください。")
