"""Imports point one way: down the layers of the package (read from the source with `ast`).

Layers, top first; a module may import its own layer and those below it, never one above:

8. entry points: ``etl.__main__``, ``etl.app`` (``honeypot-etl``), ``etl.refresh``, ``etl.cli``
   (Typer plumbing), ``etl.status.cli``, ``etl.status.__main__``, ``etl.pending_cli`` (``honeypot-etl pending``),
   ``etl.doctor_cli`` (``honeypot-etl doctor``)
7. the run and its tools: ``etl.pipeline``, ``etl.monitored`` and its output files (``etl.outputs``), its phase runner (``etl.runner``, ``etl.events``,
   ``etl.network``, ``etl.phases_cymru``, ``etl.phases_greynoise``); its listeners
   ``etl.metrics``, ``etl.terminal``; the status report (``etl.status``: read-only, for the
   command and the notebook); the kept answers an operator lists, applies, discards (``etl.kept``);
   the checks of ``honeypot-etl doctor`` (``etl.doctor``)
6. configuration: ``etl.config`` (the run's settings; no step reads it)
5. steps: ``etl.validation``, ``etl.maxmind`` (and ``etl.maxmind_check``), ``etl.cymru``, ``etl.greynoise``, ``etl.merge``,
   ``etl.commit``, ``etl.runlog`` (a run's row in the run log, the GreyNoise daily budget)
3. reporting: ``etl.report``, ``etl.progress``
2. I/O: ``etl.clients.*`` (the services), ``etl.db.*`` (the database); the clients and the
   database do not import each other
1. base: ``etl`` (the package itself), ``etl.errors``, ``etl.freshness``, ``etl.clock``, ``etl.addresses``,
   ``etl.limits``, ``etl.settings``
   (how settings are declared)

Every import counts, also those inside functions or under ``TYPE_CHECKING``, except in a
``if __name__ == "__main__":`` block (running a module as a program is an entry point). A module that is
in no layer fails the test: place it when it is added.

The test bed (``testbed``: the sample world, the simulators, the demo) is outside the package
and above all of it: it may import any of ``etl``, nothing in ``etl`` imports it, and it has no
import cycle of its own.

No import cycle either, even inside one layer (`test_no_import_cycle`). There every import
counts, with no exception: one inside a function or under ``TYPE_CHECKING`` only hides the
cycle from the interpreter, not from a reader (each module of the circle needs the others to be
understood, and none can be read, tested or moved alone); one in a ``__main__`` block makes
``python -m`` load the module twice (once as ``__main__``, once under its name, by the module it
imports). The remedy is a module above the circle that imports both sides (``etl.db.backends``
chooses the backend that ``etl.db.dialect`` declares and ``etl.db.sqlite``/``etl.db.postgres``
implement).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "etl"

LAYERS: dict[str, int] = {
    "etl.__main__": 8,
    "etl.app": 8,
    "etl.refresh": 8,
    "etl.cli": 8,
    "etl.status.cli": 8,
    "etl.status.__main__": 8,
    "etl.pending_cli": 8,
    "etl.doctor_cli": 8,
    "etl.pipeline": 7,
    "etl.kept": 7,
    "etl.doctor": 7,
    "etl.monitored": 7,
    "etl.outputs": 7,
    "etl.runner": 7,
    "etl.events": 7,
    "etl.network": 7,
    "etl.phases_cymru": 7,
    "etl.phases_greynoise": 7,
    "etl.metrics": 7,
    "etl.terminal": 7,
    "etl.status": 7,
    "etl.config": 6,
    "etl.validation": 5,
    "etl.maxmind": 5,
    "etl.maxmind_check": 5,
    "etl.cymru": 5,
    "etl.greynoise": 5,
    "etl.merge": 5,
    "etl.commit": 5,
    "etl.runlog": 5,
    "etl.report": 3,
    "etl.progress": 3,
    "etl.clients": 2,
    "etl.db": 2,
    "etl.errors": 1,
    "etl.freshness": 1,
    "etl.clock": 1,
    "etl.addresses": 1,
    "etl.settings": 1,
    "etl.limits": 1,
    "etl": 1,
}
# Same layer, kept apart: neither group imports the other.
SIBLINGS = (("etl.clients", "etl.db"),)


def module_name(path: Path) -> str:
    """``etl/db/select.py`` -> ``etl.db.select``; a package's ``__init__`` is the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of ``etl``."""
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(
    source: str, name: str, is_package: bool = False, main_block: bool = False
) -> set[str]:
    """The ``etl`` modules that a module's source imports, anywhere in it (in its
    ``__main__`` block too only when ``main_block``)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(source)
    if not main_block:
        tree.body = [statement for statement in tree.body if not _is_main_block(statement)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from etl import config` imports the module etl.config
                full = f"{base}.{alias.name}"
                found.add(full if is_module(full) else base)
    return {module for module in found if module == "etl" or module.startswith("etl.")}


def _is_main_block(statement: ast.stmt) -> bool:
    """``if __name__ == "__main__":``: the module run as a program, an entry point of its own."""
    return isinstance(statement, ast.If) and ast.unparse(statement.test) in (
        "__name__ == '__main__'",
        '__name__ == "__main__"',
    )


def layer_of(module: str) -> int | None:
    """The layer of the longest listed prefix of ``module``."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def in_group(module: str, group: str) -> bool:
    """Whether ``module`` is ``group`` or inside it."""
    return module == group or module.startswith(group + ".")


def violations(importer: str, imported: set[str]) -> list[str]:
    """Why each of ``importer``'s imports breaks the layering (empty when none does)."""
    own = layer_of(importer)
    found = []
    for module in sorted(imported):
        layer = layer_of(module)
        if own is not None and layer is not None and layer > own:
            found.append(f"{importer} (layer {own}) imports {module} (layer {layer})")
        for first, second in SIBLINGS:
            for here, there in ((first, second), (second, first)):
                if in_group(importer, here) and in_group(module, there):
                    found.append(f"{importer} imports its sibling {module}")
    return found


def package_imports(main_block: bool = False) -> dict[str, set[str]]:
    """Each module of the package with the ``etl`` modules it imports (``main_block``: see
    `imported_modules`)."""
    return {
        module_name(path): imported_modules(
            path.read_text(encoding="utf-8"),
            module_name(path),
            path.name == "__init__.py",
            main_block,
        )
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def import_cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The modules that import each other round a circle: each strongly connected group of
    more than one module (Tarjan's algorithm, without recursion), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        work = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, pending = work[-1]
            step = next((dep for dep in pending if dep in imports and dep != module), None)
            if step is not None and step not in index:
                index[step] = low[step] = len(index)
                stack.append(step)
                on_stack.add(step)
                work.append((step, iter(sorted(imports[step]))))
            elif step is not None:
                if step in on_stack:
                    low[module] = min(low[module], index[step])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == module:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return sorted(found)


def test_every_module_has_a_layer() -> None:
    unplaced = [module for module in package_imports() if layer_of(module) is None]
    assert unplaced == []


def test_imports_only_point_down() -> None:
    broken = [v for module, deps in package_imports().items() for v in violations(module, deps)]
    assert broken == []


def test_db_and_clients_import_no_configuration_nor_the_run() -> None:
    higher = ("etl.config", "etl.pipeline", "etl.refresh", "etl.cli")
    found = {
        (module, dep)
        for module, deps in package_imports().items()
        if in_group(module, "etl.db") or in_group(module, "etl.clients")
        for dep in deps
        if any(in_group(dep, name) for name in higher)
    }
    assert found == set()


def test_no_import_cycle() -> None:
    """No circle of imports inside the package (see the module docstring: every import counts,
    the ``__main__`` blocks' too)."""
    assert import_cycles(package_imports(main_block=True)) == []


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"etl.a": "from etl.b import x", "etl.b": "import etl.a"}, [["etl.a", "etl.b"]]),
        (  # a circle of three, closed by an import inside a function
            {
                "etl.a": "from etl.b import x",
                "etl.b": "from etl.c import y",
                "etl.c": "def f():\n    from etl.a import z",
                "etl.d": "from etl.a import w",
            },
            [["etl.a", "etl.b", "etl.c"]],
        ),
        (  # closed under TYPE_CHECKING
            {"etl.a": "from etl.b import x", "etl.b": "if TYPE_CHECKING:\n    from etl.a import T"},
            [["etl.a", "etl.b"]],
        ),
        (  # closed in a __main__ block
            {
                "etl.a": "from etl.b import x",
                "etl.b": "if __name__ == '__main__':\n    import etl.a",
            },
            [["etl.a", "etl.b"]],
        ),
        ({"etl.a": "from etl.b import x", "etl.b": "from etl.c import y", "etl.c": ""}, []),
    ],
)
def test_an_import_cycle_is_caught(sources: dict[str, str], expected: list[list[str]]) -> None:
    """The checker itself: a circle is found however its last import is hidden; a chain is none."""
    imports = {
        name: imported_modules(text, name, main_block=True) for name, text in sources.items()
    }
    assert import_cycles(imports) == expected


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("etl.db.select", "from etl.config import Freshness", "etl.config (layer 6)"),
        ("etl.maxmind", "from etl.config import RefreshConfig", "etl.config (layer 6)"),
        ("etl.db.select", "def f():\n    from etl import pipeline", "etl.pipeline (layer 7)"),
        ("etl.db.write", "from ..clients import cymru", "sibling etl.clients.cymru"),
        ("etl.report", "import etl.maxmind", "etl.maxmind (layer 5)"),
    ],
)
def test_an_upward_import_is_caught(importer: str, source: str, expected: str) -> None:
    """The checker itself: imports that climb (top level, in a function, relative) are found."""
    found = violations(importer, imported_modules(source, importer))
    assert any(expected in line for line in found), found


def test_downward_imports_pass() -> None:
    source = "from etl.db.url import redact\nfrom etl import errors\nfrom etl.freshness import x"
    assert violations("etl.pipeline", imported_modules(source, "etl.pipeline")) == []


def all_imports(path: Path) -> set[str]:
    """Every module name a file imports, anywhere in it (``__main__`` blocks too), absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.update(f"{base}.{alias.name}" for alias in node.names)
            found.add(base)
    return found


def test_the_package_never_imports_the_test_bed() -> None:
    """The wheel ships ``etl`` alone: no module of it may import ``testbed``."""
    found = {
        (module_name(path), name)
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in all_imports(path)
        if in_group(name, "testbed")
    }
    assert found == set()
    assert in_group("testbed.sim.process", "testbed")  # the check itself sees such an import


def test_the_test_bed_has_no_import_cycle() -> None:
    bed = PACKAGE.parent / "testbed"
    paths = sorted(bed.rglob("*.py"))
    assert paths, "testbed/ is missing"
    modules = {module_name(path): path for path in paths}

    def resolve(name: str) -> str | None:  # the testbed module an imported name lies in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {
        module: {
            target
            for name in all_imports(path)
            if (target := resolve(name)) is not None
            and target != module
            and not module.startswith(target + ".")  # a package's own __init__ is no cycle
        }
        for module, path in modules.items()
    }
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in trail:
                cycles.append([*trail[trail.index(target) :], target])
            elif len(cycles) < 5:
                visit(target, [*trail, target])

    for start in sorted(graph):
        visit(start, [start])
    assert cycles == []
