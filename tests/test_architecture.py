"""The package's layers (docs/architecture.md), checked on the source: nothing here imports the package.

Bottom-up, as ``LAYERS`` lists them; a module imports only from its own layer or the ones below:

    errors < _kernel < packets < namespace < _net < topology < presets (+ cluster.py, docker.py)
        < _plugin < plugin, _cli, __main__ < the package root (__init__.py)

``packets`` sits below ``namespace``: it types against its own ``NamespaceHandle`` protocol, and the
``send``/``sr1``/``sniff``/``capture`` methods of ``Namespace`` import it (downward).  Every import counts: at module
level, inside functions, under ``TYPE_CHECKING``, the module names in ``pytest_plugins`` and the targets of the
package root's lazy ``_LAZY`` map.  Within a layer, no modules import each other in a circle (the same imports count).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_netns"

LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("_kernel",),
    ("packets",),
    ("namespace",),
    ("_net",),
    ("topology",),
    ("presets", "cluster", "docker"),
    ("_plugin",),
    ("plugin", "_cli", "__main__"),
    ("",),  # pytest_netns/__init__.py
]

# Private names (``_x``) of one package's modules used by another package, as ``module._x`` or
# ``from module import _x``: (user, owner, name).  Issue 12 replaces them with internal interfaces; remove an entry
# when its use goes, and do not add one.
KNOWN_REACH_INS: set[tuple[str, str, str]] = set()

_HANDLE = "pytest_netns._kernel.handle"
# Private *attributes* that hold a namespace's kernel side (``Namespace``, its ``NetnsHandle``) or a builder's
# plumbing, reached into from other modules before issue 12.  Other modules reach a namespace through the one
# accessor, ``_kernel.handle.handle_of(ns)``.  ``<object>._name`` with one of these names (the object not
# ``self``/``cls``) is allowed only in the modules listed.
GUARDED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "_nsfd": (),  # was Namespace's fd for the plugin's own calls: handle_of(ns).fd
    "_fd": (),
    "_rtnl": (),
    "_hosts": (),  # a namespace's hosts file: handle_of(ns).spawner
    "_namespace_created": (),  # a builder's hook: a constructor argument
    "_owned": (),
    "_handle": (_HANDLE, "pytest_netns.namespace"),  # read by handle_of
    "_cleanups": (_HANDLE,),
    "_setup_requests": (_HANDLE,),
    "_hosting": (_HANDLE,),
    "_foreign": (_HANDLE,),
    "_walkable": (_HANDLE,),
    "_watched": (_HANDLE,),
}


def _module_name(path: Path) -> str:
    parts = ["pytest_netns", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _top(module: str) -> str:
    """The package (or top-level module) a module belongs to: ``_kernel`` for ``pytest_netns._kernel.rtnl``."""
    parts = module.split(".")
    assert parts[0] == "pytest_netns", module
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    """Index in LAYERS of a module of the package."""
    for index, names in enumerate(LAYERS):
        if _top(module) in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add {_top(module)!r} to LAYERS and docs/architecture.md")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` in ``module`` reads from."""
    if node.level == 0:
        return node.module or ""
    is_package = module not in MODULES or MODULES[module].name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _strings(node: ast.AST | None) -> list[str]:
    if node is None:
        return []
    return [elt.value for elt in ast.walk(node) if isinstance(elt, ast.Constant) and isinstance(elt.value, str)]


def _assigned(node: ast.AST, name: str) -> ast.expr | None:
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
        return node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
        return node.value
    return None


def imports(module: str, tree: ast.AST | None = None) -> list[tuple[int, str]]:
    """(line, module) for every ``pytest_netns`` module that ``module`` imports."""
    if tree is None:
        tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:  # `from . import x` imports the module x when there is one
                submodule = f"{source}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else source))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            found += [(node.lineno, name) for name in _strings(_assigned(node, "pytest_plugins"))]
            lazy = _assigned(node, "_LAZY")  # {public name: module relative to the package root}
            if isinstance(lazy, ast.Dict):
                found += [(node.lineno, f"pytest_netns.{name}") for name in _strings(ast.List(lazy.values))]
    return [(line, name) for line, name in found if name == "pytest_netns" or name.startswith("pytest_netns.")]


def private_uses(module: str) -> set[tuple[str, str, str]]:
    """(module, owner, name) for each ``_name`` of another package's module used as ``alias._name`` or imported."""
    tree = ast.parse(MODULES[module].read_text())
    aliases: dict[str, str] = {}
    uses: set[tuple[str, str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif source in MODULES and alias.name.startswith("_"):
                    uses.add((module, source, alias.name))
        elif isinstance(node, ast.Import):
            aliases.update({alias.asname: alias.name for alias in node.names if alias.asname})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                uses.add((module, aliases[node.value.id], node.attr))
    return {(user, owner, name) for user, owner, name in uses if owner in MODULES and _top(owner) != _top(user)}


def guarded_attribute_uses(module: str, tree: ast.AST | None = None) -> list[tuple[int, str]]:
    """(line, expression) for each ``<object>._name`` of ``GUARDED_ATTRIBUTES`` that ``module`` may not use."""
    if tree is None:
        tree = ast.parse(MODULES[module].read_text())
    return [
        (node.lineno, ast.unparse(node))
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in GUARDED_ATTRIBUTES
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        and module not in GUARDED_ATTRIBUTES[node.attr]
    ]


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 40
    for module in MODULES:
        layer(module)


def test_every_imported_module_exists() -> None:
    missing = [f"{_where(m, line)} imports {name}" for m in MODULES for line, name in imports(m) if name not in MODULES]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module: str) -> None:
    upward = [
        f"{_where(module, line)} imports {name}: layer {LAYERS[layer(name)]} is above {LAYERS[layer(module)]}"
        for line, name in imports(module)
        if layer(name) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_new_private_reach_ins() -> None:
    found = set().union(*(private_uses(module) for module in MODULES))
    new = sorted(found - KNOWN_REACH_INS)
    assert not new, "use the owner's public or internal interface instead of:\n" + "\n".join(map(str, new))
    gone = sorted(KNOWN_REACH_INS - found)
    assert not gone, "no longer used, remove from KNOWN_REACH_INS:\n" + "\n".join(map(str, gone))


def test_no_reach_into_a_namespace() -> None:
    found = [f"{_where(m, line)}: {text}" for m in MODULES for line, text in guarded_attribute_uses(m)]
    assert not found, "reach a namespace with _kernel.handle.handle_of(ns) instead of:\n" + "\n".join(found)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules that import each other in a circle (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm; the package is small enough to recurse
        index[module] = low[module] = len(index)
        stack.append(module)
        for name in sorted(graph.get(module, ())):
            if name not in index:
                visit(name)
                low[module] = min(low[module], low[name])
            elif name in stack:
                low[module] = min(low[module], index[name])
        if low[module] == index[module]:
            component = [stack.pop()]
            while component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_no_import_cycle() -> None:
    """No two modules import each other, directly or through others (imports under TYPE_CHECKING count)."""
    graph = {module: {name for _, name in imports(module) if name != module and name in MODULES} for module in MODULES}
    cycles = import_cycles(graph)
    assert not cycles, "modules importing each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_what_they_claim() -> None:
    """Imports in functions, under TYPE_CHECKING and in pytest_plugins count, and an upward one is flagged."""
    source = (
        "if TYPE_CHECKING:\n    from ..namespace import Namespace\n"
        "def f():\n    from .. import topology\n    from . import veth\n"
        "pytest_plugins = ['pytest_netns._plugin.keep']\n"
    )
    found = {name for _, name in imports("pytest_netns._net.veth", ast.parse(source))}
    upward = {"pytest_netns.topology", "pytest_netns._plugin.keep"}
    assert found == {"pytest_netns.namespace", "pytest_netns._net.veth", *upward}
    assert {name for name in found if layer(name) > layer("pytest_netns._net.veth")} == upward
    assert layer("pytest_netns.packets.send") < layer("pytest_netns.namespace")
    assert layer("pytest_netns.cluster") == layer("pytest_netns.presets.cluster")
    # A namespace's private attributes are seen on any object but self, wherever the module does not own them.
    reach = ast.parse("def f(self, ns):\n    return ns._nsfd, self._fd, handle_of(ns).fd, ns.node._handle\n")
    assert [text for _, text in guarded_attribute_uses("pytest_netns._net.veth", reach)] == [
        "ns._nsfd",
        "ns.node._handle",
    ]
    assert [text for _, text in guarded_attribute_uses(_HANDLE, reach)] == ["ns._nsfd"]
    # A circle through TYPE_CHECKING is one, a package's __init__ importing its modules is not.
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"p": {"p.m"}, "p.m": set()}) == []
    assert imports("pytest_netns._net.veth", ast.parse("if TYPE_CHECKING:\n    from ..topology import links\n")) == [
        (2, "pytest_netns.topology.links")
    ]


@pytest.mark.parametrize("name", ["cluster", "docker"])
def test_the_0_1_module_paths_re_export_the_presets(name: str) -> None:
    alias = importlib.import_module(f"pytest_netns.{name}")
    real = importlib.import_module(f"pytest_netns.presets.{name}")
    assert alias.__all__ == real.__all__
    assert all(getattr(alias, public) is getattr(real, public) for public in real.__all__)
