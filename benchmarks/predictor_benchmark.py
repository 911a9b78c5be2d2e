"""The trusted evaluation's own cost: a predictor started cold (at the hand-over, as before) vs warm
(started `--head-start` seconds before, as while a notebook runs), in the real sandbox, on the real
test set (public + private halves, 10,000 images with `grader data`'s Fashion-MNIST).

    python benchmarks/predictor_benchmark.py MODEL.keras [--keras-home .data/keras] [--runs 3]
        [--head-start 15] [--threads 1] [--no-sandbox]

Prints, per run, the seconds from hand-over to predictions (what a student's slot waits for after
execution), the predictor's own time to get ready, its resident memory while it waits (its memory
cgroup's usage when there is one) and the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from grader.assignment.data import dataset_dir, load_dataset
from grader.assignment.paths import PROJECT_ROOT
from grader.assignment.spec import load_spec
from grader.engine.launcher import sandbox_for
from grader.evidence.evaluate import test_images
from grader.evidence.predictor import Predictor, close_predictor, hand_over, start_predictor
from grader.isolation.workroot import work_root


def resident_mib(predictor: Predictor) -> dict[str, float | None]:
    """The waiting predictor's memory: its memory cgroup's usage (what its limit counts: pages it was the
    first to touch) and the RSS of its processes (shared libraries included)."""
    group = getattr(predictor.launcher, "_groups", {}).get(predictor.job.work_dir)
    if group is None:
        return {"cgroup_mib": None, "rss_mib": None}
    usage = group.dirs["memory"] / "memory.usage_in_bytes" if "memory" in group.dirs else None
    rss = 0
    for pid in group.pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return {"cgroup_mib": round(int(usage.read_text()) / 2**20, 1) if usage and usage.is_file() else None,
            "rss_mib": round(rss / 1024, 1)}


async def one_run(model: Path, *, launcher, work: Path, data, data_home: Path, threads: int, memory_mb: int,
                  head_start: float) -> dict[str, object]:
    images = test_images(data.x_test, data.x_private)
    started = time.monotonic()
    predictor = await start_predictor(images, launcher=launcher, work_root=work, data_dir=data_home,
                                      threads=threads, memory_mb=memory_mb)
    try:
        await asyncio.sleep(head_start)
        idle = resident_mib(predictor)
        handed = time.monotonic()
        facts: dict = {}
        await hand_over(predictor, model, 1 / 255, timeout_s=300, facts=facts)
        done = time.monotonic()
    finally:
        close_predictor(predictor)
    return {"hand_over_to_predictions_s": round(done - handed, 2), "start_to_predictions_s": round(done - started, 2),
            **predictor.info, **idle}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--keras-home", type=Path, default=Path(".data/keras"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--head-start", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-sandbox", action="store_true")
    args = parser.parse_args()
    spec = load_spec(PROJECT_ROOT, "kadai8")
    launcher = sandbox_for(spec, spec.budget("standard"), hidden=[], no_sandbox=args.no_sandbox)
    data = load_dataset(args.keras_home)
    print(f"sandbox: {launcher.name}; images: {len(data.x_test)} public + "
          f"{0 if data.x_private is None else len(data.x_private)} private; threads {args.threads}")
    with work_root() as work:
        for mode, head_start in (("cold", 0.0), ("warm", args.head_start)):
            for run in range(args.runs):
                figures = await one_run(args.model.resolve(), launcher=launcher, work=work, data=data,
                                        data_home=dataset_dir(args.keras_home).resolve(), threads=args.threads,
                                        memory_mb=spec.limits.memory_mb, head_start=head_start)
                print(f"{mode} #{run + 1}: {figures}  load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
