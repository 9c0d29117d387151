"""The architecture, kept true: walks the AST of every module of the core and the plugins.

Data flows request -> web glue -> route table -> service -> virt / plugin -> libvirt and
never back up. Checked here: no import cycles (TYPE_CHECKING imports included); the core
never imports the web layer or a web framework; virt/ and cluster/ know no service; web/
never touches the store; plugins import only the contracts; every table is used through
one owner's constant; modules stay small.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "hypervisor_panel"
PLUGINS = "hypervisor_panel_plugins"
WEB_FRAMEWORKS = {"bottle", "cheroot", "waitress", "webview"}
ENTRY_POINTS = {f"{CORE}.cli", f"{CORE}.desktop"}  # above the web layer
CONTRACTS = {f"{CORE}.{name}" for name in (
    "hookspecs", "storage", "network", "os_templates", "recipes", "backup", "routes",
    "errors", "validation", "host")}
STORE_METHODS = {"insert", "get", "require", "raw_values", "all", "find", "find_one",
                 "update", "delete", "delete_many", "count"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # internal modules and packages


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "plugins":
        parts[0] = PLUGINS
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: Module, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute names of what one import statement imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module.name if module.path.name == "__init__.py" else \
        module.name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    base = f"{package}.{node.module}" if node.level and node.module else \
        (package if node.level else node.module or "")
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _load() -> dict[str, Module]:
    modules = {}
    for top in (ROOT / CORE, ROOT / "plugins"):
        for path in sorted(top.rglob("*.py")):
            module = Module(_module_name(path), path, ast.parse(path.read_text()))
            modules[module.name] = module
    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module.imports.update(_resolve(module, node))
    return modules


MODULES = _load()


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _internal(module: Module) -> set[str]:
    """Internal modules imported; a package's own ancestors are implied, not counted."""
    return {name for name in module.imports
            if name in MODULES and name not in _ancestors(module.name)}


def _external_tops(module: Module) -> set[str]:
    return {name.split(".")[0] for name in module.imports if name not in MODULES}


def core_modules() -> list[Module]:
    return [m for n, m in MODULES.items() if n == CORE or n.startswith(CORE + ".")]


def _unit(name: str) -> str:
    """The owner unit of a module: its service package (``hypervisor_panel.vms``), or the
    module itself at the top level."""
    return ".".join(name.split(".")[:2])


def test_the_walk_sees_the_whole_tree():
    names = set(MODULES)
    assert {f"{CORE}.vms.service", f"{CORE}.nodes.manager", f"{CORE}.web.glue",
            f"{PLUGINS}.storage_dir"} <= names
    assert f"{CORE}.vms.records" in _internal(MODULES[f"{CORE}.vms.service"])


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m.name: sorted(_internal(m) - {m.name}) for m in core_modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_no_import_cycles_in_the_core_type_checking_ones_included():
    assert _cycles() == []


def test_the_core_never_imports_the_web_layer_or_a_web_framework():
    bad = []
    for module in core_modules():
        if module.name.startswith(f"{CORE}.web") or module.name in ENTRY_POINTS:
            continue
        web = {n for n in _internal(module) if n.startswith(f"{CORE}.web")}
        frameworks = _external_tops(module) & WEB_FRAMEWORKS
        if web or frameworks:
            bad.append((module.name, sorted(web | frameworks)))
    assert bad == []


def test_only_entry_points_and_the_web_glue_know_the_composition_root():
    bad = [m.name for m in core_modules() if f"{CORE}.panel" in _internal(m)
           and m.name not in ENTRY_POINTS and not m.name.startswith(f"{CORE}.web")]
    assert bad == []


@pytest.mark.parametrize("package", ["virt", "cluster"])
def test_virt_and_cluster_know_no_service_and_no_http(package: str):
    allowed_prefixes = (f"{CORE}.{package}", f"{CORE}.errors")
    bad = []
    for module in core_modules():
        if not module.name.startswith(f"{CORE}.{package}"):
            continue
        wrong = {n for n in _internal(module) if not n.startswith(allowed_prefixes)
                 and n != CORE}
        if wrong or _external_tops(module) & WEB_FRAMEWORKS:
            bad.append((module.name, sorted(wrong)))
    assert bad == []


def test_the_web_layer_never_touches_the_store():
    bad = []
    for module in core_modules():
        if not module.name.startswith(f"{CORE}.web"):
            continue
        if f"{CORE}.store" in _internal(module):
            bad.append((module.name, "imports the store"))
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and node.attr == "store":
                bad.append((module.name, f"line {node.lineno}: .store"))
    assert bad == []


def test_route_declarations_call_services_not_the_store():
    bad = [(m.name, node.lineno) for m in core_modules() if m.name.startswith(f"{CORE}.api")
           for node in ast.walk(m.tree)
           if isinstance(node, ast.Attribute) and node.attr == "store"]
    assert bad == []


def _is_core(name: str) -> bool:
    return name == CORE or name.startswith(CORE + ".")


def test_plugins_import_only_the_contracts():
    bad = []
    for name, module in MODULES.items():
        if not name.startswith(PLUGINS + "."):
            continue
        own = ".".join(name.split(".")[:2])
        for target in module.imports:
            contract = target in CONTRACTS or target.rpartition(".")[0] in CONTRACTS
            if _is_core(target) and not contract:
                bad.append((name, target))
            if target.startswith(PLUGINS + ".") and not target.startswith(own):
                bad.append((name, target))  # plugins do not reach into each other
    assert bad == []


def _store_receiver(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "store") or \
        (isinstance(node, ast.Name) and node.id == "store")


def _table_constants(module: Module) -> dict[str, str]:
    """NAME -> table name for module-level string constants (``TABLE = "vms"``)."""
    out = {}
    for node in module.tree.body:
        if isinstance(node, ast.Assign):
            targets = [t for t in node.targets if isinstance(t, ast.Name | ast.Tuple)]
            for target in targets:
                names = [target] if isinstance(target, ast.Name) else list(target.elts)
                values = [node.value] if isinstance(target, ast.Name) else \
                    list(getattr(node.value, "elts", []))
                for n, v in zip(names, values, strict=False):
                    if isinstance(n, ast.Name) and isinstance(v, ast.Constant) and \
                            isinstance(v.value, str):
                        out[n.id] = v.value
    return out


def _owner_of(module: Module, const: str) -> tuple[str, str] | None:
    """(owning module, table) of the constant ``const`` as ``module`` sees it."""
    own = _table_constants(module)
    if const in own:
        return module.name, own[const]
    for node in module.tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == const for a in node.names):
            source = _resolve(module, node)[0]
            if source in MODULES and const in _table_constants(MODULES[source]):
                return source, _table_constants(MODULES[source])[const]
    return None


def test_every_table_has_one_owner_and_is_reached_through_its_constant():
    bad, owners = [], {}
    for module in core_modules():
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in STORE_METHODS and _store_receiver(node.func.value)
                    and node.args):
                continue
            arg = node.args[0]
            where = f"{module.name}:{node.lineno}"
            if not isinstance(arg, ast.Name):
                bad.append(f"{where}: table given as {ast.unparse(arg)}, not a constant")
                continue
            owner = _owner_of(module, arg.id)
            if owner is None:
                bad.append(f"{where}: {arg.id} is not a table constant of this module")
                continue
            source, table = owner
            if _unit(source) != _unit(module.name):
                bad.append(f"{where}: uses table {table!r} owned by {source}")
            owners.setdefault(table, set()).add(_unit(source))
    assert bad == []
    assert {t: o for t, o in owners.items() if len(o) > 1} == {}


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for module in core_modules():
        lines = len(module.path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.append((module.name, lines))
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append((f"{module.name}.{node.name}", length))
    assert long_modules == []
    assert long_functions == []
