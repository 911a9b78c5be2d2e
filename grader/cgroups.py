"""One control group per sandboxed job: a real memory limit, a process limit, an equal CPU share.

Why cgroups and not only rlimits: RLIMIT_AS bounds *address space*, not memory. A notebook that
fills a memfd with `posix_fallocate` (never mapped), writes to /dev/shm or /tmp (tmpfs: RAM) or
to its tmpfs job folder holds host RAM that no rlimit sees. The memory controller charges every
one of those pages (anonymous, page cache, shmem, tmpfs, memfd, kernel memory) to the cgroup of
the process that allocated them, and kills inside the cgroup when the limit is reached.

Where the groups live: under the grader's *own* cgroup (from /proc/self/cgroup), in a child
`kadai-grader/`, one `job-<uid>` per job (the uid is unique machine-wide while its job runs, see
grader.sandbox). Nesting keeps every limit set above the grader in force for its kernels.

    cgroup v2   used when the unified hierarchy offers `memory` and `pids` where the grader runs
                and the controllers can be enabled for our child (not possible in a non-root
                cgroup that holds processes: the "no internal processes" rule). memory.max,
                memory.swap.max = 0, pids.max, cpu.weight; OOM kills from memory.events.
    cgroup v1   the memory controller (required) plus pids and cpu when mounted:
                memory.limit_in_bytes and memory.memsw.limit_in_bytes (RAM + swap: no swap on
                top) when swap accounting exists, pids.max, cpu.shares; OOM kills from
                memory.oom_control (`oom_kill`).
    none        neither works (not root, no controllers): grader.sandbox falls back to rlimits
                and says so.

A process is put into its group by a tiny shell that writes its own pid to each `cgroup.procs`
and then execs the sandbox: everything the job starts inherits the group, from the first byte.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
SELF_CGROUP = Path("/proc/self/cgroup")
PARENT_NAME = "kadai-grader"
V1_CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True)
class GroupLimits:
    memory_mb: int
    processes: int


@dataclass
class JobGroup:
    """The cgroup directories of one job (one per v1 hierarchy, one for v2)."""

    version: int
    dirs: dict[str, Path]  # controller ("memory", "pids", "cpu"; "unified" for v2) → directory

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in dict.fromkeys(self.dirs.values())]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found |= {int(p) for p in procs.read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def oom_kills(self) -> int:
        """Processes the memory controller killed in this group (0 when none, or unreadable)."""
        memory = self.dirs.get("memory") or self.dirs.get("unified")
        if memory is None:
            return 0
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        fields = _key_values(memory / name)
        if "oom_kill" in fields:
            return fields["oom_kill"]
        # kernels before 4.13 have no oom_kill counter in v1: a hit limit is the nearest sign
        return 1 if self.version == 1 and _read_int(memory / "memory.failcnt") else 0

    def peak_memory_mb(self) -> int | None:
        memory = self.dirs.get("memory") or self.dirs.get("unified")
        if memory is None:
            return None
        value = _read_int(memory / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"))
        return None if value is None else value // 2**20

    def kill_all(self, timeout_s: float = 20.0) -> None:
        """SIGKILL everything in the group until it is empty (a forking process may race us)."""
        unified = self.dirs.get("unified")
        if unified is not None and (unified / "cgroup.kill").exists():
            _write(unified / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove(self) -> None:
        """Kill what is left and remove the directories (charges left, e.g. tmpfs pages, move up)."""
        self.kill_all()
        for directory in dict.fromkeys(self.dirs.values()):
            _rmdir(directory)


@dataclass
class Cgroups:
    """Where job groups are made, and how they are limited."""

    version: int
    parents: dict[str, Path]  # controller → the `kadai-grader` directory under the grader's own group
    swap_accounted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        controllers = ", ".join(c for c in V1_CONTROLLERS if c in self.parents or self.version == 2)
        return f"cgroup v{self.version} ({controllers})"

    def describe(self, limits: GroupLimits) -> dict[str, str]:
        """The limits a job gets, in words, for `grader doctor`, result.json and the reports."""
        swap = ("no swap on top (memory+swap capped)" if self.swap_accounted else
                "swap not accounted here (the machine has none)" if not _swap_total() else
                "swap NOT capped: the machine has swap but no swap accounting")
        described = {"memory": f"{self.name.split(' (')[0]} {limits.memory_mb} MiB per job: RAM, page cache, "
                               f"tmpfs (/tmp, /dev/shm, job folder), shared memory and memfd; {swap}; "
                               "over it the memory controller kills (reported as memory limit exceeded)"}
        if self.version == 2 or "pids" in self.parents:
            described["processes"] = f"{limits.processes} processes/threads per job (pids controller)"
        if self.version == 2 or "cpu" in self.parents:
            described["cpu"] = "equal CPU share per job (cpu controller)"
        return described

    def create(self, name: str, limits: GroupLimits) -> JobGroup:
        """A fresh group `name` (a stale one of the same name is emptied and removed first)."""
        dirs = {controller: parent / name for controller, parent in self.parents.items()}
        stale = JobGroup(self.version, {c: d for c, d in dirs.items() if d.is_dir()})
        if stale.dirs:
            stale.remove()
        for directory in dict.fromkeys(dirs.values()):
            directory.mkdir()
        group = JobGroup(self.version, dirs)
        try:
            self._limit(group, limits)
        except OSError:
            group.remove()
            raise
        return group

    def _limit(self, group: JobGroup, limits: GroupLimits) -> None:
        memory = limits.memory_mb * 2**20
        if self.version == 2:
            folder = group.dirs["unified"]
            _write(folder / "memory.max", str(memory))
            if (folder / "memory.swap.max").exists():
                _write(folder / "memory.swap.max", "0")
            _write(folder / "pids.max", str(limits.processes))
            if (folder / "cpu.weight").exists():
                _write(folder / "cpu.weight", "100")
            return
        folder = group.dirs["memory"]
        _write(folder / "memory.limit_in_bytes", str(memory))
        if self.swap_accounted:
            _write(folder / "memory.memsw.limit_in_bytes", str(memory))  # after the RAM limit: memsw ≥ memory
        if "pids" in group.dirs:
            _write(group.dirs["pids"] / "pids.max", str(limits.processes))
        if "cpu" in group.dirs:
            _write(group.dirs["cpu"] / "cpu.shares", "1024")


# ---------------------------------------------------------------- finding a usable hierarchy
@dataclass(frozen=True)
class Mount:
    point: Path
    root: str
    fstype: str
    options: frozenset[str]


def read_mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    mounts = []
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mounts.append(Mount(Path(_unescape(fields[4])), _unescape(fields[3]), tail[0],
                            frozenset(tail[2].split(",") + fields[5].split(","))))
    return mounts


def own_groups(self_cgroup: Path = SELF_CGROUP) -> dict[str, str]:
    """controller → this process's cgroup path ("unified" for the v2 line `0::/path`)."""
    groups: dict[str, str] = {}
    try:
        lines = self_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return groups
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in (controllers.split(",") if controllers else ["unified"]):
            groups[controller] = path
    return groups


def _own_dir(mount: Mount, path: str) -> Path:
    """The directory of our own group inside a mounted hierarchy."""
    root = mount.root.rstrip("/")
    relative = path[len(root):] if root and (path == root or path.startswith(root + "/")) else path
    return mount.point / relative.lstrip("/")


def detect(*, mountinfo: Path = MOUNTINFO, self_cgroup: Path = SELF_CGROUP) -> tuple[Cgroups | None, str]:
    """The hierarchy to use, or None and why not. Creates (and keeps) the `kadai-grader` parent."""
    if os.geteuid() != 0:
        return None, "not root: cgroups are not delegated to this user"
    mounts, groups = read_mounts(mountinfo), own_groups(self_cgroup)
    reasons = []
    unified = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if unified is not None and "unified" in groups:
        found, why = _detect_v2(unified, groups["unified"])
        if found:
            return found, why
        reasons.append(f"v2: {why}")
    else:
        reasons.append("v2: no cgroup2 hierarchy")
    found, why = _detect_v1(mounts, groups)
    if found:
        return found, why
    reasons.append(f"v1: {why}")
    return None, "; ".join(reasons)


def _detect_v2(mount: Mount, path: str) -> tuple[Cgroups | None, str]:
    own = _own_dir(mount, path)
    available = set(_read(own / "cgroup.controllers").split())
    if not {"memory", "pids"} <= available:
        return None, f"{own} offers controllers {sorted(available) or 'none'}, needs memory and pids"
    wanted = [c for c in ("memory", "pids", "cpu") if c in available]
    parent = own / PARENT_NAME
    try:
        _write(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    except OSError as exc:
        why = ("the grader's own cgroup holds processes (v2 allows controllers only for groups without "
               "them); run the grader in a delegated, empty cgroup" if exc.errno == errno.EBUSY else str(exc))
        return None, why
    cgroups = Cgroups(2, {"unified": parent}, swap_accounted=(parent / "memory.swap.max").exists())
    return _probe(cgroups, f"{parent}")


def _detect_v1(mounts: list[Mount], groups: dict[str, str]) -> tuple[Cgroups | None, str]:
    parents: dict[str, Path] = {}
    for controller in V1_CONTROLLERS:
        mount = next((m for m in mounts if m.fstype == "cgroup" and controller in m.options), None)
        if mount is None or controller not in groups:
            continue
        own = _own_dir(mount, groups[controller])
        parent = own / PARENT_NAME
        try:
            parent.mkdir(exist_ok=True)
        except OSError as exc:
            if controller == "memory":
                return None, f"cannot create {parent}: {exc}"
            continue
        parents[controller] = parent
    if "memory" not in parents:
        return None, "no cgroup v1 memory controller mounted"
    swap = (parents["memory"] / "memory.memsw.limit_in_bytes").exists()
    return _probe(Cgroups(1, parents, swap_accounted=swap), ", ".join(str(p) for p in parents.values()))


def _probe(cgroups: Cgroups, where: str) -> tuple[Cgroups | None, str]:
    """Create, limit and remove one group: the controllers really accept what jobs will need."""
    try:
        group = cgroups.create(f"probe-{os.getpid()}", GroupLimits(memory_mb=64, processes=8))
        group.remove()
    except OSError as exc:
        return None, f"cannot create a limited group under {where}: {exc}"
    return cgroups, f"{cgroups.name} under {where}"


# ---------------------------------------------------------------- small file helpers
def enter_script() -> str:
    """`sh -c` program: write $$ into every file before `--`, then exec what follows `--`."""
    return 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _key_values(path: Path) -> dict[str, int]:
    values = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            pass
    return values


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _rmdir(directory: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY while the last killed processes are reaped
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.05)


def _swap_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("SwapTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _unescape(text: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text
