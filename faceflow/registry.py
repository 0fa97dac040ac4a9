"""Registries of named factories whose names are listed without importing the modules that define them.

A family module registers each entry with a call whose first argument is a literal name
(`@register_model("r50")`, `register_loss("arcface", margins={...})`). `Registry.declared()` finds these
calls by parsing the package's module files, so config checks and workflow planning know every name
without importing the families (which subclass OneFlow modules); `Registry.get(name)` imports the
declaring module on first use. Adding an entry therefore touches only the module that defines it.
"""
from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from faceflow.errors import ConfigError

Entry = TypeVar("Entry")


@dataclass(frozen=True)
class Declaration:
    """One registering call as read from the source: the name, its module and its literal options."""

    name: str
    module: str
    options: dict[str, Any]  # keyword arguments of the call that are literals (ast.literal_eval)
    parameters: tuple[str, ...] | None  # parameters of the decorated function, when the call decorates one


def _parameters(node: ast.AST) -> tuple[str, ...] | None:
    """Parameter names of a decorated function (or of a decorated class's __init__, without self)."""
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        return _parameters(init)[1:] if init is not None else ()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        return tuple(a.arg for a in args.posonlyargs + args.args + args.kwonlyargs)
    return None


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def read_declarations(path: Path, module: str, function: str) -> list[Declaration]:
    """Every call of `function` in one source file; ConfigError unless its first argument is a literal name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    decorated: dict[int, tuple[str, ...] | None] = {}
    for node in ast.walk(tree):
        for decorator in getattr(node, "decorator_list", ()):
            decorated[id(decorator)] = _parameters(node)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _called_name(node) != function:
            continue
        first = node.args[0] if node.args else None
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            raise ConfigError(f"{path}:{node.lineno}: {function}() needs a literal name as its first argument "
                              "(names are read from the source without importing it)")
        options = {}
        for keyword in node.keywords:
            try:
                options[keyword.arg] = ast.literal_eval(keyword.value)
            except ValueError:
                continue  # a factory or other object: only known once the module is imported
        found.append(Declaration(first.value, module, options, decorated.get(id(node))))
    return found


class Registry(Generic[Entry]):
    """Entries registered by name in the modules of one package; `config_key` names the config key in errors."""

    def __init__(self, package: str, directory: str | Path, function: str, config_key: str, what: str) -> None:
        self.package = package
        self.directory = Path(directory)
        self.function = function
        self.config_key = config_key
        self.what = what
        self._entries: dict[str, Entry] = {}
        self._cache: dict[Path, tuple[tuple[int, int], list[Declaration]]] = {}

    def add(self, name: str, entry: Entry) -> None:
        """Runtime registration (what the registering call does when its module is imported)."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._entries[name] = entry

    def _module_files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.py") if p.name != "__init__.py")

    def declared(self) -> dict[str, Declaration]:
        """Name -> declaration, read from the package's module files (cached per file until it changes)."""
        result: dict[str, Declaration] = {}
        for path in self._module_files():
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._cache.get(path)
            if cached is None or cached[0] != stamp:
                cached = (stamp, read_declarations(path, f"{self.package}.{path.stem}", self.function))
                self._cache[path] = cached
            for declaration in cached[1]:
                if declaration.name in result:
                    raise ConfigError(f"{path}: {self.what} {declaration.name!r} is also registered in "
                                      f"{result[declaration.name].module}")
                result[declaration.name] = declaration
        return result

    def names(self) -> list[str]:
        """Every declared name, sorted."""
        return sorted(self.declared())

    def declaration(self, name: str) -> Declaration:
        """The declaration of `name`; ConfigError naming the config key when there is none."""
        declared = self.declared()
        if name not in declared:
            known = ", ".join(sorted(declared))
            raise ConfigError(f"{self.config_key}: unknown {self.what} {name!r} (known: {known})")
        return declared[name]

    def get(self, name: str) -> Entry:
        """The registered entry, importing its module on first use."""
        if name not in self._entries:
            importlib.import_module(self.declaration(name).module)
        if name not in self._entries:
            raise ConfigError(f"{self.config_key}: {self.what} {name!r} is declared in "
                              f"{self.declaration(name).module} but not registered by importing it")
        return self._entries[name]

    def load_all(self) -> dict[str, Entry]:
        """Import every module of the package that declares an entry; returns what they registered."""
        for module in sorted({d.module for d in self.declared().values()}):
            importlib.import_module(module)
        return dict(self._entries)
