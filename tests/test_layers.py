"""Layers point one way: no module imports from a higher layer, not even inside a function."""
import ast
import os

from conftest import ROOT

LAYERS = [  # bottom first; a module may import from its own layer and the ones before it
    {"errors", "progress", "config", "files"},
    {"data", "models"},
    {"training", "analysis"},
    {"run"},
    {"train", "cli", "benchmark", "visualization", "status", "results", "reproduce"},
]
ALIASES = {"fullbatch/__init__.py", "fullbatch/models/modules.py"}  # forward public names to where they live


def _layer(module):
    top = module.split(".")[1]
    return next(index for index, names in enumerate(LAYERS) if top in names)


def _imports(path):
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module == "fullbatch":  # from fullbatch import outputs
            yield from (f"fullbatch.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fullbatch."):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("fullbatch."))


def test_no_module_imports_from_a_higher_layer():
    package = os.path.join(ROOT, "fullbatch")
    checked, climbing = 0, []
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, ROOT)
            if not name.endswith(".py") or relative in ALIASES:
                continue
            parts = os.path.relpath(path, package)[:-3].split(os.sep)
            own = _layer("fullbatch." + (parts[0] if parts[0] != "__init__" else "errors"))
            for module in _imports(path):
                checked += 1
                if _layer(module) > own:
                    climbing.append(f"{relative} imports {module}")
    assert checked > 50 and not climbing, climbing  # the walk found the imports, and none climbs


def test_every_folder_is_a_layer_that_says_what_it_may_import():
    """A new folder must be placed in LAYERS, and its docstring tells a reader where it sits."""
    package = os.path.join(ROOT, "fullbatch")
    folders = sorted(name for name in os.listdir(package) if os.path.isfile(os.path.join(package, name, "__init__.py")))
    assert len(folders) >= 9, folders
    for name in folders:
        _layer(f"fullbatch.{name}")  # raises StopIteration for a folder in no layer
        docstring = ast.get_docstring(ast.parse(open(os.path.join(package, name, "__init__.py")).read()))
        assert docstring and "may import" in docstring.lower(), name


def test_the_package_root_keeps_at_most_eight_modules():
    package = os.path.join(ROOT, "fullbatch")
    modules = sorted(name for name in os.listdir(package) if name.endswith(".py"))
    assert "__init__.py" in modules and len(modules) <= 8, modules
    for name in modules:
        if name != "__init__.py":
            _layer(f"fullbatch.{name[:-3]}")
