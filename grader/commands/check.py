"""`grader check NOTEBOOK`: the student self-check inside the project (grader.selfcheck.project),
printed as selfcheck.py prints it, with the same HTML page."""

from __future__ import annotations

from pathlib import Path

from grader.selfcheck.project import CheckReport, run_check


def main(*, notebook: Path, project_root: Path, assignment: str, keras_home: Path, cache_root: Path,
         no_sandbox: bool = False, html: Path | None = None) -> CheckReport:
    return run_check(notebook=notebook, project_root=project_root, assignment=assignment, keras_home=keras_home,
                     cache_root=cache_root, no_sandbox=no_sandbox, html=html)


def print_report(report: CheckReport) -> None:
    """The same plain text as selfcheck.py prints (grader.selfcheck.text: wrapped at word boundaries,
    never failing on the console's encoding), then where the HTML report is."""
    import sys

    from grader.selfcheck.text import Printer, show_findings, show_result

    out = Printer(sys.stdout)
    show_findings(out, report.findings)
    if report.outcome is None:
        return
    out()
    show_result(out, report.outcome)
    if report.html:
        out(f"レポート: {report.html}")
