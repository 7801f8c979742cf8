"""The architecture's rules, measured from the source with ast, and the repository's layout."""
import ast
import functools
import os

import pytest
import torch

from lintorch.objective import LOSSES


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lintorch")

MAX_TOP_MODULES, MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_CLASS_LINES, MAX_LOSS_MODULES = 16, 400, 70, 150, 4
LONG_MODULES = {"lintorch/functional.py"}             # the math: every forward/backward pair in one file
PARSERS = set()                                       # argparse builders: a flag list, however long
# settings declared as dataclass fields (default, bounds, help each), however many: the flag list that
# was config.get_args_parser's now sits here (the parser is generated from it), and its field lines
# count towards no class's or module's length
DECLARATIONS = {("lintorch/config.py", "TrainConfig")}


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


def _length(node):
    return node.end_lineno - node.lineno + 1


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


def test_at_most_16_modules_directly_in_the_package():
    top = sorted(rel for rel, _, _ in modules().values() if rel.count("/") == 1)
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in lintorch/: {top}"


def _declared(rel, tree):
    """The lines of the DECLARATIONS' field declarations in a module's tree."""
    return sum(_length(f) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
               and (rel, node.name) in DECLARATIONS for f in node.body if isinstance(f, ast.AnnAssign))


def test_no_module_over_400_lines():
    long = {rel: src.count("\n") - _declared(rel, tree) for rel, src, tree in modules().values()
            if src.count("\n") - _declared(rel, tree) > MAX_MODULE_LINES and rel not in LONG_MODULES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_70_lines_but_the_parsers():
    long = [(rel, node.name, _length(node)) for rel, _, tree in modules().values() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _length(node) > MAX_FUNCTION_LINES
            and (rel, node.name) not in PARSERS]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_class_over_150_lines():
    long = [(rel, node.name, _length(node)) for rel, _, tree in modules().values() for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and _length(node) - _declared(rel, node) > MAX_CLASS_LINES]
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"


def _loss_comparisons(tree):
    """Comparisons (==, !=, in, not in, ...) with a loss name as a string constant, alone or in a
    tuple, list or set."""
    hits = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                elements = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                if any(isinstance(e, ast.Constant) and e.value in LOSSES for e in elements):
                    hits += 1
    return hits


def test_the_loss_name_is_compared_in_at_most_4_modules():
    where = {rel: n for rel, _, tree in modules().values() if (n := _loss_comparisons(tree))}
    assert len(where) <= MAX_LOSS_MODULES, f"the loss name compared as a string in {len(where)} modules: {where}"


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
