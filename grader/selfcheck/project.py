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

from jinja2 import Environment, select_autoescape

from grader.assignment.data import dataset_dir, fingerprint, load_dataset
from grader.engine.launcher import sandbox_for
from grader.engine.pipeline import ReferenceRun, Session, Submission
from grader.engine.reference import ensure_reference, library_versions
from grader.engine.session import make_session as make_grader_session
from grader.errors import ExecutionSetupError
from grader.results import ERROR, FAIL, MANUAL, NOT_RUN, PASS, STATUS_NAMES
from grader.isolation.launch import Launcher, LocalLauncher
from grader.selfcheck.diagnose import (
    Finding, environment_versions, merged, notebook_findings, path_findings, run_findings,
)
from grader.selfcheck.engine import (
    SELF_CHECK_BUDGET, Outcome, load_public_spec, make_session, public_events, public_reference, public_spec,
    run_self_check,
)
from grader.assignment.spec import AssignmentSpec, load_spec

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
                         no_sandbox: bool = False) -> CheckReport:
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
    return CheckReport(notebook=notebook, outcome=outcome, findings=merged(findings, run_findings(outcome)),
                       sandbox=launcher.name)


def run_check(*, notebook: Path, project_root: Path, assignment: str, keras_home: Path, cache_root: Path,
              no_sandbox: bool = False, html: Path | None = None) -> CheckReport:
    """Check the notebook and write its HTML report beside it (or to `html`)."""
    stop = path_findings(notebook)
    if stop:
        return CheckReport(notebook=notebook, outcome=None, findings=stop)
    report = asyncio.run(check_notebook(notebook, project_root=project_root, assignment=assignment,
                                        keras_home=keras_home, cache_root=cache_root, no_sandbox=no_sandbox))
    report.html = html or notebook.with_name(f"{notebook.stem}.selfcheck.html")
    report.html.write_text(render_html(report), encoding="utf-8")
    return report


# ---------------------------------------------------------------- output
HTML = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>セルフチェック {{ notebook.name }}</title>
<style>
body{font-family:system-ui,"Hiragino Sans","Yu Gothic",sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}th{white-space:nowrap}
.pass{color:#137333}.manual{color:#1a5fb4}.fail,.error,.not_run{color:#b3261e}.mark{font-size:1.3em;text-align:center}
.small{color:#666;font-size:.9em}li.error{color:#b3261e}li.warning{color:#8a5300}
</style></head><body>
<h1>セルフチェック: {{ notebook.name }}</h1>
<p class="small">{{ notebook }} ・ 予算 quick（学習を短縮）・ 公開チェックのみ ・ {{ "%.1f"|format(outcome.seconds) }} 秒
{% if sandbox %}・ 実行環境 {{ sandbox }}{% endif %}</p>
<p>実行結果: <strong>{{ status }}</strong>{% if result.message %} — {{ result.message }}{% endif %}</p>
{% if findings %}<ul>{% for f in findings %}<li class="{{ f.level }}">{{ f.text }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th>判定</th><th>点</th><th>項目</th><th>理由</th><th>ヒント</th></tr>
{% for c in result.checks %}<tr class="{{ c.status }}">
<td class="mark {{ c.status }}">{{ marks[c.status] }}</td>
<td>{% if c.status == S.MANUAL %}?{% else %}{{ c.points }}{% endif %}/{{ c.max_points }}</td>
<td>{{ c.title }}<br><span class="small">{{ c.id }}</span></td>
<td>{{ c.message }}{% if c.status not in (S.PASS, S.MANUAL) and (c.expected is not none or c.actual is not none) %}
<br><span class="small">期待: {{ c.expected|compact }} ／ 実際: {{ c.actual|compact }}</span>{% endif %}</td>
<td>{% if c.status != S.PASS %}{{ c.hint }}{% endif %}</td></tr>
{% endfor %}</table>
<p>公開チェック: {{ ok }}/{{ result.checks|length }} OK（TA 採点の項目は回答ありで OK）・ 自動採点の点数 {{ result.score }} / {{ result.max_score }}</p>
{% if outcome.hidden.checks %}<p class="small">このほか非公開の項目が {{ outcome.hidden.checks }} つ（{{ outcome.hidden.points }} 点）あり、提出後の採点でのみ判定されます。</p>{% endif %}
</body></html>
"""


def render_html(report: CheckReport) -> str:
    from grader.selfcheck.text import STATUS_JA, compact

    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["compact"] = lambda v: "—" if v is None else compact(v)
    env.globals["S"] = STATUS_NAMES
    assert report.outcome is not None  # only a check that ran has a report page
    result = report.outcome.result
    marks = {PASS: "✓", MANUAL: "－", FAIL: "✗", ERROR: "✗", NOT_RUN: "✗"}
    return env.from_string(HTML).render(
        notebook=report.notebook, outcome=report.outcome, result=result, findings=report.findings, marks=marks,
        status=STATUS_JA.get(result.status, result.status), sandbox=report.sandbox,
        ok=sum(1 for c in result.checks if c.status in (PASS, MANUAL)))
