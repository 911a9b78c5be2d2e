"""The student self-check inside the project (`grader check NOTEBOOK`).

The same engine as the downloaded selfcheck.py (grader.selfcheck.engine): the quick budget, the
visible checks only, expected values from the reference run's *public events*, here computed from
the cached quick reference run on the project's data. Prints a table, writes
`<notebook stem>.selfcheck.html` beside the notebook, and exits 0 only when every visible check is OK.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from grader.assignment.data import dataset_dir, fingerprint, load_dataset
from grader.engine.launcher import sandbox_for
from grader.engine.pipeline import ReferenceRun, Session, Submission
from grader.engine.reference import ensure_reference, library_versions
from grader.engine.session import make_session as make_grader_session
from grader.errors import ExecutionSetupError
from grader.isolation.launch import Launcher, LocalLauncher
from grader.selfcheck.diagnose import (
    Finding, environment_versions, merged, notebook_findings, path_findings, run_findings,
)
from grader.selfcheck.engine import (
    SELF_CHECK_BUDGET, Outcome, load_public_spec, make_session, public_events, public_reference, public_spec,
    run_self_check,
)
from grader.assignment.content import load_content
from grader.assignment.spec import AssignmentSpec, load_spec
from grader.selfcheck.page import page_path, write_page

log = logging.getLogger("grader.check")


@dataclass
class CheckReport:
    notebook: Path
    outcome: Outcome | None
    findings: list[Finding] = field(default_factory=list)
    html: Path | None = None
    sandbox: str = ""

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code if self.outcome else 2


def reference_session(spec: AssignmentSpec, *, keras_home: Path, launcher: Launcher, work: Path) -> Session:
    """A session like `grader grade --budget quick` has, so the reference cache is shared with it."""
    return make_grader_session(
        spec=spec, budget=spec.budget(SELF_CHECK_BUDGET), launcher=launcher, data=load_dataset(keras_home),
        data_dir=dataset_dir(keras_home).resolve(), out_dir=work / "out", work_root=work, lang="ja",
        threads=os.cpu_count() or 1, versions=library_versions())


async def ensure_quick_reference(spec: AssignmentSpec, *, keras_home: Path, cache_root: Path, launcher: Launcher,
                                 work: Path) -> tuple[ReferenceRun, Session]:
    session = reference_session(spec, keras_home=keras_home, launcher=launcher, work=work)
    reference = await ensure_reference(session, cache_root=cache_root, data_fingerprint=fingerprint(keras_home))
    return reference, session


def quick_reference(*, project_root: Path, assignment: str, keras_home: Path, cache_root: Path) -> ReferenceRun:
    """The quick reference run (cached), for `make selfcheck`; the reference notebook is trusted."""
    spec = load_spec(project_root, assignment)

    async def run() -> ReferenceRun:
        with tempfile.TemporaryDirectory(prefix="grader-reference-") as work:
            reference, _ = await ensure_quick_reference(spec, keras_home=keras_home, cache_root=cache_root,
                                                        launcher=LocalLauncher(), work=Path(work))
            return reference

    return asyncio.run(run())


def choose_launcher(spec: AssignmentSpec, *, hidden: list[Path], no_sandbox: bool) -> tuple[Launcher, str]:
    """The sandbox grading would use; without one, the notebook (normally your own) runs unsandboxed."""
    if no_sandbox:
        return LocalLauncher(), ""
    try:
        return sandbox_for(spec, spec.budget(SELF_CHECK_BUDGET), hidden=hidden, no_sandbox=False), ""
    except ExecutionSetupError:
        return LocalLauncher(), "サンドボックスが使えないため、隔離せずに実行しました（自分のノートブックの確認用）。"


async def check_notebook(notebook: Path, *, project_root: Path, assignment: str, keras_home: Path, cache_root: Path,
                         no_sandbox: bool = False, html: Path | None = None) -> CheckReport:
    """Run the self-check on `notebook`; with `html`, write its page there (while the run's files exist)."""
    spec = load_spec(project_root, assignment)
    public = public_spec(tomllib.loads(spec.source_bytes.decode("utf-8")))
    visible = load_public_spec(public, spec.root)
    launcher, note = choose_launcher(spec, hidden=[project_root, cache_root, keras_home, notebook.parent],
                                     no_sandbox=no_sandbox)
    findings = notebook_findings(notebook, environment_versions().get("keras"))
    if note:
        findings.append(Finding("info", note))
    with tempfile.TemporaryDirectory(prefix="grader-check-") as work:
        reference, ref_session = await ensure_quick_reference(spec, keras_home=keras_home, cache_root=cache_root,
                                                              launcher=launcher, work=Path(work))
        session = make_session(
            spec=visible, reference=public_reference(public_events(reference.evidence), Path(work) / "reference"),
            launcher=launcher, data_dir=ref_session.data_dir, out_dir=Path(work) / "out", work_root=Path(work),
            lang="ja", test_hashes=ref_session.test_hashes, versions=ref_session.versions,
        )
        outcome = await run_self_check(Submission("selfcheck", notebook), session,
                                       load_test_hashes=lambda run: ref_session.test_hashes,
                                       hidden=public.get("hidden"))
        report = CheckReport(notebook=notebook, outcome=outcome, findings=merged(findings, run_findings(outcome)),
                             sandbox=launcher.name, html=html)
        if html is not None:
            write_page(outcome, notebook=notebook, target=html, findings=report.findings,
                       content=load_content(spec.root), sandbox=report.sandbox)
    return report


def run_check(*, notebook: Path, project_root: Path, assignment: str, keras_home: Path, cache_root: Path,
              no_sandbox: bool = False, html: Path | None = None) -> CheckReport:
    """Check the notebook and write its HTML report beside it (or to `html`)."""
    stop = path_findings(notebook)
    if stop:
        return CheckReport(notebook=notebook, outcome=None, findings=stop)
    return asyncio.run(check_notebook(notebook, project_root=project_root, assignment=assignment,
                                      keras_home=keras_home, cache_root=cache_root, no_sandbox=no_sandbox,
                                      html=html or page_path(notebook)))
