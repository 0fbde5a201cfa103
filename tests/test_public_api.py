"""The public surface of jnn, pinned: removing or renaming a public name fails here.

To add a public name, append it to its module's list in ``PUBLIC`` (and give it
a docstring: a summary line, Args / Returns, and an Example that runs). To add
a public module (``jnn/<name>.py`` or a package without a leading underscore),
give it an ``__all__`` and append an entry for it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import jnn

ROOT = Path(__file__).resolve().parent.parent

PUBLIC: dict[str, list[str]] = {
    "jnn": [
        # layers and combinators
        "Activation", "AvgPool", "BatchNorm", "Conv", "ConvTranspose", "Dense", "Dropout",
        "Elu", "Embedding", "FanInConcat", "FanInSum", "FanOut", "Flatten", "Gelu",
        "GlobalAvgPool", "GlobalMaxPool", "Identity", "Layer", "LayerNorm", "LeakyRelu",
        "LogSoftmax", "MaxPool", "MultiHeadAttention", "PositionalEmbedding", "RMSNorm", "Relu",
        "Reshape", "Selu", "Sigmoid", "Silu", "Softmax", "Softplus", "StatefulLayer", "Tanh",
        "is_stateful", "parallel", "residual", "serial", "stateful",
        # recurrent layers; deep models (remat, scan over layers)
        "Bidirectional", "GRU", "GRUCell", "LSTM", "LSTMCell", "SimpleRNN", "remat", "repeat",
        # training
        "Callback", "EarlyStopping", "FitResult", "NonFiniteError", "TrainState", "evaluate",
        "fit", "get_optimizer", "make_train_step", "predict", "summary", "compile_cache",
        "Policy", "get_policy",
        # modules and metadata
        "callbacks", "checkpoint", "distributed", "experiments", "layers", "losses", "metrics",
        "__version__",
    ],
    "jnn.callbacks": ["CSVLogger", "Callback", "EarlyStopping", "TensorBoard"],
    "jnn.checkpoint": [
        "Checkpoint", "CheckpointError", "FORMAT_VERSION", "all_checkpoints", "latest",
        "restore", "restore_latest", "save",
        "CheckpointMismatchError", "check_directory",
    ],
    "jnn.cli": ["main"],
    "jnn.distributed": [
        "DATA_AXIS", "TIMEOUT", "data_sharding", "gather", "initialize", "make_mesh",
        "param_shardings", "process_shard", "replicated", "shard_params",
    ],
    "jnn.experiments": [
        "Bootstrap", "KFold", "Run", "SweepResult", "Table", "bootstrap_weights",
        "kfold_weights", "run_keys", "sweep",
        "Choice", "IntUniform", "LogUniform", "PBT", "SuccessiveHalving", "Uniform",
    ],
    "jnn.export": [
        "FORMAT_VERSION", "MAGIC", "OnnxPredictor", "Predictor", "load", "save", "save_onnx",
        "ALLOWED_CUSTOM_CALLS", "ExportError", "custom_call_targets", "file_sha256",
    ],
    "jnn.layers": [
        "ACTIVATIONS", "Activation", "AvgPool", "BatchNorm", "Conv", "ConvTranspose", "Dense",
        "Dropout", "Elu", "Embedding", "FanInConcat", "FanInSum", "FanOut", "Flatten", "Gelu",
        "GlobalAvgPool", "GlobalMaxPool", "Identity", "Layer", "LayerNorm", "LeakyRelu",
        "LogSoftmax", "MaxPool", "MultiHeadAttention", "PositionalEmbedding", "RMSNorm", "Relu",
        "Reshape", "Selu", "Sigmoid", "Silu", "Softmax", "Softplus", "StatefulLayer", "Tanh",
        "attention_mask", "get_activation", "is_stateful", "parallel", "residual", "serial",
        "LayerSpec", "describe", "spec_of",
        "sigmoid", "stateful",
        "Bidirectional", "GRU", "GRUCell", "LSTM", "LSTMCell", "SimpleRNN", "remat", "repeat",
        "sequence_mask",
    ],
    "jnn.losses": [
        "bce", "bce_with_logits", "categorical_crossentropy", "cross_entropy", "get", "mae",
        "mse",
    ],
    "jnn.metrics": [
        "accuracy", "binary_accuracy", "categorical_accuracy", "get",
        "AUC", "F1", "MAE", "R2", "RMSE", "ConfusionMatrix", "Metric", "Precision", "Recall",
        "TopKAccuracy",
    ],
    "jnn.serve": ["DEFAULT_MAX_BODY_BYTES", "create_app", "load_model", "serve"],
    "jnn.summary": ["Summary", "SummaryRow", "format_table", "summary"],
    "jnn.train": [
        "Callback", "EarlyStopping", "FitResult", "NonFiniteError", "TrainState", "evaluate",
        "fit", "get_optimizer", "make_train_step", "predict", "compile_cache",
        "Policy", "get_policy",
    ],
}  # fmt: skip


PROPERTIES: set[str] = set()  # qualified names of public properties, filled below
METHODS: set[str] = set()  # and of public methods


def public_submodules() -> list[str]:
    """``jnn.<name>`` for every module or package of jnn without a leading underscore."""
    return sorted(
        f"jnn.{m.name}" for m in pkgutil.iter_modules(jnn.__path__) if not m.name.startswith("_")
    )


def public_objects() -> list[tuple[str, object]]:
    """``("module.name", obj)`` for every documented kind of public object, once each."""
    seen: dict[int, tuple[str, object]] = {}
    for modname in sorted(set(PUBLIC) | set(public_submodules())):
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if inspect.isfunction(obj) or inspect.isclass(obj) or _is_wrapped_function(obj):
                seen.setdefault(id(obj), (f"{modname}.{name}", obj))
                if inspect.isclass(obj):
                    for attr, member in _own_methods(obj):
                        qualname = f"{modname}.{name}.{attr}"
                        if f"{obj.__module__}.{obj.__qualname__}.{attr}" in PROPERTIES:
                            PROPERTIES.add(qualname)
                        METHODS.add(qualname)
                        seen.setdefault(id(member), (qualname, member))
    return sorted(seen.values(), key=lambda item: item[0])


def _is_wrapped_function(obj: object) -> bool:
    """jax.custom_jvp and friends: callables wrapping a documented Python function."""
    return callable(obj) and inspect.isfunction(getattr(obj, "__wrapped__", None))


def _own_methods(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties a jnn class defines itself (not tuple's, not Protocol's)."""
    out = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
            PROPERTIES.add(f"{cls.__module__}.{cls.__qualname__}.{attr}")
        if inspect.isfunction(value) and value.__module__.startswith("jnn"):
            out.append((attr, value))
    return out


@pytest.mark.parametrize("modname", sorted(PUBLIC))
def test_pinned_names_are_still_exported(modname):
    module = importlib.import_module(modname)
    exported = set(getattr(module, "__all__", ()))
    missing = [n for n in PUBLIC[modname] if n not in exported or not hasattr(module, n)]
    assert not missing, f"{modname} no longer exports {missing}: a breaking change."


@pytest.mark.parametrize("modname", public_submodules())
def test_every_public_module_is_pinned(modname):
    module = importlib.import_module(modname)
    assert isinstance(getattr(module, "__all__", None), list), f"{modname} needs an __all__."
    assert modname in PUBLIC, f"append {modname!r}: {sorted(module.__all__)} to PUBLIC."


@pytest.mark.parametrize("modname", sorted(PUBLIC))
def test_all_lists_real_unique_names(modname):
    module = importlib.import_module(modname)
    names = module.__all__
    assert len(names) == len(set(names)), f"{modname}.__all__ has duplicates."
    assert [n for n in names if not hasattr(module, n)] == []
    private = [n for n in names if n.startswith("_") and n != "__version__"]
    assert private == [], f"{modname}.__all__ exports private names {private}."


def test_top_level_names_are_the_submodules_objects():
    # jnn.X is the very object its home module defines (one source of truth).
    for modname in ("jnn.layers", "jnn.train"):
        module = importlib.import_module(modname)
        for name in set(module.__all__) & set(jnn.__all__):
            assert getattr(jnn, name) is getattr(module, name), name


def test_version_lives_in_one_place():
    from jnn._version import __version__

    assert jnn.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([a-z]+\d+)?", __version__), __version__
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "jnn._version.__version__"
    }
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in changelog, "CHANGELOG.md has no entry for this version."


def test_py_typed_marker_ships():
    assert (ROOT / "jnn" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["jnn"]


def _test_id(value):
    """The qualified name (no object reprs: addresses differ between pytest-xdist workers)."""
    return value if isinstance(value, str) else type(value).__name__


def _unannotated(fn: object) -> list[str]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    empty = inspect.Parameter.empty
    return [
        p.name
        for p in sig.parameters.values()
        if p.name not in ("self", "cls") and p.annotation is empty
    ]


@pytest.mark.parametrize(
    "qualname,obj", [o for o in public_objects() if not inspect.isclass(o[1])], ids=_test_id
)
def test_public_callables_are_annotated(qualname, obj):
    fn = getattr(obj, "__wrapped__", obj)
    assert _unannotated(fn) == [], f"{qualname}: parameters without annotations"
    assert inspect.signature(fn).return_annotation is not inspect.Parameter.empty, (
        f"{qualname}: no return annotation."
    )


@pytest.mark.parametrize(
    "qualname,cls", [o for o in public_objects() if inspect.isclass(o[1])], ids=_test_id
)
def test_public_classes_are_annotated(qualname, cls):
    """A NamedTuple annotates every field; an error is a built-in error type (catchable as
    one); any other class annotates the constructor or call it defines."""
    if hasattr(cls, "_fields"):
        missing = [f for f in cls._fields if f not in cls.__annotations__]
        assert cls._fields and missing == [], f"{qualname}: fields without annotations {missing}"
    elif issubclass(cls, Exception):
        builtin = (ValueError, TypeError, ArithmeticError, OSError, RuntimeError)
        assert issubclass(cls, builtin), f"{qualname}: derive from a built-in error type."
    else:
        own = [vars(cls)[m] for m in ("__init__", "__call__") if m in vars(cls)]
        own = [fn for fn in own if getattr(fn, "__module__", "").startswith("jnn")]
        assert own, f"{qualname}: defines neither __init__ nor __call__"
        for fn in own:
            assert _unannotated(fn) == [], f"{qualname}.{fn.__name__}: unannotated parameters"


@pytest.mark.parametrize("qualname,obj", public_objects(), ids=_test_id)
def test_public_names_are_documented(qualname, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{qualname} has no docstring."
    assert doc.splitlines()[0].strip(), f"{qualname}: the docstring must open with a summary line."
    if inspect.isclass(obj):
        if not issubclass(obj, Exception):  # an exception's summary says when it is raised
            assert ">>>" in doc, f"{qualname}: add an Example that runs (a doctest)."
        return
    if qualname in PROPERTIES:
        return  # a property's summary line is its documentation
    fn = getattr(obj, "__wrapped__", obj)
    if qualname not in METHODS:  # a method is shown by its class's example
        assert ">>>" in doc, f"{qualname}: add an Example that runs (a doctest)."
    params = [
        p.name for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")
    ]
    if params:
        assert "Args:" in doc, f"{qualname}: document its parameters in an Args: section."
        args = _section(doc, "Args")
        # "name: text", or several described together: "a, b: text".
        undocumented = [
            p
            for p in params
            if not re.search(rf"^\s*([\w*]+\s*,\s*)*\**{p}\b[\w\s,*]*:", args, re.M)
        ]
        assert undocumented == [], f"{qualname}: Args: does not describe {undocumented}."
    if inspect.signature(fn).return_annotation not in (None, "None"):
        assert "Returns:" in doc, f"{qualname}: say what it returns in a Returns: section."


def _section(doc: str, title: str) -> str:
    """The text of a Google-style section, up to the next section header."""
    match = re.search(rf"^{title}:\n(.*?)(?=^\S[^\n]*:\n|\Z)", doc, re.M | re.S)
    return match.group(1) if match else ""


def test_lazy_names_match_the_type_checking_imports():
    """jnn/__init__.py lists each public name twice (the lazy table, the typed imports): same."""
    import ast

    tree = ast.parse((ROOT / "jnn" / "__init__.py").read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    typed = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            home = f"jnn.{alias.name}" if node.module == "jnn" else node.module
            typed[alias.asname or alias.name] = home
    assert typed == jnn._LAZY


def test_import_jnn_is_lazy_and_names_resolve():
    """``import jnn`` imports no jax; names load on use; jnn.summary is the callable module."""
    import subprocess
    import sys

    code = (
        "import sys, jnn\n"
        "assert 'jax' not in sys.modules, 'import jnn imported jax'\n"
        "import jnn.summary\n"
        "assert callable(jnn.summary) and jnn.summary is sys.modules['jnn.summary']\n"
        "assert jnn.summary.Summary.__name__ == 'Summary'\n"
        "from jnn import Dense, losses\n"
        "assert jnn.Dense is Dense and losses is sys.modules['jnn.losses']\n"
        "assert set(jnn.__all__) <= set(dir(jnn))\n"
        "try:\n"
        "    jnn.Dnese\n"
        "except AttributeError as err:\n"
        "    assert 'Dnese' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
