"""Notes that teach instead of failing: Keras 2 APIs the kernel bridged, and imports that failed.

The kernel's bridge (grader/kernel/keras2_bridge.py) records a `bridge` event each time a removed
Keras 2 API runs as its Keras 3 equivalent; this module says, in the student's language, what to
write instead. An import that failed is explained by whether Google Colab ships the package: if it
does and our kernel lacks it, that is the grader's fault (the TA should know); if Colab lacks it too,
the notebook would not have run there either.

Read on the trusted side only: nothing here imports the packages it names.
"""

from __future__ import annotations

import re
from typing import Any

from grader.evidence import Evidence

# What to write instead of each bridged Keras 2 API: (ja, en).
BRIDGED: dict[str, tuple[str, str]] = {
    "Model.fit_generator": (
        "`model.fit_generator(...)` は Keras 3 で削除されたため `model.fit(...)` として実行しました。"
        "`model.fit(datagen.flow(...), ...)` と書いてください。",
        "`model.fit_generator(...)` was removed in Keras 3 and ran as `model.fit(...)`. "
        "Write `model.fit(datagen.flow(...), ...)`."),
    "Model.evaluate_generator": (
        "`model.evaluate_generator(...)` は削除されたため `model.evaluate(...)` として実行しました。",
        "`model.evaluate_generator(...)` was removed and ran as `model.evaluate(...)`."),
    "Model.predict_generator": (
        "`model.predict_generator(...)` は削除されたため `model.predict(...)` として実行しました。",
        "`model.predict_generator(...)` was removed and ran as `model.predict(...)`."),
    "Model.predict_classes": (
        "`model.predict_classes(x)` は削除されたため `np.argmax(model.predict(x), axis=-1)` として実行しました。",
        "`model.predict_classes(x)` was removed and ran as `np.argmax(model.predict(x), axis=-1)`."),
    "Model.predict_proba": (
        "`model.predict_proba(x)` は削除されたため `model.predict(x)` として実行しました。",
        "`model.predict_proba(x)` was removed and ran as `model.predict(x)`."),
    "Model.fit(workers=…)": (
        "`fit` の `workers` / `use_multiprocessing` / `max_queue_size` は Keras 3 にないため外して実行しました。消してください。",
        "`fit`'s `workers` / `use_multiprocessing` / `max_queue_size` do not exist in Keras 3 and were dropped. Delete them."),
    "Model.evaluate(workers=…)": (
        "`evaluate` の `workers` などの引数は Keras 3 にないため外して実行しました。消してください。",
        "`evaluate`'s `workers` and similar arguments do not exist in Keras 3 and were dropped. Delete them."),
    "Model.predict(workers=…)": (
        "`predict` の `workers` などの引数は Keras 3 にないため外して実行しました。消してください。",
        "`predict`'s `workers` and similar arguments do not exist in Keras 3 and were dropped. Delete them."),
    "Model.compile(metrics=str)": (
        "`compile(metrics='acc')` のような文字列は Keras 3 ではエラーになるためリストにして実行しました。"
        "`metrics=['accuracy']` と書いてください。",
        "A string `compile(metrics='acc')` fails in Keras 3 and was wrapped in a list. Write `metrics=['accuracy']`."),
    "optimizer(lr=)": (
        "オプティマイザの `lr=` は Keras 3 ではエラーになるため `learning_rate=` として実行しました。"
        "`Adam(learning_rate=0.001)` のように書いてください。",
        "The optimizer's `lr=` fails in Keras 3 and ran as `learning_rate=`. Write `Adam(learning_rate=0.001)`."),
    "optimizer(decay=)": (
        "オプティマイザの `decay=` は Keras 3 では無視されるため、Keras 2 と同じ減衰 "
        "`keras.optimizers.schedules.InverseTimeDecay(学習率, decay_steps=1, decay_rate=decay)` で実行しました。"
        "このスケジュールを `learning_rate=` に渡してください。",
        "The optimizer's `decay=` is ignored by Keras 3; it ran as Keras 2's decay, "
        "`keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=decay)`. "
        "Pass that schedule as `learning_rate=`."),
    "Iterator.next()": (
        "`g.next()` は Keras 3 のジェネレータにないため `next(g)` として実行しました。`next(g)` と書いてください。",
        "`g.next()` does not exist on Keras 3 iterators and ran as `next(g)`. Write `next(g)`."),
    "keras.utils.np_utils": (
        "`keras.utils.np_utils` は Keras 3 にないため `keras.utils` を使いました。"
        "`from keras.utils import to_categorical` と書いてください。",
        "`keras.utils.np_utils` is gone in Keras 3; `keras.utils` was used. Write `from keras.utils import to_categorical`."),
    "keras.backend.tensorflow_backend": (
        "`keras.backend.tensorflow_backend` は Keras 3 にないため代わりのものを使いました。"
        "GPU の確認は `tf.config.list_logical_devices('GPU')` で書けます。",
        "`keras.backend.tensorflow_backend` is gone in Keras 3; a stand-in was used. "
        "List GPUs with `tf.config.list_logical_devices('GPU')`."),
    "tensorflow.python.keras": (
        "`tensorflow.python.keras` は TensorFlow 内部に残った古い Keras で、TensorFlow 2.21 では学習できません。"
        "Keras 3 として実行しました。`from tensorflow.keras ...` または `import keras` と書いてください。",
        "`tensorflow.python.keras` is the old Keras left inside TensorFlow and cannot train on TensorFlow 2.21; "
        "it ran as Keras 3. Write `from tensorflow.keras ...` or `import keras`."),
}
MOVED_LAYERS = (
    "`{api}` は Keras 3 にないため `keras.layers` を使いました。`from keras.layers import ...` と書いてください。",
    "`{api}` is gone in Keras 3; `keras.layers` was used. Write `from keras.layers import ...`.")

# Import names of the packages Google Colab's runtime ships (its preinstalled list, the ones
# notebooks import). A ModuleNotFoundError for one of these is the grader's gap, not the student's.
COLAB_MODULES = frozenset("""
    absl altair astropy bs4 bokeh cachetools cloudpickle cv2 cvxpy cycler dask datasets dateutil
    dill diffusers docutils einops flax folium gdown gensim google google.colab graphviz gspread
    h5py holidays html5lib httpx huggingface_hub imageio imblearn IPython ipywidgets jax jaxlib jieba
    jinja2 joblib jsonschema keras keras_hub kiwisolver librosa lightgbm lxml markdown matplotlib
    mizani ml_dtypes mpl_toolkits multiprocess nbformat networkx nltk numba numexpr numpy oauth2client
    openai openpyxl opencv optax optree packaging pandas pandas_gbq patsy peft PIL plotly plotnine
    polars portpicker prophet psutil pyarrow pydantic pydot pygments pymc pyparsing pytz requests
    rich scipy seaborn sentence_transformers shapely six skimage sklearn soundfile spacy sqlalchemy
    statsmodels sympy tables tabulate tensorboard tensorflow tensorflow_datasets tensorflow_hub
    tensorflow_probability termcolor tf_keras tifffile timm tokenizers toolz torch torchaudio
    torchvision tqdm transformers typing_extensions umap wordcloud xarray xgboost yaml yfinance
""".split())

_MISSING = re.compile(r"No module named '([A-Za-z0-9_.]+)'")


def bridge_notes(evidence: Evidence | None, lang: str) -> list[str]:
    """One note per bridged API the notebook used, in the order first used."""
    ja = lang != "en"
    seen: list[str] = []
    for event in evidence.of("bridge") if evidence else []:
        api = event.get("api")
        if isinstance(api, str) and api not in seen:
            seen.append(api)
    notes = []
    for api in seen:
        text = BRIDGED.get(api) or tuple(t.format(api=api) for t in MOVED_LAYERS)
        prefix = "Keras 2 の書き方（採点では読み替えて実行）: " if ja else "Keras 2 code (bridged for grading): "
        notes.append(prefix + (text[0] if ja else text[1]))
    return notes


def bridged_apis(evidence: Evidence | None) -> list[str]:
    return sorted({e.get("api") for e in (evidence.of("bridge") if evidence else []) if isinstance(e.get("api"), str)})


def missing_module(error: Any) -> str | None:
    """The module a ModuleNotFoundError/ImportError names, or None."""
    if getattr(error, "ename", None) not in ("ModuleNotFoundError", "ImportError"):
        return None
    found = _MISSING.search(str(getattr(error, "evalue", "")))
    return found.group(1) if found else None


def in_colab(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in COLAB_MODULES for i in range(len(parts), 0, -1)) and \
        not (parts[0] == "google" and len(parts) > 1 and parts[1] != "colab")


def import_notes(errors: list[Any], lang: str) -> list[str]:
    """Why an import failed: not in Colab either (the notebook's), or in Colab but not here (ours)."""
    ja = lang != "en"
    notes, seen = [], set()
    for error in errors:
        module = missing_module(error)
        if module is None or module in seen:
            continue
        seen.add(module)
        if module == "google.colab" or module.startswith("google.colab."):
            notes.append(
                "`google.colab`（drive.mount など）は Colab の中でだけ動きます。採点環境にはないので、"
                "データは keras.datasets から読み込み、Colab 専用のセルは提出前に消してください。" if ja else
                "`google.colab` (drive.mount etc.) works only inside Colab. The grader has none: load data "
                "with keras.datasets and remove Colab-only cells before handing in.")
        elif in_colab(module):
            notes.append(
                f"`{module}` は Google Colab にはありますが採点環境にありません（採点システム側の不足です。TA が確認します）。"
                if ja else f"`{module}` is on Google Colab but missing from the grading kernel (the grader's gap; a TA will check).")
        else:
            notes.append(
                f"`{module}` は Google Colab にも入っていないパッケージです（`!pip install` が必要なもの）。"
                "採点環境ではインストールできないので、使わずに書いてください。" if ja else
                f"`{module}` is not on Google Colab either (it needs `!pip install`). "
                "The grader cannot install packages: write the notebook without it.")
    return notes
