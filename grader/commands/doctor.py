"""`grader doctor`: which sandbox layers work here, and which one `grade` would pick."""

from __future__ import annotations

from dataclasses import dataclass

from grader.errors import ExecutionSetupError
from grader.isolation.sandbox import LayerReport, SandboxLimits, SandboxPolicy, choose_launcher, probe_layers


@dataclass
class DoctorReport:
    layers: list[LayerReport]
    chosen: str | None
    problem: str = ""


def main() -> DoctorReport:
    layers = probe_layers()
    try:
        chosen = choose_launcher(policy=SandboxPolicy(), limits=SandboxLimits()).name
        return DoctorReport(layers, chosen)
    except ExecutionSetupError as exc:
        return DoctorReport(layers, None, str(exc))
