"""`grader check NOTEBOOK`: the student self-check inside the project (grader.selfcheck.project),
printed as a Japanese table."""

from __future__ import annotations

from pathlib import Path

from grader.results import MANUAL, PASS
from grader.selfcheck.project import CheckReport, run_check


def main(*, notebook: Path, project_root: Path, assignment: str, keras_home: Path, cache_root: Path,
         no_sandbox: bool = False, html: Path | None = None) -> CheckReport:
    return run_check(notebook=notebook, project_root=project_root, assignment=assignment, keras_home=keras_home,
                     cache_root=cache_root, no_sandbox=no_sandbox, html=html)


def print_report(report: CheckReport) -> None:
    """A rich table in Japanese; the stream never fails on its encoding (cp932 consoles)."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from grader.selfcheck.text import STATUS_JA, Printer, compact, mark_for

    marks = Printer(sys.stdout).marks  # also switches stdout to errors="replace"
    console = Console(highlight=False)
    levels = {"error": "[bold red]エラー[/] ", "warning": "[yellow]注意[/] ", "info": ""}
    for finding in report.findings:
        console.print(f"  {levels.get(finding.level, '')}{escape(finding.text)}")
    outcome = report.outcome
    if outcome is None:
        return
    result = outcome.result
    console.print(f"実行結果: [bold]{STATUS_JA.get(result.status, result.status)}[/]（{outcome.seconds:.1f} 秒, "
                  f"予算 quick）" + (f" — {escape(result.message)}" if result.message else ""))
    table = Table(show_lines=True, expand=True)
    table.add_column("判定", no_wrap=True, justify="center")
    table.add_column("点", no_wrap=True, justify="right")
    table.add_column("項目", ratio=2, overflow="fold")
    table.add_column("理由・ヒント", ratio=3, overflow="fold")
    styles = {PASS: "green", MANUAL: "cyan"}
    for check in result.checks:
        mark = mark_for(check.status, marks)
        points = f"?/{check.max_points}" if check.status == MANUAL else f"{check.points}/{check.max_points}"
        lines = [check.message] if check.message else []
        if check.status not in (PASS, MANUAL) and (check.expected is not None or check.actual is not None):
            lines.append(f"期待: {compact(check.expected)}  実際: {compact(check.actual)}")
        if check.status not in (PASS, MANUAL) and check.hint:
            lines.append(f"[dim]ヒント: {escape(check.hint)}[/]")
        table.add_row(f"[{styles.get(check.status, 'red')}]{mark}[/]", points,
                      f"{escape(check.title)} [dim]{check.id}[/]", "\n".join(
                          line if line.startswith("[dim]") else escape(line) for line in lines))
    console.print(table)
    ok = sum(1 for c in result.checks if c.status in (PASS, MANUAL))
    console.print(f"公開チェック: {ok}/{len(result.checks)} OK（TA 採点の項目は回答ありで OK）  "
                  f"自動採点の点数: {result.score} / {result.max_score}")
    if outcome.hidden.get("checks"):
        console.print(f"このほか非公開の項目が {outcome.hidden['checks']} つ（{outcome.hidden.get('points', 0)} 点）"
                      "あり、提出後の採点でのみ判定されます。")
    if report.html:
        console.print(f"レポート: {report.html}")


