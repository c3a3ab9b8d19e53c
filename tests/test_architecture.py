"""The house rules of `app/`, read from the code's imports (see ARCHITECTURE.md).

1. Floors: a room imports only from its own floor or the floors below it.
2. No loops: no module imports (directly or through others) a module that imports it,
   `TYPE_CHECKING` imports included.
3. The HTTP edge reaches the store, the bus and the run manager only through the service
   layer: `app/api` neither imports them nor touches such attributes.
"""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# Each room and its floor, from the ground up; a room may import rooms of its floor or lower.
FLOORS: dict[str, int] = {
    "app.config": 0,
    "app.errors": 0,
    "app.events": 0,
    "app.agents": 0,
    "app.store": 1,
    "app.llm": 1,
    "app.integrations": 1,
    "app.observability": 1,
    "app.bus": 2,
    "app.security": 2,
    "app.webhooks": 2,
    "app.engine": 3,
    "app.service": 4,
    "app.api": 5,
    "app.main": 6,
}
# What the HTTP edge may not import, and which attributes it may not read: it asks the
# service layer instead.
API_MAY_NOT_IMPORT = ("app.store", "app.bus", "app.engine.runs")
API_MAY_NOT_READ = {"store", "bus", "runs", "active", "reader", "recorder"}
API_MAY_IMPORT = {"app.store.models"}  # the records: plain data shared by every floor


def module_of(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "app" or name.startswith("app.")}


MODULES = {module_of(path): path for path in sorted(APP.rglob("*.py"))}
IMPORTS = {module: imports_of(path) for module, path in MODULES.items()}


def targets(module: str) -> set[str]:
    """The project's modules that `module` imports (a name imported from a package counts
    as the package, unless it is a module of its own)."""
    return {name for name in IMPORTS[module] if name in MODULES and name != module}


def test_every_room_has_a_floor() -> None:
    assert {room_of(m) for m in MODULES} - {"app"} <= FLOORS.keys()


def test_no_room_imports_a_room_above_it() -> None:
    upward = [
        f"{module} -> {target}"
        for module in MODULES
        for target in targets(module)
        if room_of(module) in FLOORS
        and room_of(target) in FLOORS
        and FLOORS[room_of(target)] > FLOORS[room_of(module)]
    ]
    assert upward == []


def test_no_import_loops() -> None:
    graph = {module: targets(module) for module in MODULES}
    loops: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                loops.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert loops == []


def test_the_http_edge_goes_through_the_service_layer() -> None:
    crossings = [
        f"{module} imports {name}"
        for module in MODULES
        if room_of(module) == "app.api"
        for name in IMPORTS[module]
        if name.startswith(API_MAY_NOT_IMPORT)
        and not any(name == allowed or name.startswith(f"{allowed}.") for allowed in API_MAY_IMPORT)
    ]
    reads = [
        f"{module}:{node.lineno} reads .{node.attr}"
        for module, path in MODULES.items()
        if room_of(module) == "app.api"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in API_MAY_NOT_READ
    ]
    assert crossings == [] and reads == []


def test_the_rules_see_the_imports() -> None:
    """The checks above would pass on a tree they cannot read: make sure they read this one."""
    assert "app.service.parley" in targets("app.api.deps")
    assert "app.errors" in targets("app.store")
    assert room_of("app.engine.runs.scheduler") == "app.engine"
