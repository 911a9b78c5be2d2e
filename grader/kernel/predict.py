"""Run a saved student model on images and write its class probabilities. Nothing else.

Started by the grader as a separate process (through the same Launcher seam as kernels):
the model file is untrusted, so this process never sees labels; the grader computes
accuracy from the predictions. Only the native `.keras` format is accepted, with
safe_mode=True (no arbitrary lambdas / pickles).

    python -m grader.kernel.predict MODEL.keras IMAGES.npy SCALE OUT.npy [FACTS.json]

With FACTS.json it also writes what the saved file says about the model, read here (in the
sandbox) rather than in the grader: the parameter count of the network that was loaded, the
optimizer's step counter stored beside the weights (`optimizer/vars/0` in model.weights.h5, the
`iterations` variable of every Keras 3 optimizer), and how many layers still have all-zero biases
(Keras initialises biases to zero; one training step moves them).
"""

from __future__ import annotations

import io
import json
import sys
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


def main(argv: list[str]) -> int:
    model_path, images_path, scale, out_path, *rest = argv
    if not model_path.endswith(".keras"):
        print("only .keras models are evaluated", file=sys.stderr)
        return 2
    import keras

    model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    if rest:
        with open(rest[0], "w", encoding="utf-8") as handle:
            json.dump(model_facts(model, model_path), handle)
    images = np.load(images_path, allow_pickle=False).astype(np.float32) * float(scale)
    x = fit_to_input(images, tuple(model.inputs[0].shape))
    # Small batches: a huge model (activations of 256 images at once) must not hit the memory limit before the time limit
    probabilities = np.asarray(model.predict(x, batch_size=64, verbose=0), dtype=np.float32)
    np.save(out_path, probabilities, allow_pickle=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
