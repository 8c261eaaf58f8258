"""The segrepro modules each DVC stage's command imports, so that dvc.yaml's code deps cannot go stale.

Why: DVC reruns a stage only when a listed dependency changes; a module the command imports but the stage
does not list leaves a stale cached output behind when it changes. So the lists are derived from the
import graph, never written by hand: ``python -m segrepro.depgraph --write`` rewrites the ``src/segrepro``
entries of every stage's ``deps`` in dvc.yaml, ``--check`` exits 2 on any difference (a test runs it).

The graph is static (AST) and, where it cannot be precise, includes rather than omits:

- ``segrepro.cli`` and ``segrepro.stages`` dispatch to every layer, so they are followed per function: a
  command depends on the imports of the functions it reaches by call or by name;
- every other module counts as a whole: importing it pulls in every module it imports anywhere, function
  bodies included, and every segrepro module named by a string literal;
- a computed ``import_module(...)`` (the dataset and model registries) pulls in its whole package;
- importing a module imports its parent packages.

A package whose every module is needed is listed as its folder, the rest as files.
"""

from __future__ import annotations

import argparse
import ast
import io
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segrepro.errors import UserError

ROOT_PACKAGE = "segrepro"
DISPATCH = frozenset({"segrepro.cli", "segrepro.stages"})
CLI_MODULE, CLI_APP = "segrepro.cli", "app"

Target = tuple[str, str | None]  # (module, attribute or None): what an import binds a name to


@dataclass
class _Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


class ImportGraph:
    """Static import graph of the ``segrepro`` package under ``src``."""

    def __init__(self, src: Path) -> None:
        self.src = Path(src)
        self.modules: dict[str, _Module] = {}
        for path in sorted((self.src / ROOT_PACKAGE).rglob("*.py")):
            parts = path.relative_to(self.src).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            tree = ast.parse(path.read_text(), filename=str(path))
            kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            defs: dict[str, ast.AST] = {n.name: n for n in tree.body if isinstance(n, kinds)}
            self.modules[name] = _Module(name, path, is_package, tree, defs)

    # -- commands -------------------------------------------------------------------------------------
    def commands(self) -> dict[tuple[str, ...], str]:
        """CLI word path (e.g. ``("submit", "build")``) → the function in ``segrepro.cli`` that runs it."""
        tree = self.modules[CLI_MODULE].tree
        groups: dict[str, dict[str, str]] = {}
        funcs: dict[str, dict[str, str]] = {}
        for node in tree.body:
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "add_typer":
                parent, child = _name_of(call.func.value), _name_of(call.args[0]) if call.args else None
                word = next((_const(k.value) for k in call.keywords if k.arg == "name"), None)
                if parent and child and word:
                    groups.setdefault(parent, {})[word] = child
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    if (
                        isinstance(deco, ast.Call)
                        and isinstance(deco.func, ast.Attribute)
                        and deco.func.attr == "command"
                    ):
                        word = _const(deco.args[0]) if deco.args else node.name.replace("_", "-")
                        owner = _name_of(deco.func.value)
                        if owner and word:
                            funcs.setdefault(owner, {})[word] = node.name
        table: dict[tuple[str, ...], str] = {}

        def walk(app: str, prefix: tuple[str, ...]) -> None:
            for word, func in funcs.get(app, {}).items():
                table[prefix + (word,)] = func
            for word, child in groups.get(app, {}).items():
                walk(child, prefix + (word,))

        walk(CLI_APP, ())
        return table

    def commands_of(self, cmd: str) -> list[str]:
        """The cli functions a shell command line runs (each ``segrepro ...`` in it; ``&&`` chains too)."""
        words = shlex.split(cmd)
        table = self.commands()
        found = []
        for i, word in enumerate(words):
            if word != ROOT_PACKAGE:
                continue
            best = None
            for n in range(i + 2, len(words) + 1):
                best = table.get(tuple(words[i + 1 : n]), best)
            if best is None:
                raise UserError(f"dvc.yaml: command {cmd!r} names no segrepro subcommand; fix the stage's cmd")
            found.append(best)
        return found

    # -- closure ----------------------------------------------------------------------------------------
    def modules_of(self, cli_function: str) -> set[str]:
        """Every segrepro module the command ``cli_function`` (a function of segrepro.cli) imports."""
        walker = _Walker(self)
        walker.reach(CLI_MODULE, cli_function)
        return walker.loaded

    def files_of(self, modules: set[str], root: Path) -> list[str]:
        """``modules`` as dvc deps relative to ``root``: whole package folders where every module is in."""
        paths = {self.modules[m].path for m in modules}
        out: list[str] = []

        def visit(pkg_dir: Path) -> None:
            below = [m.path for m in self.modules.values() if pkg_dir in m.path.parents]
            if below and all(p in paths for p in below):
                out.append(pkg_dir.relative_to(root).as_posix())
                return
            for p in sorted(pkg_dir.iterdir()):
                if p.is_dir() and (p / "__init__.py").is_file():
                    visit(p)
                elif p in paths:
                    out.append(p.relative_to(root).as_posix())

        visit(self.src / ROOT_PACKAGE)
        return sorted(out)


class _Walker:
    """One command's closure: modules loaded and dispatch-module functions reached."""

    def __init__(self, graph: ImportGraph) -> None:
        self.graph = graph
        self.loaded: set[str] = set()
        self.reached: set[tuple[str, str]] = set()

    def load(self, name: str) -> None:
        if name in self.loaded or name not in self.graph.modules:
            return
        self.loaded.add(name)
        parent = name.rpartition(".")[0]
        if parent:
            self.load(parent)
        mod = self.graph.modules[name]
        if name in DISPATCH:  # only what runs at import; functions are followed when reached
            for target in self._imports(mod, _top_level(mod.tree)):
                self._use(target)
            return
        for target in self._imports(mod, ast.walk(mod.tree)):
            self._use(target)
        for node in ast.walk(mod.tree):
            text = _const(node) if isinstance(node, ast.Constant) else None
            if text and text.startswith(ROOT_PACKAGE + ".") and text in self.graph.modules:
                self.load(text)
            if isinstance(node, ast.Call) and _name_of(node.func) in ("import_module", "importlib.import_module"):
                if not (node.args and isinstance(node.args[0], ast.Constant)):
                    for other in self.graph.modules:
                        if other.startswith(mod.package + "."):
                            self.load(other)

    def reach(self, module: str, func: str) -> None:
        """Follow ``func`` of the dispatch module ``module``: its imports and the names it uses."""
        if (module, func) in self.reached:
            return
        self.reached.add((module, func))
        self.load(module)
        mod = self.graph.modules[module]
        node = mod.defs[func]
        bindings = dict(self._bindings(mod, _top_level(mod.tree)))
        bindings.update(self._bindings(mod, ast.walk(node)))
        for target in self._imports(mod, ast.walk(node)):
            self._use(target)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in bindings:
                base, attr = bindings[sub.value.id]
                if attr is None:
                    self._use((base, sub.attr))
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                if sub.id in bindings:
                    self._use(bindings[sub.id])
                elif sub.id in mod.defs:
                    self.reach(module, sub.id)

    def _use(self, target: Target) -> None:
        module, attr = target
        if attr is not None and f"{module}.{attr}" in self.graph.modules:
            self.load(f"{module}.{attr}")
            return
        self.load(module)
        if attr is not None and module in DISPATCH and attr in self.graph.modules[module].defs:
            self.reach(module, attr)

    def _imports(self, mod: _Module, nodes: Iterator[ast.AST]) -> Iterator[Target]:
        for _, target in self._bindings(mod, nodes):
            yield target

    def _bindings(self, mod: _Module, nodes: Iterator[ast.AST]) -> Iterator[tuple[str, Target]]:
        """(bound name, target) for every segrepro import among ``nodes``."""
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _in_package(alias.name):
                        parts = alias.name.split(".")
                        for i in range(1, len(parts)):  # `import a.b.c` imports a and a.b too
                            yield "", (".".join(parts[:i]), None)
                        yield (alias.asname or parts[0]), (alias.name if alias.asname else parts[0], None)
                        yield "", (alias.name, None)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(mod, node)
                if _in_package(base):
                    for alias in node.names:
                        sub = f"{base}.{alias.name}"
                        target = (sub, None) if sub in self.graph.modules else (base, alias.name)
                        yield (alias.asname or alias.name), (base, None) if alias.name == "*" else target


def _top_level(tree: ast.Module) -> Iterator[ast.AST]:
    """Nodes that run at import: everything outside function bodies (class bodies do run)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def _absolute(mod: _Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = mod.package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _in_package(name: str) -> bool:
    return name == ROOT_PACKAGE or name.startswith(ROOT_PACKAGE + ".")


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name_of(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


# -- dvc.yaml ---------------------------------------------------------------------------------------------
def _yaml() -> Any:
    from ruamel.yaml import YAML  # DVC's own round-trip parser: comments and layout survive --write

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _bodies(stages: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(stage name, the mapping holding its cmd/deps), for plain, foreach/do and matrix stages."""
    for name, stage in stages.items():
        yield name, stage["do"] if "do" in stage else stage


def _code_dep(dep: Any) -> bool:
    text = dep if isinstance(dep, str) else next(iter(dep), "")
    return text == f"src/{ROOT_PACKAGE}" or text.startswith(f"src/{ROOT_PACKAGE}/")


def derived_deps(dvc_yaml: Path, root: Path | None = None) -> dict[str, list[str]]:
    """Stage name → its derived ``src/segrepro`` deps (stages whose command does not run segrepro are left out)."""
    root = Path(root or Path(dvc_yaml).parent)
    graph = ImportGraph(root / "src")
    doc = _yaml().load(Path(dvc_yaml).read_text())
    out: dict[str, list[str]] = {}
    for name, body in _bodies(doc.get("stages", {})):
        cmds = body.get("cmd", [])
        modules: set[str] = set()
        funcs = [f for cmd in ([cmds] if isinstance(cmds, str) else cmds) for f in graph.commands_of(str(cmd))]
        for func in funcs:
            modules |= graph.modules_of(func)
        if funcs:
            out[name] = graph.files_of(modules, root)
    return out


def check(dvc_yaml: Path) -> list[str]:
    """One line per stage whose listed ``src/segrepro`` deps differ from the derived ones."""
    derived = derived_deps(dvc_yaml)
    doc = _yaml().load(Path(dvc_yaml).read_text())
    problems = []
    for name, body in _bodies(doc.get("stages", {})):
        if name not in derived:
            continue
        listed = sorted(str(d) for d in body.get("deps", []) if _code_dep(d))
        if listed != derived[name]:
            missing = sorted(set(derived[name]) - set(listed))
            extra = sorted(set(listed) - set(derived[name]))
            problems.append(
                f"{dvc_yaml}: stage {name}: code deps differ from its imports (missing {missing}, not imported {extra})"
            )
    return problems


def write(dvc_yaml: Path) -> bool:
    """Rewrite every stage's ``src/segrepro`` deps to the derived ones (other deps keep their order)."""
    derived = derived_deps(dvc_yaml)
    y = _yaml()
    text = Path(dvc_yaml).read_text()
    doc = y.load(text)
    for name, body in _bodies(doc.get("stages", {})):
        if name in derived:
            deps = body.setdefault("deps", [])
            keep = [d for d in deps if not _code_dep(d)]
            deps[:] = keep + derived[name]
    buf = io.StringIO()
    y.dump(doc, buf)
    if buf.getvalue() == text:
        return False
    from segrepro.io import atomic_write_text

    atomic_write_text(Path(dvc_yaml), buf.getvalue())
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segrepro.depgraph", description=__doc__.splitlines()[0])
    parser.add_argument("--dvc", type=Path, default=Path("dvc.yaml"), help="dvc.yaml to read (default: ./dvc.yaml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 2 when a stage's code deps differ from its imports")
    mode.add_argument("--write", action="store_true", help="rewrite the code deps of every stage in place")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.dvc)
            if problems:
                raise UserError("; ".join(problems) + "; run `python -m segrepro.depgraph --write`")
            print(f"{args.dvc}: every stage depends on the segrepro modules its command imports")
        elif args.write:
            print(f"{args.dvc}: {'rewritten' if write(args.dvc) else 'already up to date'}")
        else:
            for name, deps in derived_deps(args.dvc).items():
                print(f"{name}: {' '.join(deps)}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
