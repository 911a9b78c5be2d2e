"""The launcher for an assignment: the strongest sandbox available, with the spec's and the
budget's limits (grade, calibrate and check all start kernels through it).

Kept apart from grader.engine.session so the students' self-check, which never sandboxes and may
run on Windows, does not import the sandbox (fcntl, bubblewrap).
"""

from __future__ import annotations

from pathlib import Path

from grader.assignment.paths import PROJECT_ROOT
from grader.assignment.spec import AssignmentSpec, Budget
from grader.isolation.launch import Launcher
from grader.isolation.machine import gpu_available
from grader.isolation.sandbox import SandboxLimits, SandboxPolicy, choose_launcher


def sandbox_for(spec: AssignmentSpec, budget: Budget, *, hidden: list[Path], no_sandbox: bool) -> Launcher:
    """The strongest isolation available, with limits from the spec and the budget."""
    folders = [p.resolve() for p in hidden if p.exists()]
    project = PROJECT_ROOT.resolve()
    folders += [project, project.parent] if project.parent != Path("/") else [project]
    limits = SandboxLimits(memory_mb=spec.limits.memory_mb, disk_mb=spec.limits.disk_mb,
                           processes=spec.limits.processes, cpu_s=budget.notebook_timeout_s * 4 + 120,
                           gpu=gpu_available())
    return choose_launcher(policy=SandboxPolicy(hidden=folders), limits=limits, no_sandbox=no_sandbox)
