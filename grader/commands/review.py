"""`grader review`: the TA review web app for a graded class (see grader.review.app).

Binds 127.0.0.1 only; prints `http://127.0.0.1:PORT/?token=…` (a fresh secrets.token_urlsafe per
start) and serves until Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from grader.assignment.paths import DEFAULT_ASSIGNMENT
from grader.errors import ConfigError
from grader.gradebook.store import GRADEBOOK_FILE


def main(*, out: Path, project_root: Path, assignment: str = DEFAULT_ASSIGNMENT, port: int = 8808,
         reviewer: str | None = None,
         on_ready: Callable[[str], None] | None = None) -> None:
    from grader.review.app import ReviewServer

    if not (out / GRADEBOOK_FILE).is_file():
        raise ConfigError(f"no gradebook in {out}: grade the class first (grader grade --out {out})")
    try:
        server = ReviewServer(out=out, project_root=project_root, assignment=assignment, port=port,
                              reviewer=reviewer or "")
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {exc} (try --port 0)") from None
    if on_ready:
        on_ready(server.url)
    try:
        server.serve_forever()
    finally:
        server.shutdown()
