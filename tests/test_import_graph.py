"""The module graph stays a tree of layers: no import cycle among decodelab's modules (imports inside functions
count; `if TYPE_CHECKING:` blocks do not), and no record module reaches presentation code."""

import ast
import subprocess
import sys
from pathlib import Path

import decodelab

SOURCE = Path(decodelab.__file__).parent.parent  # .../src
RECORD_MODULES = (
    "records",
    "engine",
    "session",
    "beam",
    "beam_records",
    "scoring",
    "compare",
    "distribution",
    "tokens",
    "decoding",
)
PRESENTATION = {"decodelab.display", "decodelab.tables", "decodelab.plots"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in (SOURCE / "decodelab").rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The decodelab modules `name` imports at run time (a `from package import submodule` names the submodule)."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    found = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target.startswith("decodelab") and target != name:
            found.add(target)
    return found


def test_no_import_cycles():
    modules = module_names()
    graph = {name: imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_record_modules_do_not_reach_presentation_code():
    modules = module_names()
    graph = {name: imports(name, path, modules) for name, path in modules.items()}
    for record in RECORD_MODULES:
        seen, todo = set(), [f"decodelab.{record}"]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        assert not {m for m in seen if any(m == p or m.startswith(p + ".") for p in PRESENTATION)}, record


def test_importing_the_records_loads_neither_pandas_nor_the_views():
    code = (
        "import sys; import decodelab.records, decodelab.engine, decodelab.beam, decodelab.scoring, "
        "decodelab.compare, decodelab.session; "
        "print(sorted(m for m in sys.modules if m in ('pandas', 'decodelab.display', 'decodelab.tables')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
