#!/usr/bin/env bash
# Check a full-budget grading run on a GPU machine, in one go:
#   bash benchmarks/gpu_full_budget.sh [--cluster tcp://SCHEDULER:8786] [SUBMISSIONS] [OUT]
#
# 1. a venv (.venv-gpu) with the pinned packages, tensorflow-cpu swapped for tensorflow[and-cuda]
#    of the same version (CUDA and cuDNN come as pip wheels; only the NVIDIA driver is needed);
# 2. checks that TensorFlow sees the GPU, that `grader` picks the full budget by itself, and that
#    a kernel inside the sandbox sees it too (the sandbox binds /dev/nvidia* and lifts RLIMIT_AS,
#    which CUDA needs, when a GPU is present);
# 3. fetches Fashion-MNIST, grades SUBMISSIONS (default: the sample class) with no --budget,
#    and prints the wall time, the time per notebook from the gradebook, and the statuses.
# With --cluster ADDRESS (a running `dask scheduler`), this GPU machine becomes a Dask worker of that
# scheduler (started here from .venv-gpu) and the class is graded through it with --budget full: the
# cluster path of README "Grading on several machines". The coordinator is this machine too, so the
# reference's full-budget run also uses the GPU; other GPU machines can join with
# `.venv-gpu/bin/dask worker ADDRESS --nthreads 1` (same commit, same data: they are checked).
# Not run in this project's CI: the development machine has no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=
if [ "${1:-}" = "--cluster" ]; then CLUSTER=$2; shift 2; fi
SUBMISSIONS=${1:-submissions}
OUT=${2:-build/gpu-full}
VENV=.venv-gpu
PY=$VENV/bin/python

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  grep -v -i '^tensorflow' requirements.lock > "$VENV/requirements-gpu.txt"
  "$PY" -m pip install --quiet -r "$VENV/requirements-gpu.txt"
  TF_VERSION=$(grep -i '^tensorflow_cpu==\|^tensorflow-cpu==' requirements.lock | cut -d= -f3)
  "$PY" -m pip install --quiet "tensorflow[and-cuda]==${TF_VERSION}"
  "$PY" -m pip install --quiet --no-deps -e .
fi

echo "== GPU"
nvidia-smi -L
"$PY" - <<'EOF'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "sees", gpus)
assert gpus, "TensorFlow does not see the GPU"
from grader.isolation.machine import gpu_available
from grader.batch.plan import default_budget
from grader.assignment.paths import PROJECT_ROOT
from grader.assignment.spec import load_spec
assert gpu_available()
print("default budget:", default_budget(load_spec(PROJECT_ROOT, "kadai8")))
EOF
"$VENV/bin/grader" doctor

echo "== data"
"$VENV/bin/grader" data

echo "== grading $SUBMISSIONS → $OUT (no --budget: full on a GPU)"
rm -rf "$OUT"
START=$(date +%s)
if [ -n "$CLUSTER" ]; then
  "$VENV/bin/dask" worker "$CLUSTER" --nthreads 1 --no-dashboard --name "gpu-$(hostname -s)" &
  WORKER=$!
  trap 'kill $WORKER 2>/dev/null || true' EXIT
  "$VENV/bin/grader" grade --assignment kadai8 --submissions "$SUBMISSIONS" --out "$OUT" \
    --budget full --cluster "$CLUSTER"
else
  "$VENV/bin/grader" grade --assignment kadai8 --submissions "$SUBMISSIONS" --out "$OUT"
fi
END=$(date +%s)
echo "wall time: $((END - START)) s (including the reference run)"

"$PY" - "$OUT" <<'EOF'
import json, sqlite3, sys
from pathlib import Path
out = Path(sys.argv[1])
db = sqlite3.connect(out / "gradebook.sqlite")
run = db.execute("SELECT budget, jobs, threads, executed, seconds FROM runs ORDER BY id DESC LIMIT 1").fetchone()
print(f"budget {run[0]}, {run[1]} jobs × {run[2]} threads, {run[3]} executed in {run[4]:.0f} s")
assert run[0] == "full", "the GPU run should default to the full budget"
for student, status, score, seconds in db.execute("SELECT student, status, score, seconds FROM results ORDER BY student"):
    result = json.loads((out / student / "result.json").read_text(encoding="utf-8"))
    fits = result.get("budget", {}).get("fits") or [{}]
    epochs = fits[-1].get("effective_epochs")
    accuracy = (result.get("evaluation") or {}).get("accuracy")
    print(f"{student:<12} {status:<12} {score:>3}  {seconds:7.1f} s  epochs {epochs}  accuracy {accuracy}")
EOF
