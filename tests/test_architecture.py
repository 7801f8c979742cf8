"""The architecture's rules, measured from the source with ast: no import cycle, no upward import
(each module imports only its own layer and the layers below), the library core reaches no command,
the checkpoint's keys are named in one module, the loss registry is asked where a name becomes a loss;
and the repository's layout."""
import ast
import functools
import os

import pytest
import torch

from lintorch.objective import LOSSES


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lintorch")

# The layers, lowest first: a module imports only from its own layer and the layers below it. A name
# stands for the module and, for a package, everything in it; the most specific name decides.
LAYERS = [
    ("names and errors", ["lintorch.names", "lintorch.errors", "lintorch.training.devices",
                          "lintorch.features.settings"]),       # the extractors' settings, declared torch-free
    ("the maths", ["lintorch.functional", "lintorch.objective", "lintorch.model", "lintorch.optim"]),
    ("what the maths is checked and written with", ["lintorch.verify", "lintorch.cli", "lintorch.output"]),
    ("the settings", ["lintorch.config"]),
    ("data and features", ["lintorch.data", "lintorch.features"]),
    ("the library core", ["lintorch.training"]),
    ("the Python API", ["lintorch.api", "lintorch.probe"]),
    ("the commands", ["lintorch", "lintorch.__main__", "lintorch.train", "lintorch.evaluate", "lintorch.predict",
                      "lintorch.extract", "lintorch.doctor", "lintorch.gradcheck", "lintorch.bench"]),
]
CORE = "lintorch.training.fit"                   # fit(config, data): what LinearProbe and train.py share

CHECKPOINT = "lintorch/output/checkpoint.py"     # builds and reads the checkpoint's dict, and only it
# Checkpoint keys that are also ordinary keys of other dicts: a run's config and metrics.json (config,
# epoch, best_epoch, history, loss, features, classes, image_size), an extractor's settings and state
# (image_size, model, state), an optimizer's parameters (weight, bias, momentum), a feature folder's
# and a cache's header (format, version), a data-parallel rank's partial sums (partial).
WORDS_OF_OTHER_DICTS = {"config", "epoch", "best_epoch", "history", "loss", "features", "classes", "image_size",
                        "model", "state", "weight", "bias", "momentum", "format", "version", "partial"}

# Where a loss name becomes a loss: the modules that import the registry, each for its reason.
REGISTRY = "lintorch/objective.py"
REGISTRY_READERS = {
    "lintorch/__init__.py": "exports each loss's function",
    "lintorch/config.py": "the --loss choices and each loss's tuned lr and reg",
    "lintorch/api/keywords.py": "which keywords belong to which loss",
    "lintorch/api/predictor.py": "predict_proba for the probabilistic losses",
    "lintorch/output/checkpoint.py": "a saved loss name is one the registry knows",
    "lintorch/output/hparams.py": "the loss's own settings as HPARAMS columns",
    "lintorch/probe.py": "the loss's own settings among get_params",
    "lintorch/predict.py": "probabilities for the probabilistic losses, scores for the others",
    "lintorch/doctor.py": "every registered loss learns",
    "lintorch/bench/contenders.py": "a contender trains with its loss's tuned lr and reg",
}


@functools.lru_cache(maxsize=None)
def modules():
    """{dotted name: (path relative to the repository, source, ast)} of every module in lintorch/."""
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
                parts = rel[:-3].split("/")
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                with open(path, encoding="utf-8") as fh:
                    src = fh.read()
                out[".".join(parts)] = (rel, src, ast.parse(src, rel))
    return out


def _imports(name):
    """The lintorch modules that module `name` imports, anywhere in it (lazy imports too)."""
    mods = modules()
    rel, _, tree = mods[name]
    package = name.split(".") if rel.endswith("__init__.py") else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in mods else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in mods and m != name}


def _graph():
    """Module -> what importing it imports: its imports, and the packages above each of them
    (importing a.b.c runs a/__init__ and a/b/__init__), except its own packages."""
    graph = {}
    for name in modules():
        deps = set(_imports(name))
        for target in list(deps):
            parts = target.split(".")
            for i in range(2, len(parts)):
                package = ".".join(parts[:i])
                if package in modules() and package != name and not name.startswith(package + "."):
                    deps.add(package)
        graph[name] = deps
    return graph


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"
    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, f"import cycles: {cycles}"


def test_no_leaf_imports_its_own_package_init():
    own = [(name, target) for name, (rel, _, _) in modules().items() if not rel.endswith("__init__.py")
           for target in _imports(name) if target == name.rsplit(".", 1)[0] != "lintorch"]
    assert not own, f"modules importing their own package's __init__: {own}"


def _layer(name):
    """The index in LAYERS of module `name`: the most specific listed name that is it or a package above
    it ("lintorch" itself stands for the package's __init__ alone), None where none is."""
    found = [(len(listed), i) for i, (_, names) in enumerate(LAYERS) for listed in names
             if name == listed or (listed != "lintorch" and name.startswith(listed + "."))]
    return max(found)[1] if found else None


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in modules() if _layer(name) is None)
    assert not unplaced, f"modules in no layer of LAYERS (place each where its imports put it): {unplaced}"


def test_no_upward_import():
    upward = [f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
              for name in sorted(modules()) for target in sorted(_imports(name))
              if None not in (_layer(name), _layer(target)) and _layer(target) > _layer(name)]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def _reached(name):
    """Every module that importing `name` imports, directly or through others."""
    graph, seen, todo = _graph(), set(), [name]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_library_core_reaches_no_api_and_no_command():
    above = sorted(m for m in _reached(CORE) if _layer(m) is not None and _layer(m) > _layer(CORE))
    assert not above, f"{CORE} imports, directly or through others, modules above the core: {above}"


def _module_tree(rel):
    return next(tree for path, _, tree in modules().values() if path == rel)


def _keys_named(tree):
    """String constants used as a dict's keys: d["k"], d.get("k"), d.pop("k"), d.setdefault("k"), {"k": v}."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            yield node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
              and node.func.attr in ("get", "pop", "setdefault") and isinstance(node.args[0], ast.Constant)):
            yield node.args[0].value
        elif isinstance(node, ast.Dict):
            yield from (k.value for k in node.keys if isinstance(k, ast.Constant))


def _checkpoint_keys():
    """The keys of the dicts output/checkpoint.py writes: its dict literals' and d["key"] = ... stores."""
    keys = set()
    for node in ast.walk(_module_tree(CHECKPOINT)):
        if isinstance(node, ast.Dict):
            keys.update(k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
        elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
              and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            keys.add(node.slice.value)
    return keys


def test_only_the_checkpoint_module_names_the_checkpoints_keys():
    own = _checkpoint_keys() - WORDS_OF_OTHER_DICTS
    assert {"kind", "best_val_acc", "in_features"} <= own, own          # the rule has keys to watch
    named = {rel: sorted(own & set(_keys_named(tree))) for rel, _, tree in modules().values() if rel != CHECKPOINT}
    named = {rel: keys for rel, keys in named.items() if keys}
    assert not named, f"modules naming the checkpoint's keys, which only {CHECKPOINT} may: {named}"


def test_the_checkpoint_format_is_named_in_one_module():
    from lintorch.output.checkpoint import FORMAT
    where = sorted({rel for rel, _, tree in modules().values() for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and node.value == FORMAT})
    assert where == [CHECKPOINT], f"the checkpoint's format {FORMAT!r} named in {where}"


def _reads_registry(tree):
    return any((isinstance(node, ast.ImportFrom) and any(a.name == "LOSSES" for a in node.names))
               or (isinstance(node, ast.Attribute) and node.attr == "LOSSES") for node in ast.walk(tree))


def test_the_loss_registry_is_read_where_a_name_becomes_a_loss():
    readers = {rel for rel, _, tree in modules().values() if rel != REGISTRY and _reads_registry(tree)}
    assert readers == set(REGISTRY_READERS), (
        f"modules reading objective.LOSSES: {sorted(readers)}; REGISTRY_READERS says why each may "
        f"(new: {sorted(readers - set(REGISTRY_READERS))}, gone: {sorted(set(REGISTRY_READERS) - readers)})")


def _loss_branches(tree):
    """A loss's behaviour asked by its name instead of its registry entry: a comparison == / != with
    a loss name, `in` a literal collection holding one, or LOSSES["name"]."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, (ast.Eq, ast.NotEq)):
                    sides = [left, right]
                elif isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                    sides = right.elts
                else:
                    sides = []
                if any(isinstance(e, ast.Constant) and e.value in LOSSES for e in sides):
                    yield node.lineno
                left = right
        elif (isinstance(node, ast.Subscript) and ast.unparse(node.value).split(".")[-1] == "LOSSES"
              and isinstance(node.slice, ast.Constant)):
            yield node.lineno


def test_no_module_branches_on_a_loss_name():
    where = {rel: lines for rel, _, tree in modules().values() if rel != REGISTRY
             and (lines := list(_loss_branches(tree)))}
    assert not where, f"a loss name compared outside {REGISTRY} (ask LOSSES[name] instead): {where}"


def test_one_folder_named_bench():
    found = []
    for folder, dirs, _ in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "runs", "node_modules")
                   and not (folder == ROOT and d == "tests")]      # tests/ mirrors the package's folders
        found += [os.path.relpath(os.path.join(folder, d), ROOT) for d in dirs if d == "bench"]
    assert len(found) == 1, f"folders named bench: {found}"


def test_build_folder_is_ignored():
    import subprocess

    from tests.helpers import REPO
    p = subprocess.run(["git", "check-ignore", "-q", "build/lib/x.py"], cwd=REPO)
    if p.returncode == 128:
        pytest.skip("not a git checkout")
    assert p.returncode == 0


def test_readme_says_how_to_take_the_cpu_build_and_the_requirements_accept_it():
    """PyTorch's CPU wheels are versioned 2.14.1+cpu: requirements.txt's bounds must accept them (and the
    plain CUDA-build versions), or pip would replace the CPU build with PyPI's CUDA one."""
    from packaging.requirements import Requirement

    from tests.helpers import REPO
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (REPO / "README.md").read_text()
    reqs = {r.name: r for r in (Requirement(line.split("#")[0]) for line in (REPO / "requirements.txt").read_text()
                                .splitlines() if line.split("#")[0].strip())}
    torch_version = torch.__version__.split("+")[0]
    import torchvision
    vision = torchvision.__version__.split("+")[0]
    for name, v in (("torch", torch_version), ("torchvision", vision)):
        assert reqs[name].specifier.contains(v) and reqs[name].specifier.contains(f"{v}+cpu"), name
