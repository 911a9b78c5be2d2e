"""Temporary work roots of grading batches, and cleaning up after a grader that was killed.

Each job's folder under the work root is a tmpfs mount when the sandbox runs as root. A grader
that ends normally unmounts and removes everything; one killed with SIGKILL cannot, so its
work root stays behind with mounts in it. Every work root holds an owner file that its grader
keeps locked (flock) while it lives: a work root whose lock can be taken belongs to no live
process, and the next batch unmounts and removes it before it starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("grader.workroot")
PREFIX = "grader-"
OWNER_FILE = ".grader-owner"
MOUNTINFO = Path("/proc/self/mountinfo")


def mounts_under(folder: Path, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Mount points at or below `folder`, deepest first."""
    base = folder.resolve()
    found = []
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = Path(_unescape(fields[4]))
        if point == base or base in point.parents:
            found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def unmount_all(folder: Path) -> None:
    for point in mounts_under(folder):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def clean_stale_work_roots(temp_dir: Path | None = None) -> list[Path]:
    """Unmount and remove work roots whose grader is gone; returns what was removed."""
    removed = []
    for folder in sorted(Path(temp_dir or tempfile.gettempdir()).glob(f"{PREFIX}*")):
        owner = folder / OWNER_FILE
        if folder.is_symlink() or not folder.is_dir() or not owner.is_file():
            continue  # not a batch work root (or not ours to judge)
        try:
            fd = os.open(owner, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its grader is alive
            log.warning("removing the work folder of a grader that was killed: %s", folder)
            unmount_all(folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


@contextmanager
def work_root(prefix: str = PREFIX) -> Iterator[Path]:
    """A fresh work root, locked by this process for as long as it is in use; stale ones go first."""
    clean_stale_work_roots()
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    fd = os.open(folder / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by kernels (O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield folder
    finally:
        unmount_all(folder)  # normally none left: every job unmounts its own folder
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


@contextmanager
def exclusive_output(out: Path) -> Iterator[None]:
    """One grader at a time per output folder (two would interleave results and reports)."""
    from grader.errors import ConfigError

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".grader.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise ConfigError(f"another grader (pid {holder or '?'}) is writing to {out}; wait for it or "
                              "choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
