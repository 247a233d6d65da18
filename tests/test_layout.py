"""The import graph of fdl keeps the layout of ARCHITECTURE.md: the lower floors never import the higher.

A static check: every file under `fdl/` and `experiments/` is parsed with `ast` (nothing is
imported), and every import in it becomes an edge `importing module -> imported module`:
`import a.b`, `from a import b` (b a submodule: the edge goes to `a.b`, otherwise to `a`),
relative imports (resolved against the importing module's package), and string names given to
`importlib.import_module` / `__import__` (a literal, an f-string's constant `fdl.x.` prefix, or a
module-level string constant, tuple or dict the call reads). Imports anywhere count: at module
level, inside functions, under `if TYPE_CHECKING:`; a lazy import is still a dependency.

The rules (one test each, so CI names the broken one):
  nn           `fdl.nn` never imports `fdl.train`, `fdl.data`, `fdl.config`, `fdl.runs`, `fdl.cli`
  data         `fdl.data` never imports `fdl.nn`, `fdl.train`
  engine       `fdl.train`, `fdl.population` never import `fdl.config`, `fdl.runs`, `fdl.cli`
  config       `fdl.config` never imports `fdl.runs`, `fdl.cli`
  cli-imports  nothing in `fdl/` or `experiments/` but `fdl.cli` itself imports `fdl.cli`
  cli-strings  no string literal there spells an import of `fdl.cli` either: `from fdl.cli ...`,
               `import fdl.cli`, `from fdl import cli`, `-m fdl.cli`, or a string that is just
               the name (`"fdl.cli.main"`, `"fdl.cli:main"`, as in `[python, "-m", "fdl.cli"]`).
               Docstrings count only in their doctest lines (`>>> `), so prose may name the
               command. `tests/` is not checked: the command's own tests must import it.
  circles      no import circle between modules.

Package `__init__` edges, the rule chosen:
  * An edge to a package is an edge to its `__init__` module, and `__init__`'s imports of its own
    submodules (re-exports) are ordinary edges. Python's implicit loading of a module's parent
    packages (importing `fdl.train.fit` first runs `fdl/__init__.py`) is NOT an edge: if it were,
    every module would sit in a circle with the root package, which re-exports nearly everything.
  * An import of a package the importing module lives in (`from fdl.nn import Dense` inside
    `fdl/nn/models.py`, `from fdl import load_run` inside `fdl/train/...`, or `import fdl` and then
    `fdl.runs.load_run`) loads nothing new: Python started that `__init__` before the importer.
    What the importer needs is the module the name comes from, so the edge is followed through
    the `__init__`'s re-exports (`from X import name` / `import X as name` in its body) to that
    module, stopping at the first one that is not a package around the importer. A whole
    enclosing package bound to a name is followed along the attribute chains the module reads
    (`fdl.runs.load_run` -> `fdl.runs`). A name the enclosing `__init__` defines itself keeps the
    edge to it (that one is a real circle: the `__init__` must get past importing the importer
    before the name exists). So sibling imports through the package are not circles, and a lower
    floor cannot reach a higher one unseen through the root's re-exports.

Each violation reads `path:line: importing.module imports target (how) -- the rule`.
"""
from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("fdl", "experiments")  # top-level folders whose .py files are read

# Spellings of an import of fdl.cli inside a string (`python -c "from fdl.cli import main"`).
CLI_IN_TEXT = re.compile(r"(?<![\w.])(?:from\s+fdl\.cli\b|import\s+fdl\.cli\b|"
                         r"from\s+fdl\s+import\s+[\w\s,()]*?\bcli\b|-m\s*fdl\.cli\b)")
CLI_NAME = re.compile(r"fdl\.cli(?:\.\w+)*(?::\w+)?")  # a whole string naming it: "fdl.cli.main"
IMPORT_FUNCTIONS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Edge:
    """One import: `source` (a module) needs `target` (a module), at `file:line`."""

    source: str
    target: str
    file: str
    line: int
    how: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target} ({self.how})"


@dataclass
class Tree:
    """The modules under a root, their import edges and the strings that spell an import of fdl.cli."""

    files: dict[str, str] = field(default_factory=dict)        # module -> path relative to root
    packages: set[str] = field(default_factory=set)            # modules that are an __init__.py
    # package -> name its __init__ binds at module level -> (module, attribute or None) it comes from
    reexports: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    cli_strings: list[Edge] = field(default_factory=list)

    def encloses(self, package: str, module: str) -> bool:
        """Whether `package` is `module` itself or a package around it (already running when it runs)."""
        return package == module or (package in self.packages and module.startswith(package + "."))

    def longest_module(self, dotted: str) -> tuple[str, list[str]]:
        """`a.b.c` -> (the longest scanned module it starts with, the names after it)."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in self.files:
                return ".".join(parts[:end]), parts[end:]
        return parts[0], parts[1:]

    def resolve(self, importer: str, module: str, parts: list[str], seen=None) -> set[str] | None:
        """The modules `importer` needs for `module.parts...`; None: an enclosing package, whole.

        Walks submodules first (`fdl` + [nn, core] -> fdl.nn.core); through an enclosing
        package it follows the `__init__`'s re-exports (see the module docstring).
        """
        seen = set() if seen is None else seen
        # `from P import name` takes P's attribute when P's __init__ binds one (as Python does),
        # else the submodule P.name.
        while parts and f"{module}.{parts[0]}" in self.files and \
                self.reexports.get(module, {}).get(parts[0], (module, parts[0])) == (module, parts[0]):
            module, parts = f"{module}.{parts[0]}", parts[1:]
        if not self.encloses(module, importer):
            return {module}
        if not parts:
            return None
        if (module, parts[0]) in seen:
            return set()
        seen.add((module, parts[0]))
        origin = self.reexports.get(module, {}).get(parts[0])
        if origin is None:  # defined in that module's own body
            return set() if module == importer else {module}
        found = self.resolve(importer, origin[0], ([origin[1]] if origin[1] else []) + parts[1:], seen)
        return set() if found is None else found


def module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(tree: Tree, module: str) -> str:
    return module if module in tree.packages else module.rpartition(".")[0]


def absolute(tree: Tree, module: str, name: str | None, level: int) -> str:
    """The absolute module of `from <level dots><name> import ...` written in `module`."""
    if not level:
        return name or ""
    base = package_of(tree, module).split(".")
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def scoped_nodes(syntax: ast.Module) -> list[tuple[ast.AST, str]]:
    """Every node with its scope ("module level" or "in f()": the innermost enclosing function), one walk."""
    found, pending = [], [(syntax, "module level")]
    while pending:
        node, scope = pending.pop()
        found.append((node, scope))
        inner = f"in {node.name}()" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
        pending.extend((child, inner) for child in ast.iter_child_nodes(node))
    return found


def attribute_chains(nodes) -> dict[str, list[list[str]]]:
    """name -> the attribute paths read from it (`fdl.runs.load_run` gives fdl: [[runs, load_run]])."""
    attributes = [node for node, _ in nodes if isinstance(node, ast.Attribute)]
    inner, chains = {id(node.value) for node in attributes}, {}
    for node in attributes:
        if id(node) not in inner:
            parts, value = [], node
            while isinstance(value, ast.Attribute):
                parts.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                chains.setdefault(value.id, []).append(parts)
    return chains


def string_constants(syntax: ast.Module) -> dict[str, list[str]]:
    """Module-level NAME = "x" / ("x", ...) / {"k": "x"}: name -> its strings (values for a dict)."""
    found = {}
    for node in syntax.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            value = node.value
            items = value.values if isinstance(value, ast.Dict) else \
                value.elts if isinstance(value, (ast.Tuple, ast.List, ast.Set)) else [value]
            strings = [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and strings:
                    found[target.id] = strings
    return found


def import_names(call: ast.Call, constants: dict[str, list[str]], module: str, tree: Tree):
    """The module names a call to importlib.import_module / __import__ may load, with how it says so."""
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name not in IMPORT_FUNCTIONS or not call.args:
        return []
    argument, how = call.args[0], f"{name}() string"
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        names = [argument.value]
    elif isinstance(argument, ast.JoinedStr):  # f"fdl.nn.{name}": some module under fdl.nn
        head = argument.values[0] if argument.values else None
        prefix = head.value if isinstance(head, ast.Constant) else ""
        names, how = ([prefix.rpartition(".")[0]] if "." in prefix else []), f"{name}() f-string"
    else:
        variable = argument.value if isinstance(argument, ast.Subscript) else argument
        names = constants.get(getattr(variable, "id", None), [])
        how = f"{name}() string from {getattr(variable, 'id', '?')}"
    package = call.args[1] if len(call.args) > 1 else next(
        (keyword.value for keyword in call.keywords if keyword.arg == "package"), None)
    anchor = package.value if isinstance(package, ast.Constant) and isinstance(package.value, str) else \
        package_of(tree, module) if getattr(package, "id", None) == "__package__" else \
        module if getattr(package, "id", None) == "__name__" else None
    resolved = []
    for text in names:
        if text.startswith(".") and anchor:  # import_module(".sub", __package__)
            level = len(text) - len(text.lstrip("."))
            text = ".".join(anchor.split(".")[:len(anchor.split(".")) - (level - 1)] + [text.lstrip(".")])
        if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text):
            resolved.append(text)
    return [(text, how) for text in resolved]


def docstring_ids(nodes) -> set[int]:
    ids = set()
    for node, _ in nodes:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                    isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def spells_cli_import(text: str) -> bool:
    return bool(CLI_IN_TEXT.search(text) or CLI_NAME.fullmatch(text.strip()))


def scan(root: Path, folders=SCANNED) -> Tree:
    """Parses every .py file under root/folders into a Tree (no module is imported)."""
    tree, syntaxes = Tree(), {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root)
            name = module_name(relative)
            tree.files[name] = relative.as_posix()
            if path.name == "__init__.py":
                tree.packages.add(name)
            syntax = ast.parse(path.read_text(encoding="utf-8"), filename=str(relative))
            syntaxes[name] = syntax, scoped_nodes(syntax)
    roots = {name.split(".")[0] for name in tree.files}
    listed = set()  # (source, target, line): one edge per import line and target

    for name in tree.packages:  # what each __init__ binds from elsewhere, at module level
        table = tree.reexports[name] = {}
        for node, scope in syntaxes[name][1]:
            if scope != "module level":
                continue
            if isinstance(node, ast.ImportFrom):
                base = absolute(tree, name, node.module, node.level)
                for alias in node.names:
                    if alias.name != "*":
                        table[alias.asname or alias.name] = (base, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        table[alias.asname] = (alias.name, None)

    for name, (syntax, nodes) in syntaxes.items():
        chains, constants, docstrings = attribute_chains(nodes), string_constants(syntax), docstring_ids(nodes)
        file = tree.files[name]

        def add(module, parts, line, how, bound=None, reads=None):
            """Edges for an import of `module` (and of the names `parts` from it).

            `bound` is the name the import binds here; when the import is of an enclosing package,
            whole, the attribute chains read from that name are followed from `reads`
            ((module, names) that name stands for; by default the imported thing itself).
            """
            if module.split(".")[0] not in roots:
                return  # the standard library or a third-party package
            found = tree.resolve(name, module, list(parts))
            if found is None:  # an enclosing package, whole: follow what the module reads from it
                start, names = reads or (module, parts)
                found = set()
                for chain in chains.get(bound, []) if bound else []:
                    found |= tree.resolve(name, start, list(names) + chain) or set()
                how += f", read as {bound}.<attribute>"
            for target in sorted(found):
                if (name, target, line) not in listed:
                    listed.add((name, target, line))
                    tree.edges.append(Edge(name, target, file, line, how))

        for node, scope in nodes:
            if isinstance(node, ast.Import):  # `import a.b.c` names modules only: no attribute lookup
                for alias in node.names:
                    module, rest = tree.longest_module(alias.name)
                    if alias.asname:
                        add(module, rest, node.lineno, f"import, {scope}", bound=alias.asname)
                    else:
                        first = alias.name.split(".")[0]
                        add(module, rest, node.lineno, f"import, {scope}", bound=first, reads=(first, []))
            elif isinstance(node, ast.ImportFrom):
                base = absolute(tree, name, node.module, node.level)
                for alias in node.names:
                    parts = [] if alias.name == "*" else [alias.name]
                    add(base, parts, node.lineno, f"from-import, {scope}", bound=alias.asname or alias.name)
            elif isinstance(node, ast.Call):
                for text, how in import_names(node, constants, name, tree):
                    module, rest = tree.longest_module(text)
                    add(module, rest, node.lineno, f"{how}, {scope}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                lines = list(enumerate(node.value.splitlines()))
                if id(node) in docstrings:  # prose may name the command; doctest lines may not import it
                    lines = [(at, line) for at, line in lines if line.lstrip().startswith((">>>", "..."))]
                hits = [(at, line.strip()) for at, line in lines if spells_cli_import(line)]
                if not hits and id(node) not in docstrings and spells_cli_import(node.value):
                    hits = [(0, node.value.strip())]  # split over lines, or the whole string is the name
                if hits:
                    at, text = hits[0]
                    tree.cli_strings.append(Edge(name, "fdl.cli", file, node.lineno + at, f"string {text[:80]!r}"))
    tree.edges.sort(key=lambda edge: (edge.file, edge.line, edge.target))  # the first edge per pair is the earliest
    tree.cli_strings.sort(key=lambda hit: (hit.file, hit.line))
    return tree


def inside(module: str, packages) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


@dataclass(frozen=True)
class Forbidden:
    """Modules in `sources` never import modules in `targets` (a package covers its submodules)."""

    id: str
    sources: tuple[str, ...]  # () = every scanned module
    targets: tuple[str, ...]
    exempt: tuple[str, ...] = ()

    def check(self, tree: Tree) -> list[str]:
        rule = f"{' / '.join(self.sources)} must never import {' / '.join(self.targets)}" if self.sources else \
            f"nothing outside {' / '.join(self.exempt)} may import {' / '.join(self.targets)}"
        return [f"{edge} -- {rule}" for edge in tree.edges
                if (not self.sources or inside(edge.source, self.sources)) and not inside(edge.source, self.exempt)
                and inside(edge.target, self.targets)]


@dataclass(frozen=True)
class CliInStrings:
    id: str = "cli-strings"

    def check(self, tree: Tree) -> list[str]:
        return [f"{hit} -- nothing imports fdl.cli, not even through a string" for hit in tree.cli_strings
                if not inside(hit.source, ("fdl.cli",))]


@dataclass(frozen=True)
class NoCircles:
    id: str = "circles"

    def check(self, tree: Tree) -> list[str]:
        graph: dict[str, dict[str, Edge]] = {}
        for edge in tree.edges:  # the first edge per pair is the one shown
            if edge.source != edge.target:
                graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
        return [self.describe(component, graph) for component in strongly_connected(graph) if len(component) > 1]

    @staticmethod
    def describe(component: set[str], graph) -> str:
        """One shortest circle through the component's first module, each step with its file:line."""
        start = min(component)
        previous, queue = {start: None}, deque([start])
        while queue:
            module = queue.popleft()
            for target in sorted(graph.get(module, {})):
                if target == start:
                    steps, node = [graph[module][start]], module
                    while previous[node] is not None:
                        steps.insert(0, graph[previous[node]][node])
                        node = previous[node]
                    modules = " -> ".join([start] + [step.target for step in steps])
                    return f"import circle {modules} (among {len(component)} modules: " \
                           f"{', '.join(sorted(component))}):\n    " + "\n    ".join(map(str, steps))
                if target in component and target not in previous:
                    previous[target] = module
                    queue.append(target)
        raise AssertionError(f"no circle through {start}")  # unreachable for a strong component


def strongly_connected(graph: dict[str, dict]) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


RULES = [
    Forbidden("nn", ("fdl.nn",), ("fdl.train", "fdl.data", "fdl.config", "fdl.runs", "fdl.cli")),
    Forbidden("data", ("fdl.data",), ("fdl.nn", "fdl.train")),
    Forbidden("engine", ("fdl.train", "fdl.population"), ("fdl.config", "fdl.runs", "fdl.cli")),
    Forbidden("config", ("fdl.config",), ("fdl.runs", "fdl.cli")),
    Forbidden("cli-imports", (), ("fdl.cli",), exempt=("fdl.cli",)),
    CliInStrings(),
    NoCircles(),
]


@pytest.fixture(scope="module")
def repository() -> Tree:
    tree = scan(ROOT)
    # A scan that found nothing would pass every rule: make sure it read the package.
    assert {"fdl", "fdl.nn", "fdl.data", "fdl.train", "fdl.config", "fdl.runs", "fdl.cli"} <= tree.packages
    assert len(tree.edges) > 100
    return tree


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_layout_rule(rule, repository):
    violations = rule.check(repository)
    assert not violations, f"{len(violations)} import(s) break ARCHITECTURE.md ({rule.id}):\n" + "\n".join(violations)


SYNTHETIC = {  # a small tree with known violations of every rule, and traps that are not violations
    "fdl/__init__.py": "from fdl import nn, train\nfrom fdl.runs import load_run\n",
    "fdl/nn/__init__.py": "from fdl.nn.dense import Dense\nfrom fdl.nn.models import mlp\n",
    "fdl/nn/dense.py": "def Dense():\n    return None\n",
    # trap: siblings through the package and through `import fdl` are not circles
    "fdl/nn/models.py": "import fdl\nfrom fdl.nn import Dense\n\n\ndef mlp():\n    return fdl.nn.Dense()\n",
    "fdl/nn/lazy.py": "import importlib\n\n\ndef later():\n    return importlib.import_module('fdl.train.fit')\n",
    "fdl/data/__init__.py": "\"\"\"Prose may say: nothing here runs `from fdl.cli import main`.\"\"\"\n"
                            "COMMAND = 'python -c \"from fdl.cli import main\"'\n",
    "fdl/data/views.py": "from ..nn import dense\n",
    "fdl/train/__init__.py": "from .fit import fit\n",
    "fdl/train/fit.py": "def fit():\n    from . import loop\n    return loop\n",  # circle, hidden in a function
    "fdl/train/loop.py": "from fdl.train.fit import fit\nfrom fdl import load_run\n",
    "fdl/train/lazy.py": "_TARGETS = {'c': 'fdl.config'}\n\n\ndef get(name):\n"
                         "    import importlib\n    return importlib.import_module(_TARGETS[name])\n",
    "fdl/population/__init__.py": "from fdl import config\n",
    "fdl/config/__init__.py": "from fdl.cli.main import main\n",
    "fdl/runs/__init__.py": "def load_run():\n    return None\n",
    "fdl/cli/__init__.py": "from fdl.cli.main import main\n",
    "fdl/cli/main.py": "import subprocess\n\n\ndef main():\n    subprocess.run(['python', '-m', 'fdl.cli'])\n",
    "experiments/demo.py": "import subprocess\n\nsubprocess.run(['python', '-m', 'fdl.cli.main'])\n",
}
EXPECTED = {
    "nn": ["fdl/nn/lazy.py:5: fdl.nn.lazy imports fdl.train.fit (import_module() string, in later())"],
    "data": ["fdl/data/views.py:1: fdl.data.views imports fdl.nn.dense"],
    "engine": ["fdl/train/loop.py:2: fdl.train.loop imports fdl.runs",
               "fdl/train/lazy.py:6: fdl.train.lazy imports fdl.config",
               "fdl/population/__init__.py:1: fdl.population imports fdl.config"],
    "config": ["fdl/config/__init__.py:1: fdl.config imports fdl.cli.main"],
    "cli-imports": ["fdl/config/__init__.py:1: fdl.config imports fdl.cli.main"],
    "cli-strings": ["fdl/data/__init__.py:2: fdl.data imports fdl.cli", "experiments/demo.py:3: experiments.demo"],
    "circles": ["import circle fdl.train.fit -> fdl.train.loop -> fdl.train.fit",
                "fdl/train/fit.py:2: fdl.train.fit imports fdl.train.loop (from-import, in fit())"],
}


def test_the_checker_catches_a_known_violation_of_every_rule(tmp_path):
    for relative, source in SYNTHETIC.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(source)
    tree = scan(tmp_path)
    for rule in RULES:
        report = "\n".join(rule.check(tree))
        missing = [line for line in EXPECTED[rule.id] if line not in report]
        assert not missing, f"rule {rule.id} missed {missing}; it reported:\n{report}"
    circles = NoCircles().check(tree)
    assert len(circles) == 1, circles  # the re-exporting __init__s and fdl.nn.models form none
    assert len(Forbidden("cli-imports", (), ("fdl.cli",), exempt=("fdl.cli",)).check(tree)) == 1
    assert len(CliInStrings().check(tree)) == 2  # fdl.cli's own string and the docstring's prose are allowed
