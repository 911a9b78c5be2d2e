"""`grader doctor`: which sandbox layers work here, which one `grade` would pick, and the limits a job
would run under (cgroups or rlimits; the spec's own numbers apply when grading)."""

from __future__ import annotations

from dataclasses import dataclass, field

from grader.errors import ExecutionSetupError
from grader.sandbox import LayerReport, SandboxLimits, SandboxPolicy, choose_launcher, probe_layers


@dataclass
class DoctorReport:
    layers: list[LayerReport]
    chosen: str | None
    problem: str = ""
    limits: dict[str, str] = field(default_factory=dict)  # what a job of `grade` runs under


def main() -> DoctorReport:
    layers = probe_layers()
    try:
        chosen = choose_launcher(policy=SandboxPolicy(), limits=SandboxLimits())
        return DoctorReport(layers, chosen.name, limits=dict(getattr(chosen, "limits_in_force", {})))
    except ExecutionSetupError as exc:
        return DoctorReport(layers, None, str(exc))
