"""Kernel-side harness: runs INSIDE the student's kernel before their first cell.

It installs three things and nothing else:
  1. a compatibility shim, so the slides' Keras-2 spelling keeps working on Keras 3;
  2. the training budget (caps on `fit` epochs, steps and validation size, and on the optimizer
     steps of all training together: every fit, train_on_batch and custom loop);
  3. tracing of ImageDataGenerator, its flow() iterators, Model.fit/evaluate/train_on_batch,
     optimizer steps outside fit and train_test_split, written to the evidence folder *as it
     happens*. The trained model is saved through Keras's saving function captured at start-up,
     never through an attribute of the model (which the notebook could replace).

It never judges anything: every verdict is computed later by the grader process from the
files written here. Objects are found by type (patched classes), never by variable name.

Only the standard library and numpy may be imported at module level: the trusted side
imports `image_hashes` from this module without loading Keras.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import math
import os
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_ENV = "GRADER_HARNESS_CONFIG"
EVENTS_FILE = "events.jsonl"
DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")  # keras.datasets whose load_data is recorded


# ---------------------------------------------------------------- shared with the grader
def image_hashes(x: Any) -> np.ndarray:
    """64-bit content hash per image, independent of 0–1 vs 0–255 scaling and of shape.

    Used to find test images in training data; the grader computes the same hashes of its
    own test set, so this function must stay identical on both sides.
    """
    a = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    scale = 255.0 if a.size and float(a.max()) <= 1.0 + 1e-6 else 1.0
    q = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    digests = (hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in q)
    return np.fromiter((int.from_bytes(d, "little") for d in digests), dtype=np.uint64, count=len(q))


def source_hashes(x: Any, chunk: int = 8192) -> np.ndarray:
    """64-bit hash per image that survives any per-image affine rescaling (x/255, standardisation).

    Each image is stretched to its own 0–255 range before quantising, so the same picture hashes
    alike whether it was flowed as uint8, /255 floats or (x − mean)/std. Used to tell which data set
    a notebook flowed (Fashion-MNIST or not); the grader hashes its own copy with this same function.
    """
    a = np.asarray(x)
    count = len(a) if a.ndim else 0
    out = np.empty(count, dtype=np.uint64)
    for start in range(0, count, chunk):
        part = np.asarray(a[start:start + chunk], dtype=np.float64).reshape(-1, int(np.prod(a.shape[1:])) or 1)
        low, high = part.min(axis=1, keepdims=True), part.max(axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        # Rounded first so float noise (x/255 vs uint8 input) cannot tip a value lying on .5 either way.
        q = np.clip(np.rint(np.round((part - low) / span * 255.0, 4)), 0, 255).astype(np.uint8)
        out[start:start + len(q)] = [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
                                     for row in q]
    return out


SIGNATURE_SIZE = 14  # 14×14 block means per image


def image_signatures(x: Any) -> np.ndarray | None:
    """A coarse, scale-free picture of each 28×28 image, for near-duplicate search (196 uint8).

    Each image is min–max normalised on its own, averaged over 2×2 blocks and stored as 0–255.
    Adding ±1/255 to pixels moves a signature by at most 0.004 (root mean square, on 0–1), rescaling
    (0–1 vs 0–255) or standardising a whole array not at all, while two different Fashion-MNIST images
    are almost never within 0.02. The grader computes the same signatures of its own images, so this
    must stay identical on both sides. Returns None for images that are not 28×28.
    """
    a = np.asarray(x)
    if a.ndim < 2 or len(a) == 0 or a[0].size != 28 * 28 or a.dtype.kind not in "biuf":
        return None
    square = a.reshape(len(a), 28, 28)
    out = np.empty((len(a), SIGNATURE_SIZE * SIGNATURE_SIZE), dtype=np.uint8)
    for start in range(0, len(a), 4096):  # bounded temporaries: 48,000 images at once would be 300 MB
        b = square[start:start + 4096]
        if b.dtype.kind != "f":
            b = b.astype(np.float32)
        low, high = b.min(axis=(1, 2)), b.max(axis=(1, 2))
        # 2×2 block means; normalising after pooling is the same as before (it is linear)
        blocks = (b[:, 0::2, 0::2] + b[:, 1::2, 0::2] + b[:, 0::2, 1::2] + b[:, 1::2, 1::2]) * 0.25
        scaled = (blocks.reshape(len(b), -1) - low[:, None]) / np.maximum(high - low, 1e-6)[:, None]
        out[start:start + 4096] = np.clip(np.rint(np.nan_to_num(scaled) * 255), 0, 255)
    return out


# ---------------------------------------------------------------- recording
def canonical(event: dict[str, Any]) -> str:
    """The exact text an event's MAC covers; the grader re-creates it from the parsed line."""
    return json.dumps(event, sort_keys=True, ensure_ascii=False, default=_jsonable)


def event_mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Recorder:
    """Appends one JSON line per event and writes arrays as .npz, flushing each time.

    With a key, every line carries an HMAC and every file an `artifact` event with its digest,
    so lines or files written by the student's code (not by this recorder) are recognised and
    ignored by the grader. The key is read from a file that is deleted before the first cell.
    """

    def __init__(self, evidence_dir: Path, max_bytes: int, key: bytes | None = None) -> None:
        self.dir = evidence_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._events = open(self.dir / EVENTS_FILE, "a", encoding="utf-8")
        self._seq = 0
        self._t0 = time.monotonic()
        self._budget_left = max_bytes
        self._key = key

    def event(self, kind: str, **data: Any) -> None:
        self._seq += 1
        line = {"seq": self._seq, "t": round(time.monotonic() - self._t0, 3), "cell": _cell_number(), "kind": kind}
        line.update(data)
        text = canonical(line)
        if self._key is not None:
            text = canonical({**json.loads(text), "mac": event_mac(self._key, text)})
        self._events.write(text + "\n")
        self._events.flush()

    def artifact(self, path: Path) -> None:
        """Vouch for a file this recorder wrote (its digest goes into a signed event)."""
        self.event("artifact", file=path.name, sha256=file_digest(path))

    def arrays(self, name: str, **arrays: np.ndarray) -> str | None:
        """Save arrays atomically; returns the file name, or None when over the size budget."""
        size = sum(int(np.asarray(a).nbytes) for a in arrays.values())
        if size > self._budget_left:
            return None
        self._budget_left -= size
        tmp, final = self.dir / f".{name}.tmp.npz", self.dir / f"{name}.npz"
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, final)
        self.artifact(final)
        return final.name


# What `execution_count` reads while a cell runs, minus the cell's own number (its [n] prompt in the
# executed notebook): 0 in IPython 7 (Colab), 1 in IPython 9, which counts up before the cell runs.
# Learnt at the first cell (number_cells_as_the_notebook_does) so records name the cell a reader sees.
_COUNT_OFFSET = {"value": 0}


def _cell_number() -> int | None:
    try:
        count = get_ipython().execution_count  # type: ignore[name-defined]  # noqa: F821
    except NameError:
        return None
    return count - _COUNT_OFFSET["value"] if isinstance(count, int) else count


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"<array {value.shape}>"
    if isinstance(value, (tuple, set)):
        return list(value)
    return repr(value)[:200]


def summarize_array(a: Any) -> dict[str, Any] | None:
    """Shape, dtype and value range of an array-like, plus whether it looks one-hot."""
    if a is None:
        return None
    try:
        arr = np.asarray(a)
    except Exception:  # noqa: BLE001 - student objects may refuse conversion
        return {"type": type(a).__name__}
    info: dict[str, Any] = {"type": type(a).__name__, "shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.size and arr.dtype.kind in "biuf":
        info.update(min=float(arr.min()), max=float(arr.max()), mean=round(float(arr.mean()), 5))
        info["one_hot"] = bool(
            arr.ndim == 2 and np.isin(arr, (0, 1)).all() and np.allclose(arr.sum(axis=1), 1.0)
        )
    return info


# ---------------------------------------------------------------- the harness
class Harness:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.budget: dict[str, Any] = config["budget"]
        self.rec = Recorder(Path(config["evidence_dir"]), int(config.get("max_evidence_bytes", 200_000_000)),
                            key=_take_key(config.get("key_file")))
        self._ids: dict[str, weakref.WeakKeyDictionary] = {}
        self._counters: dict[str, int] = {}
        self._hashed: dict[tuple, str] = {}
        self._batched: set[int] = set()
        self._fits = 0
        self.in_fit = False  # Keras validates through evaluate(); only the student's calls count
        self.in_train_on_batch = False
        self.steps = 0  # optimizer steps of every training route so far (the total budget counts these)
        self._batch_training: dict[tuple[str, int], dict[str, Any]] = {}  # train_on_batch / custom loop, unflushed
        self._batch_images: list[Any] = []  # images given to train_on_batch since the last flush
        self._save_model: Any = None  # keras.src.saving.saving_lib.save_model, captured at install

    # Objects get stable numbers by kind ("datagen", "flow", "model") without storing
    # attributes on them (Keras layers track attribute assignment).
    def number(self, kind: str, obj: Any) -> int:
        table = self._ids.setdefault(kind, weakref.WeakKeyDictionary())
        try:
            if obj not in table:
                self._counters[kind] = self._counters.get(kind, 0) + 1
                table[obj] = self._counters[kind]
            return table[obj]
        except TypeError:  # unhashable or not weak-referenceable
            return -1

    def hashes_of(self, x: Any, role: str, function: Any = image_hashes) -> str | None:
        """Hash the images once per array; returns the evidence file holding the hashes."""
        try:
            arr = np.asarray(x)
            if arr.ndim < 2 or len(arr) == 0:
                return None
            key = (arr.__array_interface__["data"][0], arr.shape, str(arr.dtype), function.__name__)
            if key not in self._hashed:
                name = f"hashes_{len(self._hashed) + 1}"
                # Exact hashes plus coarse signatures for near-copy search (data.no_test_leak).
                signatures = image_signatures(arr) if function is image_hashes else None
                extra = {"signatures": signatures} if signatures is not None else {}
                self._hashed[key] = self.rec.arrays(name, hashes=function(arr), **extra) or ""
            return self._hashed[key] or None
        except Exception as exc:  # noqa: BLE001
            self.rec.event("harness_warning", where=f"hash {role}", error=repr(exc)[:200])
            return None

    # -- install ------------------------------------------------------------------------
    def install(self) -> None:
        seed = self.config.get("seed")
        import keras  # the student would import it anyway; done once here

        from keras.src.saving import saving_lib

        self._save_model = saving_lib.save_model  # before any student code can replace it
        if seed is not None:
            keras.utils.set_random_seed(int(seed))
            self.seed_again_at_first_cell(int(seed))
        number_cells_as_the_notebook_does()
        self.install_import_shim()
        self.fit_without_prefetch()
        self.trace_image_data_generator()
        self.trace_model()
        self.trace_batch_training()
        self.flush_after_each_cell()
        self.trace_train_test_split()
        self.trace_load_data()
        self.install_keras2_bridge()  # after trace_model: its fit() wrapper strips Keras 2 arguments first
        import platform

        import tensorflow as tf

        self.rec.event(
            "harness_ready",
            budget=self.budget,
            seed=seed,
            versions={
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
            },
        )

    def install_import_shim(self) -> None:
        """Keras 3 dropped `keras.preprocessing.image.ImageDataGenerator`; the slides use it.

        A module-level __getattr__ (PEP 562) serves the legacy class on demand, so we can
        also record that the student relied on the shim.
        """
        import keras.preprocessing.image as kpi
        from keras.src.legacy.preprocessing.image import ImageDataGenerator

        if hasattr(kpi, "ImageDataGenerator"):
            return
        harness = self

        def __getattr__(name: str) -> Any:
            if name == "ImageDataGenerator":
                harness.rec.event("compat", shim="keras.preprocessing.image.ImageDataGenerator")
                return ImageDataGenerator
            raise AttributeError(f"module {kpi.__name__!r} has no attribute {name!r}")

        kpi.__getattr__ = __getattr__  # type: ignore[attr-defined]

    def install_keras2_bridge(self) -> None:
        """Keras 2 APIs that Keras 3 removed run as their Keras 3 equivalents; each use is recorded."""
        try:
            import keras2_bridge  # the kernel's PYTHONPATH is grader/kernel/
        except ImportError:
            from grader.kernel import keras2_bridge
        keras2_bridge.install(lambda api, **details: self.rec.event("bridge", api=api, **details))

    def seed_again_at_first_cell(self, seed: int) -> None:
        """Seed once more just before the first cell runs.

        Importing TensorFlow leaves threads that draw from Python's global `random` while the
        kernel starts, a varying number of times: seeded at start-up alone, two kernels running the
        same notebook began their first cell with different `random` states (different layer seeds,
        batch order), and accuracy depended on machine load. The first cell starts from here.
        """
        try:
            from IPython import get_ipython
        except ImportError:
            return
        shell = get_ipython()
        if shell is None:
            return

        def before_first_cell(*_: Any) -> None:
            shell.events.unregister("pre_run_cell", before_first_cell)
            import keras

            keras.utils.set_random_seed(seed)

        shell.events.register("pre_run_cell", before_first_cell)

    def fit_without_prefetch(self) -> None:
        """Batches from a generator are made when the training loop asks for them, not ahead.

        Keras feeds `fit(datagen.flow(...))` through tf.data with `prefetch(AUTOTUNE)`: a background
        thread augments batches ahead (global `np.random`) while the main thread, at each epoch's
        end, draws the generator's next index permutation from the same `np.random`. With
        steps_per_epoch below len(generator) (every capped budget) the interleaving, and so the
        batches of epoch 2 on, depends on thread timing: 2 epochs of 10 steps under load gave 3
        different models in 8 runs with the prefetch, 1 in 4 without. (Beyond a few epochs some
        run-to-run variation remains; not traced yet.) On one CPU thread per kernel the overlap
        the prefetch buys is small; the GPU budget loses it.
        """
        try:
            from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
        except ImportError:
            return
        original = PyDatasetAdapter.get_tf_dataset

        def get_tf_dataset(adapter: Any) -> Any:
            dataset = original(adapter)
            inner = getattr(dataset, "_input_dataset", None)
            if getattr(adapter, "enqueuer", None) is None and inner is not None and \
                    type(dataset).__name__ == "_PrefetchDataset":
                return inner  # the same dataset without its final prefetch
            return dataset

        PyDatasetAdapter.get_tf_dataset = get_tf_dataset

    def trace_image_data_generator(self) -> None:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator, NumpyArrayIterator

        harness = self
        original_init = ImageDataGenerator.__init__
        original_flow = ImageDataGenerator.flow
        original_batches = NumpyArrayIterator._get_batches_of_transformed_samples
        init_params = list(inspect.signature(original_init).parameters)[1:]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            given = dict(zip(init_params, args))
            given.update(kwargs)
            harness.rec.event("datagen", datagen=harness.number("datagen", self), params=given)

        def flow(self, x, y=None, *args: Any, **kwargs: Any):
            iterator = original_flow(self, x, y, *args, **kwargs)
            harness.rec.event(
                "flow",
                flow=harness.number("flow", iterator),
                datagen=harness.number("datagen", self),
                batch_size=iterator.batch_size,
                shuffle=bool(iterator.shuffle),
                length=len(iterator),
                x=summarize_array(x),
                y=summarize_array(y),
                x_source=harness.hashes_of(x, "flow x", source_hashes),
            )
            return iterator

        def _get_batches_of_transformed_samples(self, index_array):
            flow_no = harness.number("flow", self)
            first = flow_no not in harness._batched
            state = np.random.get_state() if first else None
            try:
                batch = original_batches(self, index_array)
            except Exception as exc:
                if first:
                    harness._batched.add(flow_no)
                    harness.record_failed_batch(self, flow_no, index_array, state, exc, original_batches)
                raise
            if first:
                harness._batched.add(flow_no)
                harness.record_first_batch(self, flow_no, index_array, batch)
            return batch

        ImageDataGenerator.__init__ = __init__
        ImageDataGenerator.flow = flow
        NumpyArrayIterator._get_batches_of_transformed_samples = _get_batches_of_transformed_samples

    def record_failed_batch(self, iterator: Any, flow_no: int, index_array: Any, state: Any, exc: BaseException,
                            make_batch: Any) -> None:
        """A first batch that failed midway is still evidence of what the generator made.

        The usual case: `save_to_dir` into a folder that does not exist fails after the images were
        transformed. The batch is made again from the same random state without saving, recorded,
        and the random state put back as the failed call left it, so the student's run goes on
        (and raises) exactly as it would have.
        """
        self.rec.event("batch_error", flow=flow_no, error=f"{type(exc).__name__}: {exc}"[:300])
        save_to_dir = getattr(iterator, "save_to_dir", None)
        if not save_to_dir or state is None:
            return
        after = np.random.get_state()
        try:
            np.random.set_state(state)
            iterator.save_to_dir = None
            self.record_first_batch(iterator, flow_no, index_array, make_batch(iterator, index_array))
        except Exception as again:  # noqa: BLE001
            self.rec.event("harness_warning", where="failed batch", error=repr(again)[:200])
        finally:
            iterator.save_to_dir = save_to_dir
            np.random.set_state(after)

    def record_first_batch(self, iterator: Any, flow_no: int, index_array: Any, batch: Any) -> None:
        """The first batch a generator produced, next to the originals it came from."""
        try:
            bx, by = (batch[0], batch[1]) if isinstance(batch, tuple) else (batch, None)
            arrays = {"x": bx, "x_orig": iterator.x[index_array], "index": np.asarray(index_array)}
            if by is not None and iterator.y is not None:
                arrays.update(y=by, y_orig=iterator.y[index_array])
            name = self.rec.arrays(f"batch_flow{flow_no}", **arrays)
            self.rec.event(
                "batch",
                flow=flow_no,
                file=name,
                x=summarize_array(bx),
                y=summarize_array(by),
                changed_fraction=float(np.mean(np.abs(np.asarray(bx) - arrays["x_orig"]) > 1e-6)),
            )
        except Exception as exc:  # noqa: BLE001
            self.rec.event("harness_warning", where="first batch", error=repr(exc)[:200])

    def trace_model(self) -> None:
        import keras

        harness = self
        original_fit = keras.Model.fit
        original_evaluate = keras.Model.evaluate
        fit_signature = inspect.signature(original_fit)
        eval_signature = inspect.signature(original_evaluate)

        def fit(self, *args: Any, **kwargs: Any):
            bound = fit_signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            params.pop("self")
            harness.flush_batch_training()
            harness._fits += 1
            number = harness._fits
            start = harness.describe_fit(self, number, params)
            harness.apply_budget(params, start)
            harness.apply_total_budget(params, start)  # raises when every step is used up
            optimizer = getattr(self, "optimizer", None)
            before = _iterations(optimizer)
            start.update(optimizer=harness.number("optimizer", optimizer) if optimizer is not None else None,
                         iterations_before=before)
            harness.rec.event("fit_start", **start)
            harness.in_fit = True
            try:
                history = original_fit(self, **params)
            except BaseException as exc:
                harness.count_steps(optimizer, before)
                harness.rec.event("fit_error", fit=number, error=f"{type(exc).__name__}: {exc}"[:500],
                                  iterations=_iterations(optimizer), total_steps=harness.steps)
                raise
            finally:
                harness.in_fit = False
            steps = harness.count_steps(optimizer, before)
            harness.rec.event("fit_end", fit=number, history=_history(history), steps=steps,
                              iterations=_iterations(optimizer), total_steps=harness.steps)
            harness.save_model(self, number)
            return history

        def evaluate(self, *args: Any, **kwargs: Any):
            bound = eval_signature.bind(self, *args, **kwargs)
            x = bound.arguments.get("x")
            result = original_evaluate(*bound.args, **bound.kwargs)
            if harness.in_fit:
                return result
            harness.rec.event(
                "evaluate",
                model=harness.number("model", self),
                x=summarize_array(x) if isinstance(x, np.ndarray) else {"type": type(x).__name__},
                x_hashes=harness.hashes_of(x, "evaluate x") if isinstance(x, np.ndarray) else None,
                claimed=_jsonable_result(result),
            )
            return result

        keras.Model.fit = fit
        keras.Model.evaluate = evaluate

    def describe_fit(self, model: Any, number: int, params: dict[str, Any]) -> dict[str, Any]:
        x = params.get("x")
        flow_no = self.number("flow", x) if _is_flow_iterator(x) else None
        train_x = x.x if flow_no else x
        validation = params.get("validation_data")
        val_flow = self.number("flow", validation) if _is_flow_iterator(validation) else None
        val_x = validation[0] if isinstance(validation, (tuple, list)) and validation else None
        if val_flow is not None:  # validation_data=datagen.flow(x_valid, y_valid): its images count
            val_x = validation.x
        return {
            "fit": number,
            "model": self.number("model", model),
            "params_count": int(model.count_params()),
            "layers": [_layer_info(layer) for layer in model.layers],
            "loss": repr(getattr(model, "loss", None))[:120],
            "input": {"kind": "flow" if flow_no else type(x).__name__, "flow": flow_no},
            "train_x": summarize_array(train_x) if isinstance(train_x, np.ndarray) else None,
            "train_hashes": self.hashes_of(train_x, "fit x") if isinstance(train_x, np.ndarray) else None,
            "requested": {
                "epochs": params.get("epochs"),
                "steps_per_epoch": params.get("steps_per_epoch"),
                "batch_size": params.get("batch_size"),
                "validation_split": params.get("validation_split"),
                "validation_data": type(validation).__name__ if validation is not None else None,
            },
            "validation_x": summarize_array(val_x) if isinstance(val_x, np.ndarray) else None,
            "validation_flow": val_flow,
            "validation_hashes": self.hashes_of(val_x, "validation x") if isinstance(val_x, np.ndarray) else None,
        }

    def apply_budget(self, params: dict[str, Any], start: dict[str, Any]) -> None:
        """Cap the training the notebook asks for; record what actually ran and why."""
        notes: list[str] = []
        steps = params.get("steps_per_epoch")
        if isinstance(steps, float):
            # Keras 2 accepted len(x)/batch_size; Keras 3 raises TypeError on a float.
            params["steps_per_epoch"] = steps = math.ceil(steps)
            notes.append("steps_per_epoch float → int")
        max_epochs, max_steps = self.budget.get("max_epochs"), self.budget.get("max_steps_per_epoch")
        if max_epochs and params.get("epochs", 1) > max_epochs:
            params["epochs"] = max_epochs
        if max_steps:
            natural = steps or _natural_steps(params)
            if natural is None or natural > max_steps:
                params["steps_per_epoch"] = max_steps
        max_val = self.budget.get("max_validation_samples")
        validation = params.get("validation_data")
        if max_val and isinstance(validation, (tuple, list)) and len(validation) >= 2:
            if hasattr(validation[0], "__len__") and len(validation[0]) > max_val:
                params["validation_data"] = tuple(v[:max_val] if v is not None else None for v in validation)
        elif max_val and validation is not None and hasattr(validation, "__len__"):
            batch = getattr(validation, "batch_size", None) or 32
            params["validation_steps"] = min(params.get("validation_steps") or len(validation), math.ceil(max_val / batch))
        start["effective"] = {
            "epochs": params.get("epochs"),
            "steps_per_epoch": params.get("steps_per_epoch"),
            "validation_samples": _len_or_none(params.get("validation_data")),
        }
        start["compat"] = notes

    def apply_total_budget(self, params: dict[str, Any], start: dict[str, Any]) -> None:
        """Fit within what is left of the budget's total optimizer steps (all training counted)."""
        total = self.budget.get("max_total_steps")
        if not total:
            return
        left = int(total) - self.steps
        start["total_budget"] = {"total": int(total), "used_before": self.steps}
        if left <= 0:
            self.exhausted("fit")
        steps = params.get("steps_per_epoch") or _natural_steps(params)
        first = int(params.get("initial_epoch") or 0)
        epochs = int(params.get("epochs") or 1)
        if steps is None:
            params["steps_per_epoch"] = steps = left
        if (epochs - first) * steps > left:
            if steps <= left:
                params["epochs"] = first + left // steps
            else:
                params["epochs"], params["steps_per_epoch"] = first + 1, left
            start["effective"].update(epochs=params["epochs"], steps_per_epoch=params["steps_per_epoch"])
            start["total_budget"]["capped"] = True

    def exhausted(self, route: str) -> None:
        total = self.budget.get("max_total_steps")
        self.rec.event("budget_exhausted", route=route, total=total, steps=self.steps)
        raise TrainingBudgetExhausted(
            f"採点用の学習予算（すべての学習で合計 {total} ステップ）を使い切りました。これ以上は学習できません。"
            f" / The grading budget of {total} optimizer steps for all training together is used up.")

    def count_steps(self, optimizer: Any, before: int | None) -> int:
        """Add the optimizer steps a training call took (its step counter's change) to the total."""
        after = _iterations(optimizer)
        steps = max(0, after - before) if after is not None and before is not None else 0
        self.steps += steps
        return steps

    def save_model(self, model: Any, number: int) -> None:
        """Save the model fit was called on, with Keras's own saving function as captured at start-up:
        replacing `model.save` (or any attribute) in the notebook cannot change what is saved."""
        path = self.rec.dir / f"model_fit{number}.keras"
        try:
            self._save_model(model, str(path))
            self.rec.artifact(path)
            self.rec.event("model_saved", fit=number, model=self.number("model", model), file=path.name,
                           iterations=_iterations(getattr(model, "optimizer", None)))
        except Exception as exc:  # noqa: BLE001
            self.rec.event("harness_warning", where="save model", error=repr(exc)[:300])

    # -- training outside fit -------------------------------------------------------------
    def trace_batch_training(self) -> None:
        """train_on_batch and optimizer steps outside fit (custom loops) count against the budget's total
        and are recorded: how many steps, and the images train_on_batch was given.

        A custom loop compiled with tf.function calls `apply` once, when it is traced: its steps are not
        seen here (the saved model's own step counter, read by the grader, still shows them)."""
        import keras
        from keras.src.optimizers.base_optimizer import BaseOptimizer

        harness = self
        original_train_on_batch = keras.Model.train_on_batch
        original_apply = BaseOptimizer.apply

        def train_on_batch(self, x, y=None, *args: Any, **kwargs: Any):
            if harness.over_budget():
                harness.exhausted("train_on_batch")
            optimizer = getattr(self, "optimizer", None)
            before = _iterations(optimizer)
            harness.in_train_on_batch = True
            try:
                return original_train_on_batch(self, x, y, *args, **kwargs)
            finally:
                harness.in_train_on_batch = False
                steps = harness.count_steps(optimizer, before)
                harness.note_batch_training("train_on_batch", harness.number("model", self), steps, x)

        def apply(self, grads, trainable_variables=None):
            if harness.in_fit or harness.in_train_on_batch:
                return original_apply(self, grads, trainable_variables)
            if harness.over_budget():
                harness.exhausted("custom loop")
            result = original_apply(self, grads, trainable_variables)
            harness.steps += 1
            harness.note_batch_training("custom_loop", harness.number("optimizer", self), 1, None)
            return result

        keras.Model.train_on_batch = train_on_batch
        BaseOptimizer.apply = apply

    def over_budget(self) -> bool:
        total = self.budget.get("max_total_steps")
        return bool(total) and self.steps >= int(total)

    def note_batch_training(self, route: str, number: int, steps: int, x: Any) -> None:
        entry = self._batch_training.setdefault((route, number), {"calls": 0, "steps": 0, "samples": 0})
        entry["calls"] += 1
        entry["steps"] += steps
        if isinstance(x, np.ndarray) and x.ndim >= 2:
            entry["samples"] += len(x)
            if sum(len(b) for b in self._batch_images) < 200_000:
                self._batch_images.append(np.array(x, copy=True))
        if sum(len(b) for b in self._batch_images) >= 10_000:
            self.flush_batch_training()

    def flush_batch_training(self, *_: Any) -> None:
        """Write what train_on_batch / custom loops did since the last flush (after every cell)."""
        if not self._batch_training:
            return
        try:
            images = np.concatenate(self._batch_images) if self._batch_images else None
        except ValueError:  # batches of different shapes
            images = None
        self._batch_images = []
        name = None
        if images is not None and len(images):
            self._hashed_batches = getattr(self, "_hashed_batches", 0) + 1
            signatures = image_signatures(images)
            extra = {"signatures": signatures} if signatures is not None else {}
            name = self.rec.arrays(f"batch_training_{self._hashed_batches}", hashes=image_hashes(images), **extra)
        for (route, number), entry in self._batch_training.items():
            self.rec.event("batch_training", route=route, number=number, **entry, total_steps=self.steps,
                           train_hashes=name if route == "train_on_batch" else None)
        self._batch_training = {}

    def flush_after_each_cell(self) -> None:
        try:
            from IPython import get_ipython
        except ImportError:
            return
        shell = get_ipython()
        if shell is not None:
            shell.events.register("post_run_cell", self.flush_batch_training)

    def trace_train_test_split(self) -> None:
        try:
            import sklearn.model_selection as ms
            import sklearn.model_selection._split as split_module
        except ImportError:
            return
        harness = self
        original = split_module.train_test_split

        def train_test_split(*arrays: Any, **options: Any):
            result = original(*arrays, **options)
            harness.rec.event(
                "split",
                inputs=[summarize_array(a) for a in arrays],
                outputs=[summarize_array(a) for a in result],
                options={k: v for k, v in options.items() if isinstance(v, (int, float, bool, str, type(None)))},
            )
            return result

        train_test_split.__doc__ = original.__doc__
        ms.train_test_split = split_module.train_test_split = train_test_split

    def trace_load_data(self) -> None:
        """Which Keras data set was loaded (Fashion-MNIST, or MNIST, CIFAR …), via any import path."""
        import importlib

        harness = self
        for dataset in DATASETS:
            try:
                source = importlib.import_module(f"keras.src.datasets.{dataset}")
            except ImportError:
                continue
            original = source.load_data

            def load_data(*args: Any, _original: Any = original, _dataset: str = dataset, **kwargs: Any):
                (xtr, ytr), (xte, yte) = _original(*args, **kwargs)
                harness.rec.event("load_data", dataset=_dataset, x_train=summarize_array(xtr),
                                  y_train=summarize_array(ytr), x_test=summarize_array(xte),
                                  y_test=summarize_array(yte))
                return (xtr, ytr), (xte, yte)

            load_data.__doc__ = original.__doc__
            for name in (f"keras.src.datasets.{dataset}", f"keras.datasets.{dataset}",
                         f"keras._tf_keras.keras.datasets.{dataset}"):
                try:
                    module = importlib.import_module(name)
                except ImportError:
                    continue
                if getattr(module, "load_data", None) is original:
                    module.load_data = load_data


# ---------------------------------------------------------------- small helpers
class TrainingBudgetExhausted(RuntimeError):
    """Every optimizer step the grading budget allows has been taken."""


def number_cells_as_the_notebook_does() -> None:
    """Before any cell, execution_count is the first cell's number; at the first cell's pre_run_cell it
    already reads one more where IPython counts up before running (IPython 9, not 7): that difference
    is the offset _cell_number takes off, so evidence names cells by their prompt in either."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    first = shell.execution_count

    def at_first_cell(*_: Any) -> None:
        shell.events.unregister("pre_run_cell", at_first_cell)
        _COUNT_OFFSET["value"] = max(0, min(1, shell.execution_count - first))

    shell.events.register("pre_run_cell", at_first_cell)


def _iterations(optimizer: Any) -> int | None:
    """An optimizer's step counter (Keras 3: `iterations`), or None."""
    try:
        return int(optimizer.iterations.numpy())
    except Exception:  # noqa: BLE001 - no optimizer yet, another kind of object
        return None


def _take_key(key_file: str | None) -> bytes | None:
    """Read the signing key and delete its file, so the student's cells cannot read it."""
    if not key_file:
        return None
    path = Path(key_file)
    key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    path.unlink()
    return key


def _is_flow_iterator(x: Any) -> bool:
    from keras.src.legacy.preprocessing.image import NumpyArrayIterator

    return isinstance(x, NumpyArrayIterator)


def _natural_steps(params: dict[str, Any]) -> int | None:
    x = params.get("x")
    if hasattr(x, "__len__") and not isinstance(x, np.ndarray):
        return len(x)  # a PyDataset / Sequence: one step per batch
    if isinstance(x, np.ndarray):
        return math.ceil(len(x) * (1 - (params.get("validation_split") or 0)) / (params.get("batch_size") or 32))
    return None


def _len_or_none(value: Any) -> int | None:
    if isinstance(value, (tuple, list)) and value and hasattr(value[0], "__len__"):
        return len(value[0])
    return None


def _layer_info(layer: Any) -> dict[str, Any]:
    info = {"class": type(layer).__name__, "params": int(layer.count_params()) if layer.built else None}
    for attr in ("filters", "kernel_size", "padding", "units", "rate", "pool_size"):
        if hasattr(layer, attr):
            info[attr] = getattr(layer, attr)
    activation = getattr(layer, "activation", None)
    if activation is not None:
        info["activation"] = getattr(activation, "__name__", str(activation))
    return info


def _history(history: Any) -> dict[str, list[float]]:
    values = getattr(history, "history", {}) or {}
    return {k: [float(v) for v in vs] for k, vs in values.items()}


def _jsonable_result(result: Any) -> Any:
    if isinstance(result, (list, tuple)):
        return [float(v) if isinstance(v, (int, float, np.generic)) else repr(v)[:50] for v in result]
    if isinstance(result, (int, float, np.generic)):
        return float(result)
    if isinstance(result, dict):
        return {str(k): float(v) for k, v in result.items() if isinstance(v, (int, float, np.generic))}
    return repr(result)[:100]


def install() -> None:
    """Entry point run by the kernel at start-up (IPKernelApp.exec_lines)."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    harness = Harness(config)
    try:
        harness.install()
    except Exception as exc:  # record, so the grader can say the harness failed
        harness.rec.event("harness_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
