"""CEL expressions over a stream's attributes, with the ``cel-python`` library (``celpy``).

An expression is parsed and transpiled to Python once per distinct text (a process-wide
cache) when config arrives; a syntax error raises :class:`CelError`, which the listener
compiler turns into a NACK. Evaluating never raises: an absent attribute or a type error makes
the result ``None`` (for a filter: false, as Envoy evaluates errors), and is counted in
:attr:`CelProgram.errors`.

Cost. ``celpy`` spends tens of microseconds per evaluation. CEL has no side effects and no
clock, so the result is a function of the attribute values the expression selects. When every
identifier of the expression is an attribute path made of fields and literal keys
(``response.code``, ``request.headers['x-user']``), those values are read natively and the
result is memoized by them: ``response.code >= 400`` runs ``celpy`` once per distinct status
code. Paths that reach a map (``size(request.headers)``) or expressions with comprehension
variables are evaluated every time.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

import celpy
import lark
from celpy import celparser, celtypes
from celpy.evaluation import TranspilerTree, celstr

from pistio.proxy.access_log.stream_info import StreamInfo
from pistio.proxy.cel.attributes import (
    FIELDS,
    PLAIN_MAP_ENTRIES,
    ROOTS,
    VOLATILE,
    HeaderMap,
    plain_attribute,
    root,
)

# celpy logs every evaluation error at ERROR level; an error here is an ordinary outcome
# (an absent attribute), counted by the program, never a log line per request.
logging.getLogger("celpy").setLevel(logging.CRITICAL)

_MEMO_LIMIT = 1024
_MISSING = object()
_PROGRAMS: dict[str, CelProgram] = {}
_environment: celpy.Environment | None = None


class CelError(ValueError):
    """An expression that does not compile; the message names it and says why."""


def _env() -> celpy.Environment:
    global _environment
    if _environment is None:
        # celpy caches one parser per process, built with the first runner's tree class; the
        # transpiler needs its own, so a parser built for the interpreter is replaced.
        cached = celparser.CELParser.CEL_PARSER
        if cached is not None and cached.options.tree_class is not TranspilerTree:
            celparser.CELParser.CEL_PARSER = None
        _environment = celpy.Environment(runner_class=celpy.CompiledRunner)
    return _environment


def compile_expression(text: str) -> CelProgram:
    """The compiled program for ``text`` (cached by text); raises :class:`CelError`."""
    program = _PROGRAMS.get(text)
    if program is None:
        program = _PROGRAMS[text] = CelProgram(text)
    return program


class CelProgram:
    """One compiled expression: :meth:`evaluate` gives its value for a stream."""

    __slots__ = ("text", "errors", "_runner", "_roots", "_paths", "_memo")

    def __init__(self, text: str) -> None:
        self.text = text
        self.errors = 0  # evaluations that failed (absent attribute, type error)
        if not text.strip():
            raise CelError(f"CEL expression {text!r}: empty expression")
        env = _env()
        try:
            ast = env.compile(text)
            self._runner = env.program(ast)
        except celparser.CELParseError as err:
            raise CelError(f"CEL expression {text!r}: {_syntax_error(err)}") from None
        except Exception as err:  # celpy's transpiler refusing a construct it cannot compile
            raise CelError(f"CEL expression {text!r}: {type(err).__name__}: {err}") from None
        idents: set[str] = set()
        paths: list[tuple[Any, ...]] = []
        _collect(ast, idents, paths)
        unknown = idents - ROOTS
        self._roots = tuple(sorted(idents & ROOTS))
        # Memoizable: only attribute paths below a root (see the module docstring).
        memoizable = not unknown and all(len(p) > 1 and p[:2] not in VOLATILE for p in paths)
        self._paths = tuple(_path_reader(p) for p in dict.fromkeys(paths)) \
            if memoizable else None
        self._memo: dict[tuple[Any, ...], Any] = {}

    def __repr__(self) -> str:
        return f"CelProgram({self.text!r})"

    def evaluate(self, info: StreamInfo, extra: Mapping[str, Any] | None = None) -> Any:
        """The expression's value as a plain Python value (``bool``, ``int``, ``str``,
        ``float``, ``bytes``, ``dict``, ``list``, ``datetime``, ``timedelta``), or ``None`` when
        it cannot be evaluated (absent attribute, no such overload...). ``extra`` adds or
        overrides top-level identifiers (plain Python or CEL values)."""
        if self._paths is not None and extra is None:
            key = self._key(info)
            if key is not None:
                memo = self._memo
                value = memo.get(key, _MISSING)
                if value is _MISSING:
                    if len(memo) >= _MEMO_LIMIT:
                        memo.clear()
                    value = memo[key] = self._run(info, None)
                if value is None:
                    self.errors += 1
                return value
        value = self._run(info, extra)
        if value is None:
            self.errors += 1
        return value

    def matches(self, info: StreamInfo) -> bool:
        """A filter's verdict: true only when the expression evaluates to ``true``."""
        return self.evaluate(info) is True

    def _run(self, info: StreamInfo, extra: Mapping[str, Any] | None) -> Any:
        activation: dict[str, Any] = {name: root(info, name) for name in self._roots}
        if extra:
            for name, value in extra.items():
                activation[name] = value if _is_cel(value) else celpy.json_to_cel(value)
        try:
            result = self._runner.evaluate(activation)
        except Exception:  # celpy's CELEvalError, or a Python error inside a function
            return None
        return to_python(result)

    def _key(self, info: StreamInfo) -> tuple[Any, ...] | None:
        """The plain values of the selected attribute paths (``_MISSING`` where absent), or
        ``None`` when one of them is a map or a list (then the program is run unmemoized)."""
        values = []
        for read in self._paths or ():
            value = read(info)
            if value is None:
                value = _MISSING
            elif isinstance(value, dict | list):
                return None
            values.append(value)
        return tuple(values)


def _path_reader(path: tuple[Any, ...]) -> Callable[[StreamInfo], Any]:
    """A function reading one attribute path's plain value (``None``: absent), made once."""
    name, field = path[0], path[1]
    if len(path) == 3:
        entry = PLAIN_MAP_ENTRIES.get((name, field))
        if entry is not None:  # one header: no map built
            key = path[2]
            return lambda info: entry(info, key)
    fields = FIELDS.get(name)
    if len(path) == 2 and fields is not None:
        getter = fields.get(field, (lambda info: None, None))[0]
        return getter
    rest = path[2:]

    def read(info: StreamInfo) -> Any:
        node = plain_attribute(info, name, field)
        for step in rest:
            if node.__class__ is HeaderMap:
                node = node.plain(step)
            elif isinstance(node, celtypes.MapType) and step in node:
                node = node.get(step)
            else:
                return None
            if node is None:
                return None
        return node

    return read


def _is_cel(value: Any) -> bool:
    return isinstance(value, celtypes.MapType | celtypes.ListType | celtypes.StringType
                      | celtypes.IntType | celtypes.UintType | celtypes.BoolType
                      | celtypes.DoubleType | celtypes.BytesType)


def to_python(value: Any) -> Any:
    """A CEL value as the plain Python value callers use (label values, filter verdicts)."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.BytesType):
        return bytes(value)
    if isinstance(value, celtypes.MapType):
        return {to_python(k): to_python(v) for k, v in value.items()}
    if isinstance(value, celtypes.ListType):
        return [to_python(v) for v in value]
    if isinstance(value, celtypes.TimestampType):
        return datetime.datetime.fromtimestamp(value.timestamp(), tz=datetime.UTC)
    if isinstance(value, celtypes.DurationType):
        return datetime.timedelta(seconds=value.total_seconds())
    if value is None or isinstance(value, Exception):
        return None
    return value


def _syntax_error(err: celparser.CELParseError) -> str:
    line, column = getattr(err, "line", None), getattr(err, "column", None)
    if line is None or column is None:
        return "syntax error: " + " ".join(str(err).split())
    return f"syntax error at line {line}, column {column}"


# --- which attributes an expression selects ---------------------------------------------------


def _collect(tree: Any, idents: set[str], paths: list[tuple[Any, ...]]) -> None:
    """Every identifier of the expression, and the longest attribute path at each use."""
    if not isinstance(tree, lark.Tree):
        return
    if tree.data == "member":
        path = _member_path(tree)
        if path is not None:
            idents.add(path[0])
            paths.append(path)
            # Keys inside the path are literals: nothing more to find below it.
            return
    if tree.data == "ident":
        idents.add(str(tree.children[0]))
        return
    # Function and method names are tokens, not trees: only their arguments are searched.
    for child in tree.children:
        _collect(child, idents, paths)


def _member_path(member: lark.Tree) -> tuple[Any, ...] | None:
    """``request.headers['x']`` → ``("request", "headers", "x")``; ``None`` if the member is
    anything but identifiers, field selections and literal keys."""
    if len(member.children) != 1 or not isinstance(member.children[0], lark.Tree):
        return None
    node = member.children[0]
    if node.data == "primary":
        inner = node.children[0] if node.children else None
        if isinstance(inner, lark.Tree) and inner.data == "ident":
            return (str(inner.children[0]),)
        return None
    if node.data == "member_dot":
        base = _member_path(node.children[0])
        return None if base is None else (*base, str(node.children[1]))
    if node.data == "member_index":
        base = _member_path(node.children[0])
        key = _literal_key(node.children[1])
        return None if base is None or key is None else (*base, key)
    return None


def _literal_key(expr: Any) -> Any:
    """The value of an expression that is one string or int literal, else ``None``."""
    node = expr
    while isinstance(node, lark.Tree) and len(node.children) == 1 and node.data != "literal":
        node = node.children[0]
    if not isinstance(node, lark.Tree) or node.data != "literal":
        return None
    token = node.children[0]
    if token.type in ("STRING_LIT", "MLSTRING_LIT"):
        return celstr(token)
    if token.type == "INT_LIT":
        return celtypes.IntType(int(token.value, 0))
    return None
