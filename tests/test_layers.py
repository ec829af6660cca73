"""Imports point one way: down the layers of the package, one folder per layer (read from
the source with `ast`).

Layers, top first; a module may import its own layer and those below it, never one above:

7. the commands: ``etl.cli`` (``honeypot-etl`` and each subcommand's options), and every
   ``__main__`` module (``python -m etl``, ``python -m etl.refresh``, ``python -m etl.status``)
6. ``etl.status``: where a database stands, read-only (the command's and the notebook's numbers)
5. ``etl.refresh``: the run (its settings, the pipeline, the phases' runner, the commit, the run
   log row, the files it writes), and the jobs beside it (kept answers, ``doctor``)
4. ``etl.report``: what a run tells its operator (the summary, progress, the metrics)
3. ``etl.sources``: one folder per source (client, wire parser, frame steps, phase)
2. ``etl.db``: the database
1. ``etl.core`` (errors, settings, limits, time, addresses, freshness) and ``etl`` itself

Inside ``etl.sources`` only a source's phase (``etl.sources.<name>.phase``) and the interface
the phases implement (``etl.sources.network``) touch the database: a source's client, parser
and frame steps work without one.

Every import counts, also those inside functions or under ``TYPE_CHECKING``, except in a
``if __name__ == "__main__":`` block (running a module as a program is an entry point). A module
in no folder of a layer fails the test: place it in one.

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

ENTRY = 7
LAYERS: dict[str, int] = {
    "etl.cli": ENTRY,
    "etl.status": 6,
    "etl.refresh": 5,
    "etl.report": 4,
    "etl.sources": 3,
    "etl.db": 2,
    "etl.core": 1,
    "etl": 1,
}
# Every other module lives in a folder: the package's top holds only these.
TOP = ["__init__.py", "__main__.py"]


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
            for alias in node.names:  # `from etl.refresh import config` imports a module
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
    """The layer of ``module``: a ``__main__`` module is an entry point, any other is its
    folder's (the longest listed prefix; the package itself only for ``etl``)."""
    if module.rpartition(".")[2] == "__main__":
        return ENTRY
    if module == "etl":
        return LAYERS["etl"]
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
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


def test_the_top_of_the_package_holds_only_its_init_and_main() -> None:
    """Every module is in a folder named for its role; a reader starts from the folders."""
    assert sorted(path.name for path in PACKAGE.glob("*.py")) == TOP


def test_only_a_sources_phase_touches_the_database() -> None:
    found = {
        (module, dep)
        for module, deps in package_imports().items()
        if in_group(module, "etl.sources")
        and not module.endswith(".phase")
        and module != "etl.sources.network"
        for dep in deps
        if in_group(dep, "etl.db")
    }
    assert found == set()


def test_imports_only_point_down() -> None:
    broken = [v for module, deps in package_imports().items() for v in violations(module, deps)]
    assert broken == []


# The run's frame steps and its run log row: they take their values as arguments, never the
# run's settings or the run itself (they share the run's folder, so the layers cannot say it).
STEPS = ("etl.refresh.validation", "etl.refresh.merge", "etl.refresh.commit", "etl.refresh.runlog")
RUN = ("etl.refresh.config", "etl.refresh.pipeline", "etl.refresh.monitored", "etl.refresh.network")


def test_the_steps_read_no_configuration_nor_the_run() -> None:
    found = {
        (module, dep)
        for module, deps in package_imports().items()
        if module in STEPS
        for dep in deps
        if dep in RUN
    }
    assert found == set()


def test_no_source_imports_another() -> None:
    """A source is one folder: it may use what all sources share (``etl.sources.network``,
    ``events``, ``failures``), never another source's folder."""
    folders = {p.name for p in (PACKAGE / "sources").iterdir() if (p / "__init__.py").is_file()}
    found = {
        (module, dep)
        for module, deps in package_imports().items()
        for name in folders
        if in_group(module, f"etl.sources.{name}")
        for dep in deps
        if in_group(dep, "etl.sources")
        and dep.split(".")[2] in folders
        and not in_group(dep, f"etl.sources.{name}")
    }
    assert folders >= {"maxmind", "cymru", "greynoise", "classification"} and found == set()


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
        (
            "etl.db.select",
            "from etl.refresh.config import Freshness",
            "etl.refresh.config (layer 5)",
        ),
        (
            "etl.sources.maxmind.steps",
            "from etl.refresh.config import RefreshConfig",
            "etl.refresh.config (layer 5)",
        ),
        (
            "etl.db.select",
            "def f():\n    from etl.refresh import pipeline",
            "etl.refresh.pipeline (layer 5)",
        ),
        (
            "etl.db.write",
            "from ..sources.cymru import client",
            "etl.sources.cymru.client (layer 3)",
        ),
        (
            "etl.sources.maxmind.steps",
            "import etl.report.summary",
            "etl.report.summary (layer 4)",
        ),
    ],
)
def test_an_upward_import_is_caught(importer: str, source: str, expected: str) -> None:
    """The checker itself: imports that climb (top level, in a function, relative) are found."""
    found = violations(importer, imported_modules(source, importer))
    assert any(expected in line for line in found), found


def test_downward_imports_pass() -> None:
    source = "from etl.db.url import redact\nfrom etl.core import errors\nfrom etl.core.freshness import x"
    assert (
        violations("etl.refresh.pipeline", imported_modules(source, "etl.refresh.pipeline")) == []
    )


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
