"""Execute one notebook in a fresh kernel with nbclient, bounded in time.

The harness is installed by the kernel itself at start-up (IPKernelApp.exec_lines), so it
never appears as a cell. A cell timeout, a notebook deadline and a dying kernel all end the
run early but keep the partly executed notebook and the evidence written so far.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import output_from_msg

from grader.launch import KernelJob, Launcher

HARNESS_BOOT = "import grader_kernel as _grader_kernel; _grader_kernel.install(); del _grader_kernel"


@dataclass(frozen=True)
class CellError:
    cell_index: int
    execution_count: int | None
    ename: str
    evalue: str


@dataclass
class ExecutionResult:
    seconds: float
    timed_out: bool = False
    timeout_scope: str | None = None  # "cell" or "notebook"
    truncated_cells: list[int] = field(default_factory=list)
    kernel_died: bool = False
    memory_kills: int = 0  # processes the job's memory cgroup killed (set by the pipeline)
    memory_limit_mb: int | None = None
    memory_peak_mb: int | None = None  # the job's cgroup high-water mark (kernel, its children, its tmpfs)
    start_failure: str | None = None
    errors: list[CellError] = field(default_factory=list)
    notebook: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "timed_out": self.timed_out,
            "timeout_scope": self.timeout_scope,
            "kernel_died": self.kernel_died,
            "memory_exceeded": self.memory_kills > 0,
            "memory_kills": self.memory_kills,
            "memory_peak_mb": self.memory_peak_mb,
            "start_failure": self.start_failure,
            "truncated_cells": self.truncated_cells,
            "errors": [e.__dict__ for e in self.errors],
        }


class SeamKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose command line and environment come from a Launcher.

    Async on purpose: nbclient's per-cell timeout was seen not to fire with a sync manager.
    """

    def __init__(self, *, launcher: Launcher, job: KernelJob, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launcher = launcher
        self.job = job
        self.connection_file = str(job.work_dir / "kernel.json")
        if launcher.needs_ipc:  # no network inside: ZMQ over unix sockets in the shared job folder
            self.transport = "ipc"
            self.ip = str(job.ipc_dir / "k")
        # A signal would hit the sandbox wrapper, not the kernel; ask the kernel itself.
        self.kernel_spec.interrupt_mode = "message"

    async def _async_pre_start_kernel(self, **kw: Any):  # type: ignore[override]
        kw["env"] = self.launcher.environment(self.job)
        kw["cwd"] = str(self.job.cwd)
        # The kernel's own stdout/stderr (TensorFlow logs, crashes) go to a file, not our terminal.
        self._kernel_log = open(self.job.work_dir / "kernel.log", "ab")
        kw["stdout"] = kw["stderr"] = self._kernel_log
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        self.launcher.share_file(self.job, Path(self.connection_file))
        return self.launcher.command(cmd, self.job), kw


class CappedNotebookClient(NotebookClient):
    """Keeps at most `max_cell_bytes` of output per cell and `max_total_bytes` per notebook, on
    every path by which a kernel message can put bytes into the executed notebook:

      * stream, display_data, execute_result and error messages (`output`);
      * `update_display_data` and a repeated `display_id`, which nbclient applies to the earlier
        outputs *without* passing through `output` (`_update_display_id`): an update that does
        not fit replaces those outputs with the truncation note;
      * comm / widget messages: not stored at all (`handle_comm_msg`), there is no frontend to
        run a widget and their state would be one more unbounded store.

    Sizes are the UTF-8 bytes of the JSON that nbformat will write, plus a fixed overhead per
    output, so many tiny outputs cost what they weigh. What is dropped is replaced by one note
    per cell, and `truncated_cells` records where.
    """

    def __init__(self, nb, *, max_cell_bytes: int, max_total_bytes: int, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.max_cell_bytes, self.max_total_bytes = max_cell_bytes, max_total_bytes
        self.cell_bytes: dict[int, int] = {}
        self.total_bytes = 0
        self.truncated_cells: set[int] = set()
        self.store_widget_state = False
        self.comm_open_handlers = {}

    # -- accounting -----------------------------------------------------------------------
    def _fits(self, cell_index: int, size: int) -> bool:
        return (self.cell_bytes.get(cell_index, 0) + size <= self.max_cell_bytes
                and self.total_bytes + size <= self.max_total_bytes)

    def _charge(self, cell_index: int, size: int) -> None:
        self.cell_bytes[cell_index] = self.cell_bytes.get(cell_index, 0) + size
        self.total_bytes += size

    def _truncated(self, outs, cell_index: int) -> None:
        if cell_index not in self.truncated_cells:
            self.truncated_cells.add(cell_index)
            note = nbformat.v4.new_output(
                "stream", name="stderr", text=f"{TRUNCATION_NOTE} (> {self.max_cell_bytes // 1000} kB)\n")
            outs.append(note)
            self._charge(cell_index, output_size(note))

    def _credit_cell(self, cell_index: int) -> None:
        """A cleared cell gives its bytes back (progress bars redraw with clear_output)."""
        freed = self.cell_bytes.pop(cell_index, 0)
        self.total_bytes -= freed

    # -- the message paths ----------------------------------------------------------------
    def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
        if self.clear_before_next_output:  # super() clears this cell's outputs first
            self._credit_cell(cell_index)
        content = msg["content"]
        if msg["msg_type"] == "error":
            # Errors decide the student's status, so the first one of a cell over the limit is
            # still kept, shortened; a novel-length traceback never is.
            content["ename"] = str(content.get("ename", ""))[:200]
            content["evalue"] = str(content.get("evalue", ""))[:MAX_ERROR_VALUE]
            content["traceback"] = [str(line)[:MAX_TRACEBACK_LINE]
                                    for line in (content.get("traceback") or [])[-TRACEBACK_LINES:]]
            size = content_size(content)
            if not self._fits(cell_index, size):
                if any(o.get("output_type") == "error" for o in outs):
                    self._truncated(outs, cell_index)
                    return None
                content["traceback"], content["evalue"] = [], content["evalue"][:200]
                size = content_size(content)
            self._charge(cell_index, size)
            return super().output(outs, msg, display_id, cell_index)
        size = content_size(content)
        if not self._fits(cell_index, size):
            self._truncated(outs, cell_index)
            return None
        self._charge(cell_index, size)
        return super().output(outs, msg, display_id, cell_index)

    def clear_output(self, outs, msg, cell_index):  # type: ignore[override]
        if not msg["content"].get("wait"):
            self._credit_cell(cell_index)
        return super().clear_output(outs, msg, cell_index)

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        """nbclient's own update, with every replaced output charged for its change in size."""
        locations = self._display_id_map.get(display_id)
        if not locations:
            return
        if msg["header"]["msg_type"] == "update_display_data":
            msg["header"]["msg_type"] = "display_data"
        try:
            out = output_from_msg(msg)
        except ValueError:
            return
        new = output_size(out)
        for cell_index, indices in locations.items():
            outputs = self.nb["cells"][cell_index]["outputs"]
            for index in indices:
                if index >= len(outputs):
                    continue
                old = output_size(outputs[index])
                if self._fits(cell_index, new - old):
                    outputs[index]["data"], outputs[index]["metadata"] = out["data"], out["metadata"]
                    self._charge(cell_index, new - old)
                    continue
                outputs[index]["data"], outputs[index]["metadata"] = {"text/plain": TRUNCATION_NOTE}, {}
                self._charge(cell_index, output_size(outputs[index]) - old)
                self.truncated_cells.add(cell_index)

    def handle_comm_msg(self, outs, msg, cell_index):  # type: ignore[override]
        return None  # no widget frontend here: comm traffic is neither stored nor answered


TRACEBACK_LINES = 40
MAX_TRACEBACK_LINE = 2_000
MAX_ERROR_VALUE = 2_000
LINE_OVERHEAD = 8  # quotes, comma, newline and indentation of one line in a list of lines
OUTPUT_OVERHEAD = 100  # JSON keys and punctuation around each output in the .ipynb
TRUNCATION_NOTE = "[採点システム: 出力が大きすぎるため以降を省略しました / output truncated by the grader]"
SIZED_FIELDS = ("text", "data", "metadata", "ename", "evalue", "traceback")


def content_size(content: dict[str, Any]) -> int:
    """Bytes an output made from this message content takes in the written notebook."""
    return OUTPUT_OVERHEAD + sum(_json_bytes(content[key]) for key in SIZED_FIELDS if key in content)


def output_size(output: dict[str, Any]) -> int:
    return content_size(output)


def _json_bytes(value: Any) -> int:
    """As nbformat writes it: JSON escapes (a control character is 6 bytes), and every line of a
    multi-line string as its own indented list item (about 8 bytes more per line)."""
    dumped = json.dumps(value, ensure_ascii=False, default=str)
    return len(dumped.encode("utf-8", "surrogatepass")) + LINE_OVERHEAD * dumped.count("\\n")


def write_harness_config(job: KernelJob, *, budget_caps: dict[str, Any], seed: int, max_evidence_mb: int) -> None:
    """The harness's settings, and its signing key in a file the harness deletes on start."""
    config = {
        "evidence_dir": str(job.evidence_dir),
        "budget": budget_caps,
        "seed": seed,
        "max_evidence_bytes": max_evidence_mb * 1_000_000,
        "key_file": str(job.key_file),
    }
    job.key_file.write_text(job.key.hex(), encoding="ascii")
    job.harness_config.write_text(json.dumps(config), encoding="utf-8")


async def execute_notebook(
    nb: nbformat.NotebookNode,
    *,
    job: KernelJob,
    launcher: Launcher,
    cell_timeout_s: int,
    notebook_timeout_s: int,
    startup_timeout_s: int = 180,
    max_output_bytes: int = 10_000_000,
) -> ExecutionResult:
    """Run every cell (continuing after errors, as a student's 'Run all' would not stop grading)."""
    km = SeamKernelManager(launcher=launcher, job=job, kernel_name="python3")
    client = CappedNotebookClient(
        nb,
        max_cell_bytes=max(10_000, max_output_bytes // 10),
        max_total_bytes=max_output_bytes,
        km=km,
        timeout=cell_timeout_s,
        startup_timeout=startup_timeout_s,
        allow_errors=True,
        record_timing=True,
        extra_arguments=[f"--IPKernelApp.exec_lines={json.dumps([HARNESS_BOOT])}"],
        resources={"metadata": {"path": str(job.cwd)}},
    )
    started = time.monotonic()
    result = ExecutionResult(seconds=0.0, notebook=nb)
    try:
        await asyncio.wait_for(client.async_execute(), timeout=notebook_timeout_s)
    except CellTimeoutError:  # first: it is a TimeoutError too
        result.timed_out, result.timeout_scope = True, "cell"
    except asyncio.TimeoutError:
        result.timed_out, result.timeout_scope = True, "notebook"
    except DeadKernelError:
        result.kernel_died = True
    except RuntimeError as exc:  # "Kernel died before replying to kernel_info": not the student's doing
        result.start_failure = f"{exc} (see kernel.log)"
    finally:
        await _stop_kernel(km)
        atexit.unregister(client._cleanup_kernel)  # nbclient leaves it registered when a start fails
    result.seconds = time.monotonic() - started
    result.errors = collect_cell_errors(nb)
    result.truncated_cells = sorted(client.truncated_cells)
    return result


async def _stop_kernel(km: AsyncKernelManager) -> None:
    try:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - already dead is fine
        pass
    log = getattr(km, "_kernel_log", None)
    if log is not None:
        log.close()


def collect_cell_errors(nb: nbformat.NotebookNode) -> list[CellError]:
    errors = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(
                    CellError(
                        cell_index=index,
                        execution_count=cell.get("execution_count"),
                        ename=str(output.get("ename", ""))[:200],
                        evalue=str(output.get("evalue", ""))[:500],
                    )
                )
    return errors
