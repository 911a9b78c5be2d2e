"""Build evidence folders from Python calls, written exactly as the kernel harness writes them.

Not a test module: the unit tests import it to produce `events.jsonl`, `.npz` arrays and
model files in a tmp folder without running a kernel or importing TensorFlow.

    ev = (EvidenceBuilder(tmp).datagen(1, rotation_range=90)
          .flow(1, datagen=1, batch_size=16, n=1200, x_max=1.0, one_hot=True)
          .batch(1).build())

`pipeline(folder, **changes)` records the slides' whole notebook on a small synthetic data
set (`reference_like`); its keyword arguments introduce the faults students make (see
`VARIANTS`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from grader.evidence import Evidence
from grader.kernel.grader_kernel import EVENTS_FILE, image_hashes, source_hashes, summarize_array

NUM_CLASSES = 10
SLIDES_PARAMS = 144_266
SLIDES_LAYERS = [
    {"class": "Conv2D", "params": 320, "filters": 32, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
    {"class": "Conv2D", "params": 18496, "filters": 64, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
    {"class": "MaxPooling2D", "params": 0, "padding": "valid", "pool_size": [2, 2]},
    {"class": "Flatten", "params": 0},
    {"class": "Dropout", "params": 0, "rate": 0.5},
    {"class": "Dense", "params": 125450, "units": 10, "activation": "softmax"},
]
QUICK_BUDGET = {"name": "quick", "max_epochs": 1, "max_steps_per_epoch": 30, "max_validation_samples": 500}


# ---------------------------------------------------------------- synthetic data
@dataclass(frozen=True)
class Data:
    """Raw images as load_data() returns them: uint8 (N, 28, 28), integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def test_hashes(self) -> np.ndarray:
        """What the grader computes from its own copy of the test set."""
        return image_hashes(self.x_test)


@cache
def synthetic_data(n_train: int = 1200, n_test: int = 200, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 255  # every image reaches 255, so 0–1 vs 0–255 is unambiguous
    labels = (np.arange(n_train + n_test) % NUM_CLASSES).astype(np.uint8)
    rng.shuffle(labels)
    for a in (images, labels):
        a.setflags(write=False)
    return Data(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


def preprocess(x: np.ndarray, *, scaled: bool = True) -> np.ndarray:
    x = x.reshape(-1, 28, 28, 1)
    return x.astype(np.float64) / 255.0 if scaled else x.copy()


def one_hot(y: np.ndarray, classes: int = NUM_CLASSES) -> np.ndarray:
    return np.eye(classes, dtype=np.float64)[y.astype(int)]


def rotate(x: np.ndarray) -> np.ndarray:
    """Stand-in for a random rotation: 90° turns of each image (float32, as flow() returns)."""
    return np.rot90(np.asarray(x, dtype=np.float32), k=1, axes=(1, 2)).copy()


# ---------------------------------------------------------------- the builder
class EvidenceBuilder:
    """Appends events in the harness's format (seq, t, cell, kind, ...) and writes arrays."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.events: list[dict[str, Any]] = []
        self.cell = 1
        self._flows: dict[int, dict[str, Any]] = {}
        self._hashed: dict[int, str] = {}
        self._keep: list[np.ndarray] = []  # keeps hashed arrays alive so id() stays unique

    # -- low level ----------------------------------------------------------------------
    def event(self, kind: str, *, cell: int | None = None, **data: Any) -> EvidenceBuilder:
        seq = len(self.events) + 1
        line = {"seq": seq, "t": round(0.25 * seq, 3), "cell": self.cell if cell is None else cell, "kind": kind}
        line.update(data)
        self.events.append(line)
        return self

    def next_cell(self, cell: int | None = None) -> EvidenceBuilder:
        self.cell = self.cell + 1 if cell is None else cell
        return self

    def save_arrays(self, name: str, **arrays: Any) -> str:
        np.savez_compressed(self.dir / f"{name}.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        return f"{name}.npz"

    def hashes(self, x: np.ndarray | None, function: Any = image_hashes) -> str | None:
        """Like Harness.hashes_of: one hashes_<k>.npz per distinct array and hash function."""
        if x is None:
            return None
        key = (id(x), function.__name__)
        if key not in self._hashed:
            self._keep.append(x)
            self._hashed[key] = self.save_arrays(f"hashes_{len(self._hashed) + 1}", hashes=function(x))
        return self._hashed[key]

    def write(self) -> Path:
        with open(self.dir / EVENTS_FILE, "w", encoding="utf-8") as out:
            for line in self.events:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return self.dir

    def build(self) -> Evidence:
        self.write()
        return Evidence.load(self.dir)

    # -- one method per event kind ----------------------------------------------------
    def harness_ready(self, budget: dict[str, Any] | None = None, seed: int = 8) -> EvidenceBuilder:
        return self.event("harness_ready", budget=budget or QUICK_BUDGET, seed=seed,
                          versions={"python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.15.1", "numpy": np.__version__})

    def load_data(self, data: Data) -> EvidenceBuilder:
        return self.event("load_data", dataset="fashion_mnist", x_train=summarize_array(data.x_train),
                          y_train=summarize_array(data.y_train), x_test=summarize_array(data.x_test),
                          y_test=summarize_array(data.y_test))

    def compat(self, shim: str = "keras.preprocessing.image.ImageDataGenerator") -> EvidenceBuilder:
        return self.event("compat", shim=shim)

    def datagen(self, number: int, **params: Any) -> EvidenceBuilder:
        return self.event("datagen", datagen=number, params=params)

    def flow(self, number: int, *, datagen: int, batch_size: int = 32, shuffle: bool = True,
             x: np.ndarray | None = None, y: np.ndarray | None = None, n: int = 1200, x_max: float = 1.0,
             one_hot: bool = True, seed: int = 0) -> EvidenceBuilder:
        """flow(x, y, batch_size): pass real arrays, or let n/x_max/one_hot make them."""
        if x is None:
            pixels = np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
            pixels[:, 0, 0, 0] = 255
            x = pixels if x_max == 255 else pixels / 255.0 * x_max
            labels = (np.arange(n) % NUM_CLASSES).astype(np.uint8)
            y = globals()["one_hot"](labels) if one_hot else labels
        self._flows[number] = {"x": x, "y": y, "batch_size": batch_size, "shuffle": shuffle}
        return self.event("flow", flow=number, datagen=datagen, batch_size=batch_size, shuffle=shuffle,
                          length=math.ceil(len(x) / batch_size), x=summarize_array(x), y=summarize_array(y),
                          x_source=self.hashes(x, source_hashes))

    def batch(self, flow: int, *, x: np.ndarray | None = None, x_orig: np.ndarray | None = None,
              y: np.ndarray | None = None, y_orig: np.ndarray | None = None, augment: bool = True,
              with_labels: bool = True) -> EvidenceBuilder:
        """The first batch of a flow; by default its first batch_size samples, rotated."""
        source = self._flows.get(flow, {})
        size = source.get("batch_size", 16)
        index = np.arange(size)
        if x_orig is None:
            x_orig = source["x"][index]
        if x is None:
            x = rotate(x_orig) if augment else np.asarray(x_orig, dtype=np.float32)
        if with_labels and y_orig is None and source.get("y") is not None:
            y_orig = source["y"][index]
        if with_labels and y is None:
            y = y_orig
        arrays: dict[str, Any] = {"x": x, "x_orig": x_orig, "index": index[: len(x)]}
        if with_labels and y is not None and y_orig is not None:
            arrays.update(y=y, y_orig=y_orig)
        name = self.save_arrays(f"batch_flow{flow}", **arrays)
        return self.event("batch", flow=flow, file=name, x=summarize_array(x),
                          y=summarize_array(y) if with_labels else None,
                          changed_fraction=float(np.mean(np.abs(np.asarray(x) - x_orig) > 1e-6)))

    def batch_error(self, flow: int, error: str = "FileNotFoundError: [Errno 2] No such file or directory") -> EvidenceBuilder:
        return self.event("batch_error", flow=flow, error=error)

    def bridge(self, api: str, **details: Any) -> EvidenceBuilder:
        """A Keras 2 API the kernel's bridge ran as Keras 3 (grader/kernel/keras2_bridge.py)."""
        return self.event("bridge", api=api, **details)

    def split(self, inputs: list[np.ndarray], outputs: list[np.ndarray], **options: Any) -> EvidenceBuilder:
        return self.event("split", inputs=[summarize_array(a) for a in inputs],
                          outputs=[summarize_array(a) for a in outputs], options=options or {"test_size": 0.2})

    def fit(self, number: int, *, model: int = 1, flow: int | None = None, x: np.ndarray | None = None,
            validation_x: np.ndarray | None = None, steps_per_epoch: Any = None, epochs: int = 50,
            batch_size: int | None = None, params_count: int = SLIDES_PARAMS, layers: list | None = None,
            finished: bool = True, error: str | None = None, saved: bool = True,
            budget: dict[str, Any] | None = None, validation_flow: int | None = None) -> EvidenceBuilder:
        """fit_start (+ fit_end and model_saved, or fit_error), like Harness.trace_model."""
        budget = budget or QUICK_BUDGET
        if flow is not None:
            train_x = np.asarray(self._flows[flow]["x"], dtype=np.float32) if x is None else x
            self._flows[flow]["x_fit"] = train_x  # NumpyArrayIterator keeps a float32 copy
            source = {"kind": "flow", "flow": flow}
        else:
            train_x = x
            source = {"kind": type(x).__name__ if x is not None else "NoneType", "flow": None}
        if steps_per_epoch is not None:
            natural = math.ceil(steps_per_epoch)
        else:
            per_batch = self._flows[flow]["batch_size"] if flow is not None else batch_size or 32
            natural = math.ceil(len(train_x) / per_batch)
        effective_steps = min(natural, budget["max_steps_per_epoch"])
        if validation_flow is not None:  # validation_data=datagen.flow(x_valid, y_valid)
            validation_x = np.asarray(self._flows[validation_flow]["x"], dtype=np.float32)
        self.event(
            "fit_start", fit=number, model=model, params_count=params_count,
            layers=SLIDES_LAYERS if layers is None else layers, loss="'categorical_crossentropy'", input=source,
            train_x=summarize_array(train_x) if isinstance(train_x, np.ndarray) else None,
            train_hashes=self.hashes(train_x) if isinstance(train_x, np.ndarray) else None,
            requested={"epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size,
                       "validation_split": 0.0, "validation_data": None if validation_x is None else
                       "NumpyArrayIterator" if validation_flow is not None else "tuple"},
            validation_x=summarize_array(validation_x) if validation_x is not None else None,
            validation_flow=validation_flow,
            validation_hashes=self.hashes(validation_x),
            effective={"epochs": min(epochs, budget["max_epochs"]), "steps_per_epoch": effective_steps,
                       "validation_samples": None if validation_x is None
                       else min(len(validation_x), budget["max_validation_samples"])},
            compat=["steps_per_epoch float → int"] if isinstance(steps_per_epoch, float) else [],
        )
        if flow is not None and not any(e["kind"] == "batch" and e["flow"] == flow for e in self.events):
            self.batch(flow)  # the first training batch is drawn inside fit, after fit_start
        if error is not None:
            return self.event("fit_error", fit=number, error=error)
        if not finished:
            return self  # the kernel died or timed out mid-fit
        self.event("fit_end", fit=number, history={"accuracy": [0.27], "loss": [2.02],
                                                   "val_accuracy": [0.36], "val_loss": [1.62]})
        if saved:
            (self.dir / f"model_fit{number}.keras").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
            self.event("model_saved", fit=number, model=model, file=f"model_fit{number}.keras")
        return self

    def evaluate(self, x: Any, *, model: int = 1, claimed: Any = (1.65, 0.35)) -> EvidenceBuilder:
        array = isinstance(x, np.ndarray)
        return self.event("evaluate", model=model,
                          x=summarize_array(x) if array else {"type": type(x).__name__},
                          x_hashes=self.hashes(x) if array else None, claimed=list(claimed))

    def harness_warning(self, where: str, error: str) -> EvidenceBuilder:
        return self.event("harness_warning", where=where, error=error)


# ---------------------------------------------------------------- the slides' notebook
def pipeline(
    directory: Path,
    data: Data | None = None,
    *,
    demo_batch_size: int = 16,
    train_batch_size: int = 64,
    one_hot_labels: bool = True,
    scaled: bool = True,
    augment: bool = True,
    fit: str | None = "flow",  # "flow" | "arrays" | "error" | None (the notebook stopped before fit)
    steps_per_epoch: Any = "natural",  # "natural": len(x_train2) / batch_size, a float as in the slides
    validation: bool = True,
    leak: int = 0,  # test images the student mixed into the training data
    evaluate_on: str | None = "test",  # "test" | "train" | None
    params_count: int = SLIDES_PARAMS,
    layers: list | None = None,
) -> EvidenceBuilder:
    """The slides' pipeline, recorded as the harness would, with optional faults. Not yet written."""
    data = data or synthetic_data()
    b = EvidenceBuilder(directory).harness_ready()
    b.next_cell().load_data(data)
    x = preprocess(data.x_train, scaled=scaled)
    y = one_hot(data.y_train) if one_hot_labels else data.y_train.copy()
    x_test = preprocess(data.x_test, scaled=scaled)

    demos = [{"rotation_range": 90}, {"vertical_flip": True}, {"rotation_range": 90, "vertical_flip": True}]
    for number, params in enumerate(demos, start=1):
        b.next_cell().compat().datagen(number, **(params if augment else {}))
        b.flow(number, datagen=number, x=x, y=y, batch_size=demo_batch_size, shuffle=False)
        b.next_cell().batch(number, augment=augment)

    n_valid = len(x) // 5
    order = np.random.default_rng(1).permutation(len(x))
    train, valid = order[n_valid:], order[:n_valid]
    x_train2, x_valid, y_train2, y_valid = x[train], x[valid], y[train], y[valid]
    if leak:
        x_train2[:leak] = x_test[:leak]
    b.next_cell().split([x, y], [x_train2, x_valid, y_train2, y_valid], test_size=0.2)

    b.next_cell()
    if fit in ("flow", "error"):
        b.flow(4, datagen=3, x=x_train2, y=y_train2, batch_size=train_batch_size, shuffle=True)
        steps = len(x_train2) / train_batch_size if steps_per_epoch == "natural" else steps_per_epoch
        b.fit(1, flow=4, steps_per_epoch=steps, validation_x=x_valid if validation else None,
              params_count=params_count, layers=layers,
              error="ValueError: Shapes (None, 1) and (None, 10) are incompatible" if fit == "error" else None)
    elif fit == "arrays":
        steps = None if steps_per_epoch == "natural" else steps_per_epoch
        b.fit(1, x=x_train2, batch_size=train_batch_size, steps_per_epoch=steps,
              validation_x=x_valid if validation else None, params_count=params_count, layers=layers)
    if fit in ("flow", "arrays") and evaluate_on:
        b.next_cell().evaluate(x_test if evaluate_on == "test" else x_train2)
    return b


def reference_like(directory: Path, data: Data | None = None) -> Evidence:
    """Evidence of a correct notebook: what the reference run records."""
    return pipeline(directory, data).build()


# Faults students make, as pipeline() keyword arguments.
VARIANTS: dict[str, dict[str, Any]] = {
    "batch32": {"demo_batch_size": 32},
    "integer_labels": {"one_hot_labels": False},
    "unscaled": {"scaled": False},
    "no_augmentation": {"augment": False},
    "no_fit": {"fit": None},
    "fit_error": {"fit": "error"},
    "fit_arrays": {"fit": "arrays"},
    "no_steps": {"steps_per_epoch": None},
    "no_validation": {"validation": False},
    "test_leak": {"leak": 5},
    "evaluate_train": {"evaluate_on": "train"},
    "no_evaluate": {"evaluate_on": None},
    "other_model": {"params_count": 1_199_882, "layers": [
        {"class": "Flatten", "params": 0}, {"class": "Dense", "params": 100480, "units": 128},
        {"class": "Dense", "params": 1290, "units": 10}]},
}


def variant(directory: Path, name: str, data: Data | None = None, **more: Any) -> Evidence:
    return pipeline(directory, data, **{**VARIANTS[name], **more}).build()
