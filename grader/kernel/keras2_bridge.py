"""Keras 2 → 3 bridge: runs INSIDE the student's kernel, installed by the harness (grader_kernel.py).

Students copy code from older material every year: `model.fit_generator(...)`, `np_utils`,
`Adam(lr=...)`, `iterator.next()`, `fit(workers=...)`. Keras 3 removed all of it, so one such line
used to stop a notebook that is otherwise right, and every check after it was "not run". The
bridge runs each removed API as its Keras 3 equivalent and records a `bridge` event per use; the
grader turns the events into notes that tell the student what to write instead (grader/compat_notes.py),
and the spec decides whether a bridged API costs points (check kind `keras3_api`, off by default).

Like the harness it never judges, and it forwards to what is in force *at call time*
(`self.fit(...)`, not a captured original), so every bridged call goes through the harness's
tracing and training budget.

Only the standard library and numpy at module level (Keras is imported inside `install`).
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable

import numpy as np

Record = Callable[..., None]

# Keras 2 arguments that Keras 3's fit/evaluate/predict no longer accept (they belong to PyDataset now).
DROPPED_LOOP_ARGS = ("workers", "use_multiprocessing", "max_queue_size")

# Keras 2 module paths whose classes Keras 3 keeps under a shorter one.
MOVED_MODULES = {
    "keras.layers.core": "keras.layers",
    "keras.layers.convolutional": "keras.layers",
    "keras.layers.pooling": "keras.layers",
    "keras.layers.normalization": "keras.layers",
    "keras.layers.advanced_activations": "keras.layers",
    "keras.layers.merge": "keras.layers",
}

# tensorflow.python.keras is the Keras 2 copy left inside TensorFlow: on TF 2.21 its Model.fit fails
# (AttributeError in its data adapter) and its models are not Keras 3 models (no tracing, no budget,
# no `.keras` file). Its public modules are served by Keras 3 instead.
LEGACY_TF_KERAS = "tensorflow.python.keras"
LEGACY_TF_KERAS_MODULES = {
    "models": "keras.models",
    "layers": "keras.layers",
    "optimizers": "keras.optimizers",
    "callbacks": "keras.callbacks",
    "losses": "keras.losses",
    "metrics": "keras.metrics",
    "datasets": "keras.datasets",
    "datasets.fashion_mnist": "keras.datasets.fashion_mnist",
    "datasets.mnist": "keras.datasets.mnist",
    "preprocessing": "keras.preprocessing",
    "preprocessing.image": "keras.preprocessing.image",
    "layers.core": "keras.layers",
    "layers.convolutional": "keras.layers",
    "layers.pooling": "keras.layers",
}


def install(record: Record) -> None:
    """Install every bridge; `record(api, **details)` writes one evidence event per use."""
    import keras

    bridge_generator_methods(keras, record)
    bridge_predict_classes(keras, record)
    bridge_loop_arguments(keras, record)
    bridge_compile_metrics(keras, record)
    bridge_optimizer_arguments(record)
    bridge_iterator_next(record)
    bridge_np_utils(keras, record)
    bridge_tensorflow_backend(keras, record)
    bridge_moved_modules(record)
    bridge_legacy_tf_keras(record)


# ---------------------------------------------------------------- Model methods
def bridge_generator_methods(keras: Any, record: Record) -> None:
    """fit_generator / evaluate_generator / predict_generator → fit / evaluate / predict.

    Python looks up `model.fit_generator` before it evaluates `datagen.flow(...)`, so without this
    the generator was never even created and every generator check said "not run".
    """

    def fit_generator(self, generator, steps_per_epoch=None, epochs=1, verbose=1, callbacks=None,
                      validation_data=None, validation_steps=None, validation_freq=1, class_weight=None,
                      max_queue_size=10, workers=1, use_multiprocessing=False, shuffle=True, initial_epoch=0):
        record("Model.fit_generator")
        return self.fit(generator, steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=verbose,
                        callbacks=callbacks, validation_data=validation_data, validation_steps=validation_steps,
                        validation_freq=validation_freq, class_weight=class_weight, shuffle=shuffle,
                        initial_epoch=initial_epoch)

    def evaluate_generator(self, generator, steps=None, callbacks=None, max_queue_size=10, workers=1,
                           use_multiprocessing=False, verbose=0):
        record("Model.evaluate_generator")
        return self.evaluate(generator, steps=steps, callbacks=callbacks, verbose=verbose)

    def predict_generator(self, generator, steps=None, callbacks=None, max_queue_size=10, workers=1,
                          use_multiprocessing=False, verbose=0):
        record("Model.predict_generator")
        return self.predict(generator, steps=steps, callbacks=callbacks, verbose=verbose)

    for function in (fit_generator, evaluate_generator, predict_generator):
        if not hasattr(keras.Model, function.__name__):
            setattr(keras.Model, function.__name__, function)


def bridge_predict_classes(keras: Any, record: Record) -> None:
    """Sequential.predict_classes / predict_proba (removed in TF 2.6) → predict (+ argmax)."""

    def predict_classes(self, x, batch_size=32, verbose=0):
        record("Model.predict_classes")
        proba = self.predict(x, batch_size=batch_size, verbose=verbose)
        if proba.shape[-1] > 1:
            return proba.argmax(axis=-1)
        return (proba > 0.5).astype("int32")

    def predict_proba(self, x, batch_size=32, verbose=0):
        record("Model.predict_proba")
        return self.predict(x, batch_size=batch_size, verbose=verbose)

    for function in (predict_classes, predict_proba):
        if not hasattr(keras.Model, function.__name__):
            setattr(keras.Model, function.__name__, function)


def bridge_loop_arguments(keras: Any, record: Record) -> None:
    """fit/evaluate/predict(workers=, use_multiprocessing=, max_queue_size=) → dropped.

    Wraps what is in force now (the harness's traced fit/evaluate), so it must be installed after them.
    """
    for name in ("fit", "evaluate", "predict"):
        inner = getattr(keras.Model, name)

        def without_loop_arguments(self, *args, _inner=inner, _name=name, **kwargs):
            dropped = sorted(k for k in DROPPED_LOOP_ARGS if k in kwargs)
            if dropped:
                record(f"Model.{_name}(workers=…)", dropped=dropped)
                for key in dropped:
                    kwargs.pop(key)
            return _inner(self, *args, **kwargs)

        without_loop_arguments.__name__ = name
        without_loop_arguments.__doc__ = inner.__doc__
        without_loop_arguments.__wrapped__ = inner  # inspect.signature shows Keras's own arguments
        setattr(keras.Model, name, without_loop_arguments)


def bridge_compile_metrics(keras: Any, record: Record) -> None:
    """compile(metrics='acc'): Keras 2 took one metric as a string, Keras 3 wants a list."""
    inner = keras.Model.compile

    def compile(self, *args, **kwargs):  # noqa: A001 - the method's own name
        metrics = kwargs.get("metrics")
        if isinstance(metrics, str):
            record("Model.compile(metrics=str)", metrics=metrics)
            kwargs["metrics"] = [metrics]
        return inner(self, *args, **kwargs)

    compile.__doc__ = inner.__doc__
    compile.__wrapped__ = inner
    keras.Model.compile = compile


def bridge_optimizer_arguments(record: Record) -> None:
    """Optimizers' `lr=` → `learning_rate=`; `decay=` → the same Keras 2 schedule (not silently ignored).

    Keras 2's `decay` meant lr / (1 + decay × iterations): exactly InverseTimeDecay(lr, 1, decay).
    Keras 3 ignores `decay` with a warning, which changes training without telling the student.
    """
    from keras.src.optimizers.base_optimizer import BaseOptimizer
    from keras.src.optimizers.schedules import InverseTimeDecay

    inner = BaseOptimizer.__init__

    def __init__(self, *args, **kwargs):
        if "lr" in kwargs:
            record("optimizer(lr=)", lr=_plain(kwargs["lr"]))
            kwargs["learning_rate"] = kwargs.pop("lr")
        decay = kwargs.pop("decay", None)
        if decay:
            record("optimizer(decay=)", decay=_plain(decay))
            if args:  # BaseOptimizer(learning_rate, ...) called positionally
                kwargs["learning_rate"], args = args[0], args[1:]
            rate = kwargs.get("learning_rate")
            if isinstance(rate, (int, float, np.floating)):
                kwargs["learning_rate"] = InverseTimeDecay(float(rate), decay_steps=1, decay_rate=float(decay))
        inner(self, *args, **kwargs)

    __init__.__wrapped__ = inner
    BaseOptimizer.__init__ = __init__


def bridge_iterator_next(record: Record) -> None:
    """`g.next()` (Keras 2's iterators had it; Keras 3's have only `next(g)`)."""
    from keras.src.legacy.preprocessing.image import Iterator

    if hasattr(Iterator, "next"):
        return

    def next(self):  # noqa: A001 - Keras 2's method name
        record("Iterator.next()")
        return self.__next__()

    Iterator.next = next


# ---------------------------------------------------------------- modules
class _BridgedModule(types.ModuleType):
    """A module whose attributes come from `target`; the first access records the bridge use."""

    def __init__(self, name: str, target: Any, api: str, record: Record, extra: dict[str, Any] | None = None):
        super().__init__(name, target.__doc__)
        self.__dict__["_bridge"] = (target, api, record, dict(extra or {}), [False])
        self.__dict__["__path__"] = []  # a package: `import name.child` asks the finders for the child

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        target, api, record, extra, seen = self.__dict__["_bridge"]
        if not seen[0]:
            seen[0] = True
            record(api, module=self.__name__)
        if attr in extra:
            return extra[attr]
        return getattr(target, attr)

    def __dir__(self) -> list[str]:
        target, _, _, extra, _ = self.__dict__["_bridge"]
        return sorted(set(dir(target)) | set(extra))


def _publish(name: str, module: types.ModuleType) -> None:
    """Make `import name`, `from name import x` and `parent.child` all find `module`."""
    sys.modules[name] = module
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name)
    if parent is not None:
        try:
            setattr(parent, child, module)
        except (AttributeError, TypeError):
            pass


def bridge_np_utils(keras: Any, record: Record) -> None:
    """keras.utils.np_utils (Keras 2) → keras.utils (to_categorical, normalize)."""
    import importlib

    for name in ("keras.utils.np_utils", "tensorflow.keras.utils.np_utils", "keras.src.utils.np_utils"):
        _publish(name, _BridgedModule(name, keras.utils, "keras.utils.np_utils", record))
    try:  # tf.keras.utils is another module object (keras._tf_keras.keras.utils)
        tf_utils = importlib.import_module("keras._tf_keras.keras.utils")
        tf_utils.np_utils = sys.modules["tensorflow.keras.utils.np_utils"]
    except ImportError:
        pass


def bridge_tensorflow_backend(keras: Any, record: Record) -> None:
    """keras.backend.tensorflow_backend (Keras 2): the GPU-listing hack and sessions that Colab notebooks copy."""

    def _get_available_gpus() -> list[str]:
        import tensorflow as tf

        return [device.name for device in tf.config.list_logical_devices("GPU")]

    def get_session():
        import tensorflow as tf

        return tf.compat.v1.Session()

    def set_session(session: Any) -> None:
        return None

    extra = {"_get_available_gpus": _get_available_gpus, "get_session": get_session, "set_session": set_session,
             "_LOCAL_DEVICES": None}
    for name in ("keras.backend.tensorflow_backend", "tensorflow.keras.backend.tensorflow_backend"):
        _publish(name, _BridgedModule(name, keras.backend, "keras.backend.tensorflow_backend", record, extra))


class _AliasFinder:
    """Serves Keras 2 module paths that Keras 3 removed (`keras.layers.convolutional`, …)."""

    def __init__(self, aliases: dict[str, str], api: Callable[[str], str], record: Record) -> None:
        self.aliases, self.api, self.record = aliases, api, record

    def find_spec(self, name: str, path: Any = None, target: Any = None):
        if name not in self.aliases:
            return None
        import importlib.machinery

        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        import importlib

        target = importlib.import_module(self.aliases[spec.name])
        return _BridgedModule(spec.name, target, self.api(spec.name), self.record)

    def exec_module(self, module) -> None:
        return None


def bridge_moved_modules(record: Record) -> None:
    sys.meta_path.insert(0, _AliasFinder(MOVED_MODULES, lambda name: name, record))


def bridge_legacy_tf_keras(record: Record) -> None:
    """`from tensorflow.python.keras.models import Sequential` builds a Keras 3 model (traced, budgeted).

    TensorFlow has already imported most of these modules for itself; their entries are replaced
    (its own references stay as they are), and the rest are served by the finder when imported.
    """
    import importlib

    aliases = {f"{LEGACY_TF_KERAS}.{sub}": target for sub, target in LEGACY_TF_KERAS_MODULES.items()}
    api = "tensorflow.python.keras"
    try:
        importlib.import_module(LEGACY_TF_KERAS)
    except ImportError:
        return
    for name in sorted(aliases, key=lambda n: n.count(".")):  # parents before children
        try:
            target = importlib.import_module(aliases[name])
        except ImportError:
            continue
        _publish(name, _BridgedModule(name, target, api, record))
    sys.meta_path.insert(0, _AliasFinder(aliases, lambda name: api, record))


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return type(value).__name__
