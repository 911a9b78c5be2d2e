"""Batch progress: a live bar with counts and ETA on a terminal, plain lines otherwise (CI, logs).

Either way every finished student gets one line: id, status, score, seconds (or "unchanged").
The ETA counts only notebooks still to execute: seconds per executed notebook so far × what is
left ÷ the jobs running at once.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO

from grader.results import GRADED, StudentResult

if TYPE_CHECKING:
    from rich.progress import TaskID


class BatchProgress(Protocol):
    def start(self, *, total: int, to_run: int, jobs: int) -> None: ...

    def finished(self, result: StudentResult, *, reused: bool, seconds: float | None) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def start(self, *, total: int, to_run: int, jobs: int) -> None:
        pass

    def finished(self, result: StudentResult, *, reused: bool, seconds: float | None) -> None:
        pass

    def close(self) -> None:
        pass


class _Counter:
    """Counts and the ETA, shared by both displays."""

    def __init__(self) -> None:
        self.total = self.to_run = self.done = self.ran = 0
        self.jobs = 1
        self.run_seconds = 0.0
        self.started = time.monotonic()

    def start(self, *, total: int, to_run: int, jobs: int) -> None:
        self.total, self.to_run, self.jobs = total, to_run, max(1, jobs)
        self.started = time.monotonic()

    def add(self, *, reused: bool, seconds: float | None) -> None:
        self.done += 1
        if not reused:
            self.ran += 1
            self.run_seconds += seconds or 0.0

    def eta_seconds(self) -> float | None:
        left = self.to_run - self.ran
        if left <= 0:
            return 0.0
        if self.ran == 0:
            return None
        return self.run_seconds / self.ran * left / min(self.jobs, left)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def student_line(result: StudentResult, *, reused: bool, seconds: float | None) -> str:
    how = "unchanged" if reused else f"{seconds:.1f} s" if seconds is not None else ""
    message = f"  {result.message[:80]}" if result.message else ""
    return f"{result.student:<16} {result.status:<12} {result.score:>3} / {result.max_score:<3} {how:>10}{message}"


class PlainProgress:
    """One line per finished student, prefixed with the count and the ETA; nothing redrawn."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.counter = _Counter()

    def start(self, *, total: int, to_run: int, jobs: int) -> None:
        self.counter.start(total=total, to_run=to_run, jobs=jobs)
        print(f"{total} notebooks: {to_run} to run ({jobs} at once), {total - to_run} unchanged",
              file=self.stream, flush=True)

    def finished(self, result: StudentResult, *, reused: bool, seconds: float | None) -> None:
        c = self.counter
        c.add(reused=reused, seconds=seconds)
        width = len(str(c.total))
        eta = "" if reused or c.ran == c.to_run else f" ETA {format_seconds(c.eta_seconds())}"
        print(f"[{c.done:>{width}}/{c.total}{eta}] {student_line(result, reused=reused, seconds=seconds)}",
              file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar (rich) with done/total, executed count and ETA; student lines print above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console()
        self.counter = _Counter()
        self.progress = Progress(
            TextColumn("[bold]grading[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[ran]}"),
            TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), console=self.console, transient=False)
        self.task: TaskID | None = None

    def start(self, *, total: int, to_run: int, jobs: int) -> None:
        self.counter.start(total=total, to_run=to_run, jobs=jobs)
        self.console.print(f"{total} notebooks: {to_run} to run ({jobs} at once), {total - to_run} unchanged",
                           highlight=False)
        self.progress.start()
        self.task = self.progress.add_task("grading", total=total, ran=self._ran(), eta="?" if to_run else "0s")

    def _ran(self) -> str:
        return f"executed {self.counter.ran}/{self.counter.to_run}"

    def finished(self, result: StudentResult, *, reused: bool, seconds: float | None) -> None:
        self.counter.add(reused=reused, seconds=seconds)
        colour = "dim" if reused else "green" if result.status == GRADED else "yellow"
        line = student_line(result, reused=reused, seconds=seconds)
        self.progress.console.print(f"[{colour}]{_escape(line)}[/]", highlight=False)
        if self.task is not None:
            self.progress.update(self.task, advance=1, ran=self._ran(),
                                 eta=format_seconds(self.counter.eta_seconds()))

    def close(self) -> None:
        self.progress.stop()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def make_progress(stream: TextIO | None = None) -> BatchProgress:
    """The live bar on a terminal, plain lines when output goes to a file or a pipe."""
    stream = stream or sys.stdout
    return RichProgress() if stream.isatty() else PlainProgress(stream)
