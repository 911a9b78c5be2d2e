"""Run a saved student model on images and write its class probabilities. Nothing else.

Started by the grader as a separate process (through the same Launcher seam as kernels, with a job
of its own: its own uid, cgroup and folder, never the student's): the model file is untrusted, so
this process never sees labels; the grader computes accuracy from the predictions. Only the native
`.keras` format is accepted, with safe_mode=True (no arbitrary lambdas / pickles).

    python predict.py IMAGES.npy OUT_DIR        (stdin: one line {"model": PATH, "scale": S})

It is started while the student's notebook runs: it imports Keras (TensorFlow) and reads the test
images, then blocks on stdin for exactly one model. The grader writes that line only after the
student's kernel is stopped and the model copied where no student process can write. End of input
without a line: nothing to evaluate, exit 0. One process, one model: it exits after predicting.

It also writes (OUT_DIR/facts.json) what the saved file says about the model, read here (in the
sandbox) rather than in the grader: the parameter count of the network that was loaded, the
optimizer's step counter stored beside the weights (`optimizer/vars/0` in model.weights.h5, the
`iterations` variable of every Keras 3 optimizer), and how many layers still have all-zero biases
(Keras initialises biases to zero; one training step moves them).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import zipfile

import numpy as np

MAX_WEIGHTS_BYTES = 400_000_000


def fit_to_input(images: np.ndarray, input_shape: tuple) -> np.ndarray:
    """Reshape (N, 28, 28) images to whatever per-sample shape the model declares."""
    per_sample = tuple(d for d in input_shape[1:])
    if None in per_sample:
        return images[..., None] if len(per_sample) == 3 else images
    return images.reshape((len(images),) + per_sample)


def optimizer_iterations(model_path: str) -> int | None:
    """The optimizer's step counter saved in the .keras file, or None (not compiled, other layout)."""
    try:
        import h5py

        with zipfile.ZipFile(model_path) as archive:
            info = archive.getinfo("model.weights.h5")
            if info.file_size > MAX_WEIGHTS_BYTES:
                return None
            with h5py.File(io.BytesIO(archive.read(info)), "r") as weights:
                counter = weights.get("optimizer/vars/0")
                if counter is None or counter.shape != () or counter.dtype.kind not in "iu":
                    return None
                return int(counter[()])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, ImportError):
        return None


def model_facts(model, model_path: str) -> dict:
    layers = list(model._flatten_layers(include_self=False, recursive=True)) if hasattr(
        model, "_flatten_layers") else list(model.layers)
    biases = [np.asarray(layer.bias) for layer in layers if getattr(layer, "bias", None) is not None]
    return {
        "params_count": int(model.count_params()),
        "layers": [type(layer).__name__ for layer in model.layers][:64],
        "bias_layers": len(biases),
        "zero_bias_layers": sum(1 for bias in biases if not np.any(bias)),
        "optimizer_iterations": optimizer_iterations(model_path),
    }


def wait_for_model(images_path: str) -> tuple[np.ndarray, dict | None, dict]:
    """Import Keras and read the images while the notebook runs; then block until the grader sends
    the model (None: end of input, nothing to evaluate). Returns the images, the request, and how
    long getting ready took (wall and CPU seconds)."""
    started = time.monotonic()
    import keras

    images = np.load(images_path, allow_pickle=False).astype(np.float32)
    keras.ops.convert_to_tensor(np.zeros(1, np.float32))  # starts the backend's runtime now, not later
    ready = {"ready_seconds": round(time.monotonic() - started, 2), "ready_cpu_seconds": round(time.process_time(), 2)}
    line = sys.stdin.readline()
    return images, (json.loads(line) if line.strip() else None), ready


def main(argv: list[str]) -> int:
    images_path, out_dir = argv
    images, request, ready = wait_for_model(images_path)
    if request is None:
        return 0
    model_path, scale = str(request["model"]), float(request["scale"])
    if not model_path.endswith(".keras"):
        print("only .keras models are evaluated", file=sys.stderr)
        return 2
    import keras

    cpu_before, wall_before = time.process_time(), time.monotonic()
    model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    facts = {**model_facts(model, model_path), "models_loaded": 1, **ready}
    write_facts(out_dir, facts)  # before predicting: kept when the prediction is stopped
    x = fit_to_input(images * np.float32(scale), tuple(model.inputs[0].shape))
    # Small batches: a huge model (activations of 256 images at once) must not hit the memory limit before the time limit
    probabilities = np.asarray(model.predict(x, batch_size=64, verbose=0), dtype=np.float32)
    np.save(os.path.join(out_dir, "out.npy"), probabilities, allow_pickle=False)
    write_facts(out_dir, {**facts, "evaluate_seconds": round(time.monotonic() - wall_before, 2),
                          "evaluate_cpu_seconds": round(time.process_time() - cpu_before, 2)})
    return 0


def write_facts(out_dir: str, facts: dict) -> None:
    with open(os.path.join(out_dir, "facts.json"), "w", encoding="utf-8") as handle:
        json.dump(facts, handle)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # everything is written and closed; TensorFlow's teardown at exit took seconds under load
