"""Static scan of a submission's code for reaching into the grader or the runtime (trusted side).

Whatever runs in the kernel can read and rewrite the kernel-side harness, so what the harness
records is only as good as the notebook's good faith. This scan is the tripwire: it reads the code
cells as data (IPython syntax turned into Python by IPython's own transformer, nothing executed)
and reports constructs an honest 課題8 notebook has no use for:

  grader      importing the harness or the grader (grader_kernel, grader.*)
  introspect  function internals and frames: __closure__, __globals__, __code__, cell_contents,
              f_back / f_locals …, gc.get_objects / get_referrers, sys._getframe, inspect.stack …
  ctypes      ctypes / cffi (raw memory), /proc/<pid>/mem and friends
  trace       sys.settrace / setprofile, audit hooks, IPython event hooks and input transformers
  modules     rewriting sys.modules, importlib.reload
  patch       assigning attributes of Keras / TensorFlow / NumPy / scikit-learn / builtins (monkeypatching,
              e.g. `keras.Model.fit = …`), or replacing a model's or optimizer's methods on the instance
              (`model.save = …`); resetting the optimizer's step counter
  dynamic     exec / eval / compile / __import__ of strings, getattr with a computed name
  evidence    naming the harness's files or settings (events.jsonl, GRADER_HARNESS_CONFIG, …)

It is precise rather than complete: every honest notebook we have (tests/fixtures, submissions/,
the reference, the template) produces no finding, and a determined student can always write what
a static scan does not recognise. What cannot be hidden from it is measured elsewhere (the
public/private accuracy gap, the saved model's own step counter).
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

RULES: dict[str, tuple[str, str]] = {
    "grader": ("採点用ハーネス／採点システムのモジュールを読み込んでいます", "imports the grading harness or the grader"),
    "introspect": ("関数の内部（クロージャ・グローバル変数）や実行中のフレーム・全オブジェクトを参照しています",
                   "reaches into function internals, frames or every live object"),
    "ctypes": ("ctypes などでプロセスのメモリに直接触れています", "touches process memory directly (ctypes, /proc/…/mem)"),
    "trace": ("トレース関数や IPython のフック・入力変換を登録しています", "installs trace functions or IPython hooks / input transformers"),
    "modules": ("読み込み済みモジュール（sys.modules）を書き換えています", "rewrites loaded modules (sys.modules, reload)"),
    "patch": ("ライブラリやモデルのメソッドを置き換えています（モンキーパッチ）",
              "replaces library or model methods (monkeypatching)"),
    "dynamic": ("文字列からコードを実行しています（exec / eval など）", "runs code built from strings (exec / eval …)"),
    "evidence": ("採点用の記録ファイルや設定を名指ししています", "names the grader's evidence files or settings"),
}

LIBRARIES = {"keras", "tensorflow", "tf_keras", "numpy", "sklearn", "scipy", "h5py", "builtins", "IPython",
             "ipykernel", "jupyter_client", "zmq", "grader", "grader_kernel"}
GRADER_MODULES = ("grader", "grader_kernel")
INTERNAL_ATTRIBUTES = {"__closure__", "__globals__", "__code__", "cell_contents", "__kwdefaults__", "__defaults__",
                       "__wrapped__", "__subclasses__", "__builtins__", "f_back", "f_locals", "f_globals", "f_code",
                       "gi_frame", "cr_frame", "ag_frame", "tb_frame"}
FORBIDDEN = {
    "introspect": {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._getframe", "sys._current_frames",
                   "inspect.currentframe", "inspect.stack", "inspect.getouterframes", "inspect.getinnerframes",
                   "inspect.getclosurevars", "inspect.trace", "inspect.getmembers_static"},
    "trace": {"sys.settrace", "sys.setprofile", "sys.addaudithook", "threading.settrace", "threading.setprofile",
              "threading.settrace_all_threads", "threading.setprofile_all_threads"},
    "modules": {"importlib.reload", "imp.reload"},
    "dynamic": {"builtins.exec", "builtins.eval", "builtins.compile", "builtins.__import__", "importlib.import_module",
                "importlib.__import__", "runpy.run_path", "runpy.run_module", "types.FunctionType", "types.CodeType",
                "marshal.loads", "code.InteractiveInterpreter", "code.interact"},
}
DYNAMIC_BUILTINS = {"exec", "eval", "compile", "__import__"}
RAW_MEMORY_MODULES = {"ctypes", "_ctypes", "cffi", "_cffi_backend"}
# Methods of a Keras model, optimizer or generator that a notebook might replace on an instance.
MODEL_METHODS = {"fit", "evaluate", "predict", "save", "save_weights", "load_weights", "get_weights", "set_weights",
                 "count_params", "get_config", "train_on_batch", "test_on_batch", "predict_on_batch", "train_step",
                 "test_step", "predict_step", "call", "__call__", "apply", "apply_gradients", "flow",
                 "_get_batches_of_transformed_samples", "iterations", "_iterations"}
# Module-level functions the harness traces or the saving path calls.
TRACED_FUNCTIONS = {"load_data", "train_test_split", "save_model", "load_model", "set_random_seed", "to_categorical",
                    "get_tf_dataset", "__init__", "__getattr__"}
IPYTHON_HOOKS = {"input_transformers_post", "input_transformers_cleanup", "ast_transformers", "run_cell",
                 "run_cell_async", "run_code", "user_ns_hidden"}
SYS_MODULES_MUTATORS = {"pop", "update", "setdefault", "clear", "popitem", "__setitem__", "__delitem__"}
EVIDENCE_WORDS = re.compile(r"events\.jsonl|GRADER_HARNESS_CONFIG|harness\.json|grader-evidence|grader_kernel|"
                            r"batch_flow\d|model_fit\d|/proc/[^/\s'\"]+/(?:mem|maps|environ)\b|/dev/mem\b")
PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug", "python", "python3", "writefile", "file"}
SHELL_CELL_MAGICS = {"bash", "sh", "script", "system"}


@dataclass(frozen=True)
class ScanFinding:
    rule: str
    cell: int  # index of the notebook cell
    line: int  # line in that cell (after IPython's transformation; the same for ordinary code)
    code: str  # the line itself, shortened

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan_notebook(notebook: Any) -> list[ScanFinding]:
    """Every finding in the notebook's code cells, in cell order."""
    found: list[ScanFinding] = []
    aliases: dict[str, str] = {}  # imports carry over from cell to cell, as in the kernel
    for index, cell in enumerate(getattr(notebook, "cells", None) or []):
        if cell.get("cell_type") == "code":
            found.extend(scan_source(str(cell.get("source", "")), index, aliases))
    return found


def scan_source(source: str, cell: int = 0, aliases: dict[str, str] | None = None) -> list[ScanFinding]:
    python = to_python(source)
    try:
        tree = ast.parse(python)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []  # IPython would not run it either
    visitor = _Visitor(cell, python.splitlines(), {} if aliases is None else aliases)
    try:
        visitor.visit(tree)
    except RecursionError:  # absurdly deep nesting: say so rather than crash the grading
        visitor.report("dynamic", tree)
    return sorted(set(visitor.found), key=lambda f: (f.cell, f.line, f.rule))


def to_python(source: str) -> str:
    """IPython syntax (%magics, !shell, ?help) as the Python IPython itself would run."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - without IPython (or on its failure): comment the magics out
        return "\n".join("#" + line if line.lstrip()[:1] in ("%", "!") else line for line in source.splitlines())


class _Visitor(ast.NodeVisitor):
    def __init__(self, cell: int, lines: list[str], aliases: dict[str, str]) -> None:
        self.cell, self.lines = cell, lines
        self.aliases = aliases  # local name → dotted module path it was imported as
        self.found: list[ScanFinding] = []
        self.in_class = 0

    def report(self, rule: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", 1)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        self.found.append(ScanFinding(rule, self.cell, line, code[:160]))

    # -- names ----------------------------------------------------------------------------
    def dotted(self, node: ast.AST) -> str | None:
        """`np.random.seed` → "numpy.random.seed" (through import aliases); None if not a name chain."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def rooted_in_library(self, node: ast.AST) -> bool:
        name = self.dotted(node)
        if name is None:
            return False
        root = name.split(".")[0]
        base = node
        while isinstance(base, ast.Attribute):
            base = base.value
        return root in LIBRARIES and isinstance(base, ast.Name) and base.id in self.aliases

    # -- imports --------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(alias.name, node)
            bound = alias.asname or alias.name.split(".")[0]
            self.aliases[bound] = alias.name if alias.asname else alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self.check_module(module, node)
        for alias in node.names:
            qualified = f"{module}.{alias.name}" if module else alias.name
            self.check_module(qualified, node)
            self.check_name(qualified, node)
            self.aliases[alias.asname or alias.name] = qualified

    def check_module(self, module: str, node: ast.AST) -> None:
        root = module.split(".")[0]
        if root in GRADER_MODULES:
            self.report("grader", node)
        elif root in RAW_MEMORY_MODULES:
            self.report("ctypes", node)

    def check_name(self, name: str, node: ast.AST) -> None:
        for rule, names in FORBIDDEN.items():
            if name in names:
                self.report(rule, node)

    # -- references -----------------------------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in INTERNAL_ATTRIBUTES:
            self.report("introspect", node)
        if node.attr in IPYTHON_HOOKS:
            self.report("trace", node)
        if node.attr in ("register", "unregister", "callbacks") and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "events":
            self.report("trace", node)
        name = self.dotted(node)
        if name is not None:
            self.check_name(name, node)
        if node.attr in SYS_MODULES_MUTATORS and self.dotted(node.value) == "sys.modules":
            self.report("modules", node)
        if node.attr.startswith("assign") and isinstance(node.value, ast.Attribute) \
                and node.value.attr in ("iterations", "_iterations"):
            self.report("patch", node)  # resetting an optimizer's step counter
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self.report("introspect", node)
        self.check_name(self.aliases.get(node.id, node.id), node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and EVIDENCE_WORDS.search(node.value):
            self.report("evidence", node)

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        if isinstance(function, ast.Name) and function.id in DYNAMIC_BUILTINS and function.id not in self.aliases:
            self.report("dynamic", node)
        if isinstance(function, ast.Name) and function.id in ("getattr", "setattr", "delattr", "hasattr") \
                and len(node.args) >= 2:
            self.check_dynamic_attribute(function.id, node)
        if isinstance(function, ast.Attribute) and function.attr in ("__setattr__", "__delattr__") \
                and isinstance(function.value, ast.Name) and function.value.id in ("object", "type"):
            self.report("patch", node)
        if isinstance(function, ast.Attribute) and function.attr == "run_cell_magic":
            self.scan_cell_magic(node)
        if isinstance(function, ast.Attribute) and function.attr in ("system", "getoutput"):
            self.scan_shell(node.args[:1], node)
        self.generic_visit(node)

    def check_dynamic_attribute(self, which: str, node: ast.Call) -> None:
        target, name = node.args[0], node.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            if name.value in INTERNAL_ATTRIBUTES:
                self.report("introspect", node)
            elif which in ("setattr", "delattr") and (self.rooted_in_library(target) or name.value in MODEL_METHODS):
                self.report("patch", node)
            return
        if isinstance(name, (ast.BinOp, ast.JoinedStr, ast.Call, ast.Subscript)):
            self.report("dynamic", node)  # a name assembled at run time hides what it reaches
        elif which in ("setattr", "delattr") and self.rooted_in_library(target):
            self.report("patch", node)

    def scan_cell_magic(self, node: ast.Call) -> None:
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args[:3]]
        if len(args) < 3 or args[0] is None or args[2] is None:
            return
        magic, body = args[0], args[2]
        if magic in PYTHON_CELL_MAGICS:
            for inner in scan_source(body, self.cell, self.aliases):
                self.found.append(ScanFinding(inner.rule, self.cell, node.lineno + inner.line, inner.code))
        elif magic in SHELL_CELL_MAGICS:
            self.scan_shell([ast.Constant(body)], node)

    def scan_shell(self, args: Iterable[ast.AST], node: ast.AST) -> None:
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and EVIDENCE_WORDS.search(arg.value):
                self.report("evidence", node)

    # -- assignments ----------------------------------------------------------------------
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.in_class += 1
        self.generic_visit(node)
        self.in_class -= 1

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self.check_target(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.check_target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.check_target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self.check_target(target)
        self.generic_visit(node)

    def check_target(self, target: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.check_target(element)
            return
        if isinstance(target, ast.Subscript) and self.dotted(target.value) == "sys.modules":
            self.report("modules", target)
            return
        if not isinstance(target, ast.Attribute):
            return
        own = self.in_class and isinstance(target.value, ast.Name) and target.value.id == "self"
        if self.rooted_in_library(target):
            if self.patches_what_matters(target):
                self.report("patch", target)
        elif target.attr in MODEL_METHODS and not own:
            self.report("patch", target)  # e.g. model.save = …: the instance's method replaced

    def patches_what_matters(self, target: ast.Attribute) -> bool:
        """A library attribute assignment that can change what is trained, saved, evaluated or recorded:
        any attribute of a class (`keras.Model.fit`, `ImageDataGenerator.flow`), a traced function
        (`fashion_mnist.load_data`, `train_test_split`, `saving_lib.save_model`), anything of NumPy,
        builtins or the grader. Old Keras workarounds that students copy from the web
        (`tfback._get_available_gpus = …` on a backend module) are not findings."""
        parts = (self.dotted(target) or "").split(".")
        if parts[0] in ("numpy", "builtins", *GRADER_MODULES):
            return True
        if target.attr in MODEL_METHODS or target.attr in TRACED_FUNCTIONS:
            return True
        return any(part[:1].isupper() for part in parts[1:-1])  # a class on the way: its methods for everyone


def describe(rule: str, lang: str) -> str:
    ja, en = RULES.get(rule, (rule, rule))
    return en if lang == "en" else ja
