"""Run a saved student model on images and write its class probabilities. Nothing else.

Started by the grader as a separate process (through the same Launcher seam as kernels):
the model file is untrusted, so this process never sees labels; the grader computes
accuracy from the predictions. Only the native `.keras` format is accepted, with
safe_mode=True (no arbitrary lambdas / pickles).

    python -m grader.kernel.predict MODEL.keras IMAGES.npy SCALE OUT.npy
"""

from __future__ import annotations

import sys

import numpy as np


def fit_to_input(images: np.ndarray, input_shape: tuple) -> np.ndarray:
    """Reshape (N, 28, 28) images to whatever per-sample shape the model declares."""
    per_sample = tuple(d for d in input_shape[1:])
    if None in per_sample:
        return images[..., None] if len(per_sample) == 3 else images
    return images.reshape((len(images),) + per_sample)


def main(argv: list[str]) -> int:
    model_path, images_path, scale, out_path = argv
    if not model_path.endswith(".keras"):
        print("only .keras models are evaluated", file=sys.stderr)
        return 2
    import keras

    model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    images = np.load(images_path, allow_pickle=False).astype(np.float32) * float(scale)
    x = fit_to_input(images, tuple(model.inputs[0].shape))
    probabilities = np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float32)
    np.save(out_path, probabilities, allow_pickle=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
