"""`grader pull`: turn an LMS bulk download (a folder or a zip) into `DIR/<id>.ipynb` + a manifest.

Layouts recognised (a single wrapper folder around everything is looked through):
  * Moodle: `Full Name_12345_assignsubmission_file_/…ipynb` (participant id 12345);
  * Canvas: `name_12345_67890_original.ipynb` and `name_LATE_12345_67890_original.ipynb`
    (user id 12345, attempt/submission id 67890);
  * plain: `<id>.ipynb` or `<id>/….ipynb`.
A zip inside a student's folder (or at the top level) is opened one level deep.

LMS ids and names become student ids through the roster CSV (`student_id` plus any of `name`,
`moodle_id`, `canvas_id`); without a roster the LMS's own numeric id is the student id. Ids
follow grader.student_ids (kept as written, NFC; unusable or colliding names are reported as not
matched, never pulled). Per student the latest submission wins (time, then attempt id). The submission time is the file's
time inside the zip (ZipInfo.date_time, local time of the deadline's zone) or the file's mtime.

Archives are untrusted: absolute paths, `..`, links and special files, encrypted entries, too
many entries, too many bytes, suspicious compression ratios, a name used twice or both as a file
and a folder, and entries the disk cannot hold are refused (UnsafeArchiveError, exit 2)
before anything is written, and sizes are enforced while decompressing, not taken on trust.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path, PurePosixPath

from grader.errors import ConfigError, GraderError
from grader.manifest import MANIFEST
from grader.student_ids import clash_key, escaped, normalise, printable
from grader.student_ids import problem as id_problem

MOODLE = re.compile(r"^(?P<name>.+)_(?P<lms_id>\d+)_assignsubmission_[a-z]+_?$")
CANVAS = re.compile(r"^(?P<name>[^_/]+?)(?P<late>_LATE)?_(?P<lms_id>\d+)_(?P<attempt>\d+)_(?P<original>.+)$")
IGNORED_PARTS = {"__MACOSX", ".ipynb_checkpoints"}


class UnsafeArchiveError(GraderError):
    """An archive that could write outside its folder, contains links, or expands suspiciously."""

    exit_code = 2


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 5_000
    max_total_bytes: int = 2 * 1024**3
    max_file_bytes: int = 256 * 1024**2
    max_ratio: float = 200.0       # uncompressed ÷ compressed, per entry …
    ratio_min_bytes: int = 1024**2  # … for entries bigger than this (tiny files compress oddly)


@dataclass
class Pulled:
    student: str
    original_name: str
    submitted_at: str
    late: bool | None
    late_by_s: int | None
    source: str
    layout: str
    lms_id: str | None = None
    attempt: int | None = None
    superseded: list[str] = field(default_factory=list)


@dataclass
class PullSummary:
    submissions: Path
    students: list[Pulled]
    unmatched: list[str]
    skipped: list[str]
    manifest: Path


@dataclass
class _Found:
    path: Path             # the extracted / original file
    source: str            # its path inside the download
    layout: str
    key: str               # student id, or the LMS id / name before the roster
    name: str | None
    lms_id: str | None
    attempt: int | None
    late_flag: bool
    mtime: float


# ---------------------------------------------------------------- safe extraction
def _entry_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if not info.flag_bits & 0x800:  # not flagged UTF-8: zipfile decoded cp437; try what Japanese PCs write
        raw = name.encode("cp437", errors="replace")
        for encoding in ("utf-8", "cp932"):
            try:
                name = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    return name.replace("\\", "/")


def _check_entry(archive: str, info: zipfile.ZipInfo, name: str, limits: ZipLimits) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} would be written outside the target folder")
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} is a symbolic link; links are not accepted")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # type bits absent: a plain file
        raise UnsafeArchiveError(f"{archive}: entry {name!r} is not a regular file")
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} is encrypted")
    if info.file_size > limits.max_file_bytes:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} is {info.file_size:,} bytes "
                                 f"(limit {limits.max_file_bytes:,})")
    if info.file_size > limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(1, info.compress_size):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} expands {info.file_size / max(1, info.compress_size):.0f}×"
                                 f" (limit {limits.max_ratio:.0f}×): refusing a possible zip bomb")
    if info.is_dir() or not path.parts:
        return None
    return path


class _Budget:
    def __init__(self, limits: ZipLimits) -> None:
        self.limits, self.entries, self.bytes = limits, 0, 0


def safe_extract(archive: Path, target: Path, *, limits: ZipLimits, budget: _Budget, tz: tzinfo,
                 label: str | None = None) -> list[Path]:
    """Check every entry first, then extract regular files, counting real bytes; mtimes from the zip."""
    label = label or archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchiveError(f"{label}: not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        budget.entries += len(infos)
        if budget.entries > limits.max_entries:
            raise UnsafeArchiveError(f"{label}: more than {limits.max_entries:,} entries")
        planned = []
        declared = 0
        for info in infos:
            name = _entry_name(info)
            path = _check_entry(label, info, name, limits)
            declared += info.file_size
            if path is not None:
                planned.append((info, path))
        _check_layout(label, planned, [PurePosixPath(_entry_name(i)) for i in infos if i.is_dir()])
        if budget.bytes + declared > limits.max_total_bytes:
            raise UnsafeArchiveError(f"{label}: expands to {declared:,} bytes (limit {limits.max_total_bytes:,})")
        written = []
        root = target.resolve()
        for info, path in planned:
            destination = (target / Path(*path.parts)).resolve()
            if root not in destination.parents:
                raise UnsafeArchiveError(f"{label}: entry {info.filename!r} would be written outside the target folder")
            size = 0
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(destination, "wb") as sink:
                    while chunk := source.read(1 << 20):
                        size += len(chunk)
                        budget.bytes += len(chunk)
                        if size > max(info.file_size, 0) or size > limits.max_file_bytes \
                                or budget.bytes > limits.max_total_bytes:
                            raise UnsafeArchiveError(f"{label}: entry {info.filename!r} is larger than it declares")
                        sink.write(chunk)
            except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:  # a name the disk refuses, a bad CRC
                raise UnsafeArchiveError(f"{label}: entry {info.filename!r} cannot be extracted: "
                                         f"{getattr(exc, 'strerror', None) or exc}") from None
            when = datetime(*info.date_time, tzinfo=tz).timestamp()
            os.utime(destination, (when, when))
            written.append(destination)
        return written


def _check_layout(label: str, planned: list[tuple[zipfile.ZipInfo, PurePosixPath]],
                  folders: list[PurePosixPath]) -> None:
    """Refuse what cannot be laid out as one tree: a name used twice, or both as a file and as a folder."""
    files: dict[tuple[str, ...], str] = {}
    for info, path in planned:
        key = tuple(unicodedata.normalize("NFC", part) for part in path.parts)
        if key in files:
            raise UnsafeArchiveError(f"{label}: {path.as_posix()!r} appears twice in the archive")
        files[key] = info.filename
    parents = {key[:i] for key in files for i in range(1, len(key))}
    parents |= {tuple(unicodedata.normalize("NFC", p) for p in folder.parts) for folder in folders}
    clash = sorted(set(files) & parents)
    if clash:
        raise UnsafeArchiveError(f"{label}: {'/'.join(clash[0])!r} is both a file and a folder in the archive")


# ---------------------------------------------------------------- layouts
def _walk(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_PARTS and not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                files.append(Path(folder) / name)
    return files


def _content_root(root: Path) -> Path:
    """Look through one wrapper folder (`kadai8-submissions/…`), as LMS downloads sometimes add."""
    entries = [p for p in root.iterdir() if p.name not in IGNORED_PARTS and not p.name.startswith(".")]
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink() or MOODLE.match(entries[0].name):
        return root
    inside = [p for p in entries[0].iterdir() if p.name not in IGNORED_PARTS and not p.name.startswith(".")]
    notebooks = [p for p in inside if p.is_file() and p.suffix in (".ipynb", ".zip")]
    # one folder holding one notebook is a single student's `<id>/` folder; more is a class
    if any(p.is_dir() for p in inside) or len(notebooks) > 1:
        return entries[0]
    return root


def classify(rel: PurePosixPath) -> tuple[str, str, str | None, str | None, int | None, bool] | None:
    """(layout, key, name, lms id, attempt, late flag) for a notebook's path inside the download."""
    for part in rel.parts[:-1]:
        m = MOODLE.match(part)
        if m:
            return "moodle", m["lms_id"], m["name"], m["lms_id"], None, False
    top = rel.parts[0]
    if len(rel.parts) == 1:
        m = CANVAS.match(top)
        if m:
            return "canvas", m["lms_id"], m["name"], m["lms_id"], int(m["attempt"]), bool(m["late"])
        return "plain", rel.stem, None, None, None, False
    return "plain", top, None, None, None, False


def _normal_name(name: str) -> str:
    return re.sub(r"[\s_\-.,・　]+", "", unicodedata.normalize("NFKC", name)).casefold()


class Roster:
    """student_id plus optional name / moodle_id / canvas_id columns (UTF-8, BOM allowed)."""

    def __init__(self, path: Path) -> None:
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows = list(csv.DictReader(handle))
        except OSError as exc:
            raise ConfigError(f"cannot read the roster {path}: {exc}") from None
        if not rows or "student_id" not in rows[0]:
            raise ConfigError(f"{path}: the roster needs a `student_id` column (optional: name, moodle_id, canvas_id)")
        self.ids = {normalise(r["student_id"].strip()) for r in rows if (r.get("student_id") or "").strip()}
        self.by_lms: dict[tuple[str, str], str] = {}
        self.by_name: dict[str, str] = {}
        for r in rows:
            sid = normalise((r.get("student_id") or "").strip())
            for layout in ("moodle", "canvas"):
                if (r.get(f"{layout}_id") or "").strip():
                    self.by_lms[(layout, r[f"{layout}_id"].strip())] = sid
            if (r.get("name") or "").strip():
                self.by_name[_normal_name(r["name"])] = sid

    def resolve(self, found: _Found) -> str | None:
        if found.layout == "plain":
            return normalise(found.key) if normalise(found.key) in self.ids else None
        return self.by_lms.get((found.layout, found.lms_id or "")) or \
            (self.by_name.get(_normal_name(found.name)) if found.name else None)


# ---------------------------------------------------------------- the command
def _timezone(deadline: datetime | None) -> tzinfo:
    if deadline is not None and deadline.tzinfo is not None:
        return deadline.tzinfo
    return datetime.now().astimezone().tzinfo or timezone.utc


def main(*, source: Path, submissions: Path, roster: Path | None = None, deadline: str | None = None,
         limits: ZipLimits | None = None) -> PullSummary:
    limits = limits or ZipLimits()
    if not source.exists():
        raise ConfigError(f"{source} does not exist (give the LMS download: a folder or a .zip)")
    try:
        due = datetime.fromisoformat(deadline) if deadline else None
    except ValueError:
        raise ConfigError(f"--deadline {deadline!r} is not an ISO date/time, e.g. 2026-07-10T23:59:00+09:00") from None
    tz = _timezone(due)
    if due is not None and due.tzinfo is None:
        due = due.replace(tzinfo=tz)
    book = Roster(roster) if roster else None
    budget = _Budget(limits)
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="grader-pull-") as scratch:
        scratch_dir = Path(scratch)
        if source.is_dir():
            root = source
        elif zipfile.is_zipfile(source):
            root = scratch_dir / "download"
            root.mkdir()
            safe_extract(source, root, limits=limits, budget=budget, tz=tz, label=source.name)
        else:
            raise ConfigError(f"{source} is neither a folder nor a zip file")
        root = _content_root(root)
        found: list[_Found] = []
        for path in _walk(root):
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if path.is_symlink():
                skipped.append(f"{rel} (a link: not followed)")
                continue
            if path.suffix.lower() == ".zip":  # a student's zipped folder: one level deep
                inner = scratch_dir / "nested" / str(len(found)) / path.name
                inner.mkdir(parents=True)
                zipped_at = path.stat().st_mtime
                for file in safe_extract(path, inner, limits=limits, budget=budget, tz=tz, label=str(rel)):
                    inner_rel = file.relative_to(inner).as_posix()
                    if file.suffix.lower() == ".zip":
                        skipped.append(f"{rel}/{inner_rel} (a zip inside a zip: not opened)")
                    elif file.suffix == ".ipynb" and not set(PurePosixPath(inner_rel).parts) & IGNORED_PARTS \
                            and not file.name.startswith("."):
                        os.utime(file, (zipped_at, zipped_at))  # submitted when the zip was uploaded
                        # classified as if the zip were the notebook (top level) or by its folder
                        outer = rel.with_suffix(".ipynb") if len(rel.parts) == 1 else rel.parent / file.name
                        found.append(_make_found(file, f"{rel}!{inner_rel}", outer))
                continue
            if path.suffix != ".ipynb":
                skipped.append(f"{rel} (not a notebook)")
                continue
            found.append(_make_found(path, str(rel), rel))

        chosen: dict[str, list[_Found]] = {}
        unmatched: list[str] = []
        for item in found:
            student = book.resolve(item) if book else item.key
            what = f"{escaped(item.source)} ({item.layout}" + (f", id {item.lms_id}" if item.lms_id else "") + \
                (f", name {escaped(item.name)}" if item.name else "") + ")"
            if student is None:
                unmatched.append(what + " — not in the roster")
                continue
            why = id_problem(student)
            if why:
                unmatched.append(f"{what} — {printable(student)} is not a usable student id: {why}")
                continue
            chosen.setdefault(normalise(student), []).append(item)
        unmatched += _refuse_clashes(chosen)

        submissions.mkdir(parents=True, exist_ok=True)
        pulled = []
        for student in sorted(chosen):
            items = sorted(chosen[student], key=lambda f: (f.mtime, f.attempt or 0, f.source))
            latest = items[-1]
            when = datetime.fromtimestamp(latest.mtime, tz)
            late_by = None if due is None else max(0, int((when - due).total_seconds()))
            if late_by is not None:
                late = late_by > 0 or latest.late_flag
            else:
                late = True if latest.late_flag else None  # no deadline: only Canvas's _LATE says so
            target = submissions / f"{student}.ipynb"
            shutil.copyfile(latest.path, target)
            os.utime(target, (latest.mtime, latest.mtime))
            pulled.append(Pulled(student=student, original_name=latest.path.name, submitted_at=when.isoformat(),
                                 late=late, late_by_s=late_by, source=latest.source, layout=latest.layout,
                                 lms_id=latest.lms_id, attempt=latest.attempt,
                                 superseded=[f.source for f in items[:-1]]))
    manifest = submissions / MANIFEST
    manifest.write_text(json.dumps({
        "source": str(source), "deadline": due.isoformat() if due else None, "roster": str(roster) if roster else None,
        "pulled_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "students": [asdict(p) for p in pulled], "unmatched": unmatched, "skipped": skipped,
    }, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return PullSummary(submissions, pulled, unmatched, skipped, manifest)


def _refuse_clashes(chosen: dict[str, list[_Found]]) -> list[str]:
    """Ids that differ but are one id to a case-insensitive disk or a TA (`S1`/`s1`, `ｓ1`/`s1`):
    none of them is pulled, each is reported (grader.student_ids)."""
    by_key: dict[str, list[str]] = {}
    for student in chosen:
        by_key.setdefault(clash_key(student), []).append(student)
    refused = []
    for students in by_key.values():
        if len(students) > 1:
            listed = ", ".join(printable(s) for s in sorted(students))
            for student in sorted(students):
                for item in chosen.pop(student):
                    refused.append(f"{escaped(item.source)} — several submissions map to one id ({listed}); "
                                   "none is pulled")
    return refused


def _make_found(path: Path, source: str, rel: PurePosixPath) -> _Found:
    layout, key, name, lms_id, attempt, late = classify(rel)
    return _Found(path=path, source=source, layout=layout, key=key, name=name, lms_id=lms_id, attempt=attempt,
                  late_flag=late, mtime=path.stat().st_mtime)
