"""Read what the kernel harness wrote, as data only.

Everything in the evidence folder was written by the student's process, so it is read
defensively: size caps, no symlinks, JSON and `.npz` with allow_pickle=False. Nothing here
imports Keras or executes anything from the folder.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader.kernel.grader_kernel import EVENTS_FILE, canonical, event_mac, file_digest

MAX_EVENTS_BYTES = 20_000_000
MAX_ARRAY_FILE_BYTES = 50_000_000
MAX_ARRAY_BYTES = 500_000_000  # uncompressed, per .npz: a small file must not inflate without bound
MAX_EVENTS = 50_000


# The harness writes arrays as `<name>.npz` and models as `model_fit<n>.keras` (both zip archives);
# nothing else leaves the job folder, whatever a student's code gets the recorder to vouch for (an
# .html page would otherwise be exported next to the report). A new harness file must match this.
EVIDENCE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\.(?:npz|keras)")
ZIP_MAGIC = b"PK\x03\x04"


def harness_file_name(name: Any) -> bool:
    return isinstance(name, str) and EVIDENCE_NAME.fullmatch(name) is not None


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def _shown(name: str) -> str:
    return ascii(name)[1:-1][:120]


def regular_file(path: Path, max_bytes: int) -> bool:
    """True for a plain file (not a link) no larger than max_bytes."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):  # ValueError: a name with a NUL byte, from the events file
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size <= max_bytes


@dataclass
class Evidence:
    """The events of one run, in order, plus lazy access to the arrays they name."""

    dir: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    digests: dict[str, str] | None = None  # file → sha256 vouched for by signed events (with a key)

    @classmethod
    def load(cls, directory: Path, key: bytes | None = None) -> Evidence:
        """Parse the events; with the job's key, keep only lines the harness signed."""
        evidence = cls(dir=directory)
        path = directory / EVENTS_FILE
        if not regular_file(path, MAX_EVENTS_BYTES):
            if path.exists() or path.is_symlink():
                evidence.problems.append("events file is not a plain file or is too large")
            return evidence
        with open(path, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines):
                if number >= MAX_EVENTS:
                    evidence.problems.append("too many events; the rest were ignored")
                    break
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    evidence.problems.append(f"unreadable event line {number + 1}")
                    continue  # a line cut short by a dying kernel
                if isinstance(event, dict) and isinstance(event.get("kind"), str):
                    evidence.events.append(event)
        if key is not None:
            evidence.keep_signed(key)
        return evidence

    def keep_signed(self, key: bytes) -> None:
        """Drop lines without a valid MAC (written by student code) and replayed lines."""
        kept, seen, rejected = [], set(), 0
        for event in self.events:
            mac = event.pop("mac", None)
            valid = isinstance(mac, str) and hmac.compare_digest(mac, event_mac(key, canonical(event)))
            if not valid or event.get("seq") in seen:
                rejected += 1
                continue
            seen.add(event.get("seq"))
            kept.append(event)
        self.events = kept
        self.digests = {e["file"]: e["sha256"] for e in kept
                        if e["kind"] == "artifact" and isinstance(e.get("file"), str)}
        if rejected:
            self.problems.append(f"{rejected} event lines not written by the grader's harness were ignored")

    def export(self, target: Path, *, max_total_bytes: int) -> list[str]:
        """Write the accepted events and the vouched-for files to `target`; returns what was left out.

        The exported folder holds only what the harness recorded, so later readers (reports)
        need no key.
        """
        target.mkdir(parents=True)
        with open(target / EVENTS_FILE, "w", encoding="utf-8") as out:
            for event in self.events:
                out.write(json.dumps(event, ensure_ascii=False) + "\n")
        skipped, total = [], 0
        names = sorted(self.digests) if self.digests is not None else sorted(
            e.name for e in os.scandir(self.dir) if e.name != EVENTS_FILE)
        for name in names:
            if not harness_file_name(name):
                skipped.append(f"{_shown(name)} (not a file name or type the harness writes)")
                continue
            path = self.safe_path(name, max_bytes=max_total_bytes)
            if path is None:
                skipped.append(f"{name} (missing, altered, a link or too large)")
                continue
            if not _starts_with(path, ZIP_MAGIC):
                skipped.append(f"{name} (not the archive its name says)")
                continue
            size = path.stat().st_size
            if total + size > max_total_bytes:
                skipped.append(f"{name} (over the evidence size limit)")
                continue
            total += size
            shutil.copyfile(path, target / name, follow_symlinks=False)
        if self.digests is not None:
            strays = sorted(e.name for e in os.scandir(self.dir) if e.name != EVENTS_FILE and e.name not in self.digests)
            skipped += [f"{_shown(name)} (not written by the grader's harness)" for name in strays
                        if not name.startswith(".")]
        return skipped

    # -- queries ------------------------------------------------------------------------
    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]

    def first(self, kind: str) -> dict[str, Any] | None:
        found = self.of(kind)
        return found[0] if found else None

    @property
    def harness_ready(self) -> bool:
        return self.first("harness_ready") is not None

    def compat_shims(self) -> list[str]:
        shims = [e.get("shim", "") for e in self.of("compat")]
        shims += [note for e in self.of("fit_start") for note in e.get("compat", [])]
        return sorted(set(shims))

    def flow(self, number: int) -> dict[str, Any] | None:
        return next((e for e in self.of("flow") if e.get("flow") == number), None)

    def batch(self, flow_number: int) -> dict[str, Any] | None:
        return next((e for e in self.of("batch") if e.get("flow") == flow_number), None)

    def datagen(self, number: int) -> dict[str, Any] | None:
        return next((e for e in self.of("datagen") if e.get("datagen") == number), None)

    def finished_fits(self) -> list[dict[str, Any]]:
        ended = {e.get("fit") for e in self.of("fit_end")}
        return [e for e in self.of("fit_start") if e.get("fit") in ended]

    def training_fit(self) -> dict[str, Any] | None:
        """The fit that counts: the last finished one fed by a flow() generator, else the last
        finished one, else (nothing finished) the last one started."""
        started = self.of("fit_start")
        finished = self.finished_fits()
        for candidates in (finished, started):
            from_flow = [f for f in candidates if f.get("input", {}).get("kind") == "flow"]
            if from_flow or candidates:
                return (from_flow or candidates)[-1]
        return None

    def model_file(self, fit_number: int) -> Path | None:
        saved = next((e for e in self.of("model_saved") if e.get("fit") == fit_number), None)
        if not saved:
            return None
        return self.safe_path(saved.get("file"), max_bytes=200_000_000)

    def history(self, fit_number: int) -> dict[str, list[float]]:
        end = next((e for e in self.of("fit_end") if e.get("fit") == fit_number), None)
        return dict(end.get("history", {})) if end else {}

    # -- files --------------------------------------------------------------------------
    def safe_path(self, name: Any, max_bytes: int | None = None) -> Path | None:
        """A file directly inside the evidence folder, plain, not a link, size-capped."""
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            return None
        path = self.dir / name
        if not regular_file(path, MAX_ARRAY_FILE_BYTES if max_bytes is None else max_bytes):
            return None
        if self.digests is not None and self.digests.get(name) != file_digest(path):
            return None  # not the file the harness wrote (replaced or never vouched for)
        return path

    def arrays(self, name: Any) -> dict[str, np.ndarray]:
        path = self.safe_path(name)
        if path is None:
            return {}
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with data:
                inflated = sum(info.file_size for info in data.zip.infolist())
                if inflated > MAX_ARRAY_BYTES:
                    raise ValueError(f"{inflated} bytes uncompressed, more than {MAX_ARRAY_BYTES}")
                found = {key: data[key] for key in data.files}
            return {key: value for key, value in found.items() if isinstance(value, np.ndarray)}  # not raw members
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            self.problems.append(f"unreadable array file {name}: {exc}")
            return {}
