"""The layers of cfosproxy, read from its import statements.

The sans-IO packages stay free of I/O: L{cfosproxy.ocpp} imports only
itself, L{cfosproxy.core} only itself and ocpp, L{cfosproxy.site} only
itself, core and ocpp; none of them a reactor, Autobahn, pymodbus,
twisted.web or sqlite3. Every import statement counts, also one inside a
function or under C{TYPE_CHECKING}: each is a dependency all the same.
"""

import ast
import textwrap
from pathlib import Path

import pytest

import cfosproxy

PACKAGE_ROOT = Path(cfosproxy.__file__).parent

# Per layer: the cfosproxy packages it may import.
LAYERS = {
    "cfosproxy.ocpp": ("cfosproxy.ocpp",),
    "cfosproxy.core": ("cfosproxy.core", "cfosproxy.ocpp"),
    "cfosproxy.site": ("cfosproxy.site", "cfosproxy.core", "cfosproxy.ocpp"),
}

# What no layer imports: I/O and what starts it.
FORBIDDEN = ("autobahn", "pymodbus", "twisted.web", "sqlite3")

# What one layer must not import on top of FORBIDDEN (its package
# docstring says so).
FORBIDDEN_IN = {"cfosproxy.ocpp": ("twisted",)}

# The packages that say in their docstring what they are for and what they
# may import.
DOCUMENTED_PACKAGES = (
    "core", "site", "ocpp", "ws", "modbus", "ops", "store", "wiring", "wallbox",
)

# The adapters around the core: the cfosproxy packages each may import (any
# third-party library is theirs to use). Only the plugins' entry points and
# builders put the parts together, so nothing below them imports the wiring.
ADAPTERS = {
    "cfosproxy.ws": ("cfosproxy.ws", "cfosproxy.core", "cfosproxy.ocpp"),
    "cfosproxy.store": ("cfosproxy.store", "cfosproxy.core"),
    "cfosproxy.modbus": ("cfosproxy.modbus", "cfosproxy.core", "cfosproxy.site", "cfosproxy.ocpp"),
    "cfosproxy.ops": (
        "cfosproxy.ops", "cfosproxy.core", "cfosproxy.site", "cfosproxy.ocpp",
        "cfosproxy.ws", "cfosproxy.store", "cfosproxy.modbus",
        "cfosproxy.config", "cfosproxy.services",
    ),
}


def _within(name, package):
    """Whether the dotted C{name} is C{package} or lies inside it."""
    return name == package or name.startswith(package + ".")


def _is_reactor(name):
    # twisted.internet.reactor, asyncioreactor, epollreactor, and the like;
    # "IReactorTime" and other interfaces are not modules that install one.
    return any(part.endswith("reactor") for part in name.split("."))


def imported_names(tree, module):
    """Every (line, dotted name) that the module C{module} imports.

    C{from a.b import c} counts as C{a.b.c}, since C{c} may be a module
    (C{from twisted.internet import reactor}); relative imports are
    resolved against C{module}.
    """
    package = module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # In a package's __init__ the module name is the package.
                parent = package[: len(package) - node.level]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"


def _module_name(path, root):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        # A relative import in __init__ is relative to the package itself.
        parts.append("__init__")
    return ".".join(parts)


def layer_violations(root):
    """The imports in the layers under C{root} (a C{cfosproxy} package
    directory) that break the rules, as C{"file:line imports name"}."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        layer = next((layer for layer in LAYERS if _within(module, layer)), None)
        if layer is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        forbidden = FORBIDDEN + FORBIDDEN_IN.get(layer, ())
        for line, name in imported_names(tree, module):
            wrong = (
                _is_reactor(name)
                or any(_within(name, banned) for banned in forbidden)
                or (
                    _within(name, "cfosproxy")
                    and not any(_within(name, allowed) for allowed in LAYERS[layer])
                )
            )
            if wrong:
                where = path.relative_to(root.parent)
                found.append(f"{where}:{line} imports {name}")
    return found


def adapter_violations(root, adapters=ADAPTERS):
    """The imports of cfosproxy packages that an adapter package under
    C{root} may not use, as C{"file:line imports name"}."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        adapter = next((a for a in adapters if _within(module, a)), None)
        if adapter is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in imported_names(tree, module):
            if _within(name, "cfosproxy") and not any(
                _within(name, allowed) for allowed in adapters[adapter]
            ):
                found.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
    return found


def import_cycles(root):
    """The circles of imports among the modules of the layers under
    C{root}, each as a sorted list of module names.

    An import of C{a.b.c.Name} is an edge to the longest of C{a.b.c.Name},
    C{a.b.c}, ... that is a module of the tree.
    """
    paths = {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        paths[module.removesuffix(".__init__")] = (module, path)
    graph = {}
    for name, (module, path) in paths.items():
        if not any(_within(name, layer) for layer in LAYERS):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for _, imported in imported_names(tree, module):
            parts = imported.split(".")
            prefixes = (".".join(parts[:end]) for end in range(len(parts), 0, -1))
            target = next((p for p in prefixes if p in paths), None)
            if target is not None and target != name:
                targets.add(target)
        graph[name] = targets
    return _strongly_connected(graph)


def _strongly_connected(graph):
    # Tarjan's algorithm; components of more than one module are circles.
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return sorted(circles)


def test_layers_import_only_what_they_may():
    """No module of ocpp, core or site imports I/O or a package above it."""
    assert layer_violations(PACKAGE_ROOT) == []


@pytest.mark.parametrize(
    "where, source, expected",
    [
        ("core/hub.py", "from twisted.internet import reactor\n", "twisted.internet.reactor"),
        ("core/hub.py", "import twisted.internet.reactor\n", "twisted.internet.reactor"),
        (
            "core/hub.py",
            "def later():\n    from twisted.internet import asyncioreactor\n",
            "twisted.internet.asyncioreactor",
        ),
        ("site/manager.py", "import autobahn.twisted.websocket\n", "autobahn.twisted.websocket"),
        ("site/manager.py", "from pymodbus.client import AsyncModbusTcpClient\n",
         "pymodbus.client.AsyncModbusTcpClient"),
        ("core/session.py", "from twisted.web import server\n", "twisted.web.server"),
        ("core/session.py", "import sqlite3\n", "sqlite3"),
        ("core/session.py", "from cfosproxy.site import manager\n", "cfosproxy.site.manager"),
        ("core/session.py", "from cfosproxy import config\n", "cfosproxy.config"),
        ("site/sharing.py", "from cfosproxy.ws.server import X\n", "cfosproxy.ws.server.X"),
        ("site/sharing.py", "from ..store import database\n", "cfosproxy.store.database"),
        ("ocpp/frames.py", "from cfosproxy.core.errors import PeerGone\n",
         "cfosproxy.core.errors.PeerGone"),
        ("ocpp/frames.py", "from twisted.internet import defer\n", "twisted.internet.defer"),
        (
            "ocpp/__init__.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import tap\n",
            "cfosproxy.tap",
        ),
    ],
)
def test_the_check_finds_a_forbidden_import(tmp_path, where, source, expected):
    """A forbidden import in a small copy of the layout is reported with
    its file and line; the allowed imports next to it are not."""
    root = tmp_path / "cfosproxy"
    allowed = textwrap.dedent(
        """\
        import json
        from twisted.internet import defer
        from twisted.internet.interfaces import IReactorTime
        from cfosproxy.ocpp.frames import Call
        """
    )
    for name in ("__init__.py", "ocpp/__init__.py", "core/__init__.py", "site/__init__.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text('"""A package."""\n')
    (root / "ws").mkdir()
    (root / "ws" / "server.py").write_text("from twisted.internet import reactor\n")
    target = root / where
    if "ocpp" in where:
        allowed = "import json\nfrom cfosproxy.ocpp import errors\n"
    target.write_text(allowed + source)
    line = allowed.count("\n") + source.count("\n")
    assert layer_violations(root) == [f"cfosproxy/{where}:{line} imports {expected}"]


def test_the_check_passes_what_a_layer_may_import(tmp_path):
    """Imports inside the allowed layers, the standard library and
    Twisted's Deferreds are no violation, and packages outside the three
    layers (ws, the daemon's wiring) are not checked."""
    root = tmp_path / "cfosproxy"
    sources = {
        "__init__.py": "",
        "reactor.py": "from twisted.internet import reactor\n",
        "ocpp/__init__.py": "from . import frames\nfrom .frames import Call\n",
        "ocpp/frames.py": "import json\nfrom cfosproxy.ocpp.errorcodes import ErrorCode\n",
        "core/__init__.py": "",
        "core/hub.py": "from twisted.internet import defer\nfrom cfosproxy.ocpp import frames\n",
        "site/__init__.py": "",
        "site/manager.py": "from cfosproxy.core import hub\nfrom ..ocpp.frames import Call\n",
        "ws/server.py": "import autobahn\nfrom twisted.internet import reactor\n",
    }
    for name, text in sources.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert layer_violations(root) == []


def test_no_module_of_the_layers_imports_itself_in_a_circle():
    """Imports among the modules of ocpp, core and site go one way: a
    circle (frames needing errors for its codes and errors needing frames
    for CALLERROR) makes the order of imports matter and hides in
    imports inside functions."""
    assert import_cycles(PACKAGE_ROOT) == []


def test_the_check_finds_a_circle(tmp_path):
    """Two modules that import each other, one of them only inside a
    function, are a circle; a module outside the layers is not checked."""
    root = tmp_path / "cfosproxy"
    sources = {
        "__init__.py": "",
        "ocpp/__init__.py": "from cfosproxy.ocpp.frames import Call\n",
        "ocpp/errors.py": "def to_frame():\n    from cfosproxy.ocpp.frames import Call\n",
        "ocpp/frames.py": "from cfosproxy.ocpp.errors import ErrorCode\n",
        "ocpp/ids.py": "import uuid\n",
        "ws/a.py": "from cfosproxy.ws import b\n",
        "ws/b.py": "from cfosproxy.ws import a\n",
    }
    for name, text in sources.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert import_cycles(root) == [["cfosproxy.ocpp.errors", "cfosproxy.ocpp.frames"]]


@pytest.mark.parametrize("package", DOCUMENTED_PACKAGES)
def test_each_package_says_what_it_is(package):
    """Every package of the layout has a docstring (what it is for and
    what it may import)."""
    init = PACKAGE_ROOT / package / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert docstring and docstring.strip(), f"cfosproxy/{package}/__init__.py has no docstring"


def test_the_adapters_import_only_what_lies_below_them():
    """The WebSocket, store, Modbus and operator packages use the core and
    the site, never each other sideways (but ops, which shows them all) nor
    the daemon's wiring."""
    assert adapter_violations(PACKAGE_ROOT) == []


def test_the_adapter_check_finds_a_sideways_import(tmp_path):
    """A store module that imports the WebSocket package, and a Modbus
    module that imports the wiring, are reported; the store importing the
    core is not."""
    root = tmp_path / "cfosproxy"
    sources = {
        "__init__.py": "",
        "store/queue.py": "from cfosproxy.core.errors import StoreError\nfrom cfosproxy.ws import tls\n",
        "modbus/wallbox.py": "def build():\n    from cfosproxy.wiring.daemon import build_daemon\n",
    }
    for name, text in sources.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert adapter_violations(root) == [
        "cfosproxy/modbus/wallbox.py:2 imports cfosproxy.wiring.daemon.build_daemon",
        "cfosproxy/store/queue.py:2 imports cfosproxy.ws.tls",
    ]
