"""The refrnn modules import without cycles, and each imports on its own.

The graph is read from the source: every import a module makes while it is being imported (module
level, not inside functions, where imports are lazy on purpose). An import of one's own package
(``from . import sibling``) is an edge to the sibling, not to the package, which is initialising.
"""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import refrnn

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    found = {"refrnn": Path(refrnn.__file__)}
    for info in pkgutil.walk_packages(refrnn.__path__, "refrnn."):
        if info.name.endswith("__main__"):  # running it is the point of it
            continue
        spec = info.module_finder.find_spec(info.name)
        found[info.name] = Path(spec.origin)
    return found


def _import_time_statements(body):
    """The statements of a module body that run at import: into if/try/with blocks, not into defs."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list) and not isinstance(node, ast.ClassDef):
                yield from _import_time_statements(inner)


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _import_time_statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        # Importing from one's own package (an ancestor) is served by the initialising package.
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_module_import_graph_is_acyclic():
    graph = _edges(_modules())
    assert len(graph) > 50 and graph["refrnn.bench.cli"] >= {"refrnn.bench.workloads", "refrnn.bench.registry"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


_ALONE = r"""
import importlib, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # the old paths warn by design
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "refrnn" or m.startswith("refrnn.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as err:
        if "numba-cuda" not in str(err):  # the GPU modules say so when the optional extra is missing
            failed.append(f"{name}: {type(err).__name__}: {err}")
    except Exception as err:  # noqa: BLE001 - reported below, by module
        failed.append(f"{name}: {type(err).__name__}: {err}")
print("\n".join(failed) or "ok")
"""


def test_every_module_imports_on_its_own():
    """Each module from a state with no refrnn module loaded (third-party libraries stay, so the run takes
    seconds, not one interpreter start per module): no module depends on another having been imported first."""
    names = sorted(_modules())
    done = subprocess.run([sys.executable, "-c", _ALONE, *names], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok", done.stdout
