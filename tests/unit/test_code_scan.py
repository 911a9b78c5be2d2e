"""The static scan of submitted code (grader.judge.code_scan): each way of reaching into the grader or the
runtime is found, and no honest notebook we have produces a single finding."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from grader.judge.code_scan import RULES, scan_notebook, scan_source

ROOT = Path(__file__).resolve().parents[2]
HONEST = sorted([*ROOT.glob("tests/fixtures/notebooks/*.ipynb"), *ROOT.glob("submissions/*.ipynb"),
                 *ROOT.glob("tests/fixtures/realistic/*.ipynb"),
                 ROOT / "reference/kadai8/reference.ipynb", ROOT / "assignments/kadai8/template.ipynb",
                 ROOT / "tests/fixtures/forgery/honest_extras.ipynb", ROOT / "tests/fixtures/forgery/lazy.ipynb"])


def rules(source: str) -> set[str]:
    return {f.rule for f in scan_source(source)}


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_no_honest_notebook_has_a_finding(path: Path) -> None:
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - not_json.ipynb: nothing to scan, nothing runs
        pytest.skip("not a notebook")
    assert scan_notebook(notebook) == []


@pytest.mark.parametrize("source, rule", [
    ("import keras\nh = keras.Model.fit.__closure__[0].cell_contents", "introspect"),
    ("f = model.fit\nprint(f.__globals__['harness'])", "introspect"),
    ("import gc\nobjs = gc.get_objects()", "introspect"),
    ("from gc import get_referrers as refs\nrefs(model)", "introspect"),
    ("import sys\nframe = sys._getframe(1)", "introspect"),
    ("import inspect\nfor f in inspect.stack(): print(f.frame.f_locals)", "introspect"),
    ("def hook(frame, event, arg):\n    return hook\nimport sys\nsys.settrace(hook)", "trace"),
    ("get_ipython().events.register('pre_run_cell', lambda info: None)", "trace"),
    ("ip = get_ipython()\nip.input_transformers_post.append(lambda lines: lines)", "trace"),
    ("import ctypes\nctypes.memmove(0, 0, 0)", "ctypes"),
    ("with open('/proc/self/mem', 'rb') as f:\n    pass", "evidence"),
    ("!cat /proc/1/maps", "evidence"),
    ("import grader_kernel", "grader"),
    ("from grader.kernel.grader_kernel import Harness", "grader"),
    ("import sys\nsys.modules['keras'] = None", "modules"),
    ("import sys\nsys.modules.pop('numpy')", "modules"),
    ("import importlib, keras\nimportlib.reload(keras)", "modules"),
    ("import keras\nkeras.Model.fit = lambda self, *a, **k: None", "patch"),
    ("from keras.models import Sequential\nSequential.evaluate = lambda *a, **k: [0, 1]", "patch"),
    ("import numpy as np\nnp.argmax = lambda *a, **k: 0", "patch"),
    ("import tensorflow as tf\ntf.keras.Model.predict = None", "patch"),
    ("model.save = lambda path, *a, **k: other.save(path)", "patch"),
    ("model.optimizer.iterations.assign(0)", "patch"),
    ("import keras\nsetattr(keras.Model, 'fit', my_fit)", "patch"),
    ("from keras.datasets import fashion_mnist\nfashion_mnist.load_data = lambda: fake", "patch"),
    ("from keras.src.saving import saving_lib\nsaving_lib.save_model = lambda *a, **k: None", "patch"),
    ("import keras.src.legacy.preprocessing.image as kpi\nkpi.NumpyArrayIterator.next = None", "patch"),
    ("exec(open('payload.txt').read())", "dynamic"),
    ("eval('1 + 1')", "dynamic"),
    ("fn = getattr(keras.Model.fit, '__clo' + 'sure__')", "dynamic"),
    ("fn = getattr(model.fit, '__wrapped__')", "introspect"),
    ("import os, json\ncfg = json.load(open(os.environ['GRADER_HARNESS_CONFIG']))", "evidence"),
    ("open('../evidence/events.jsonl', 'a').write('{}')", "evidence"),
    ("%%writefile helper.py\nimport gc\ngc.get_objects()", "introspect"),
    ("%%time\nimport sys\nsys.settrace(None)", "trace"),
])
def test_each_way_into_the_grader_is_found(source: str, rule: str) -> None:
    assert rule in RULES
    assert rule in rules(source), scan_source(source)


@pytest.mark.parametrize("source", [
    "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.rcParams['figure.figsize'] = (8, 4)",
    "import sys\nIN_COLAB = 'google.colab' in sys.modules",
    "!pip install -q tensorflow\n!nvidia-smi\n!cat /proc/cpuinfo",
    "import numpy as np\nnp.random.seed(0)\nimport tensorflow as tf\ntf.random.set_seed(0)",
    "model.trainable = False\nfor layer in model.layers:\n    layer.trainable = True",
    "history = model.fit(x, y)\nprint(getattr(history, 'history'))",
    "class Stop(keras.callbacks.Callback):\n    def on_epoch_end(self, epoch, logs=None):\n        self.model.stop_training = True",
    "class Net(keras.Model):\n    def __init__(self):\n        super().__init__()\n        self.call_count = 0\n    def call(self, x):\n        return x",
    "import re\npattern = re.compile('a+')\nmodel.compile(optimizer='adam', loss='mse')",
    "import pandas as pd\npd.options.display.max_rows = 100",
    # the old Colab GPU workaround real students copy (tests/fixtures/realistic)
    "import keras.backend.tensorflow_backend as tfback\ntfback._get_available_gpus = lambda: []",
    "for name in ['loss', 'accuracy']:\n    print(name, getattr(history, 'history')[name][-1])",
    "import os\nos.kill(os.getpid(), 9)  # Colab: restart the runtime",
    "model.save('my_model.keras')\nreloaded = keras.models.load_model('my_model.keras')",
    "def f(:\n    pass",  # a syntax error: IPython would not run it either
])
def test_honest_code_is_not_a_finding(source: str) -> None:
    assert scan_source(source) == []


def test_imports_carry_over_between_cells_and_findings_say_where() -> None:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# x"),
        nbformat.v4.new_code_cell("import keras as K"),
        nbformat.v4.new_code_cell("print(1)\nK.Model.fit = None"),
    ])
    (finding,) = scan_notebook(notebook)
    assert (finding.rule, finding.cell, finding.line, finding.code) == ("patch", 2, 2, "K.Model.fit = None")
