"""Safe evaluation of density expressions such as ``"1 + 0.5*cos(theta)"``.

The expression is parsed with :mod:`ast` and only a whitelist of node types,
names and functions is accepted: numbers, the coordinate names of the feature
space, ``pi`` and ``e``, the arithmetic operators ``+ - * / **`` and a fixed
set of elementary functions.  Nothing is ever passed to :func:`eval`, so
attribute access, subscripts, lambdas, comprehensions or builtins cannot be
reached.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping

import numpy as np

from .errors import ConfigError

FUNCTIONS = {
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "arcsin": np.arcsin,
    "arccos": np.arccos,
    "arctan": np.arctan,
    "arctan2": np.arctan2,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "minimum": np.minimum,
    "maximum": np.maximum,
}
CONSTANTS = {"pi": np.pi, "e": np.e}

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _describe_allowed(variables) -> str:
    return (
        f"variables {sorted(variables)}, constants {sorted(CONSTANTS)}, "
        f"functions {sorted(FUNCTIONS)} and + - * / **"
    )


def compile_expression(text: str, variables, key: str = "expression"):
    """Check ``text`` and return a callable ``f(**arrays) -> ndarray``.

    Raises :class:`ConfigError` naming ``key`` for any syntax error or any
    construct outside the whitelist.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(key, "expected a non-empty expression string")
    if len(text) > 10_000:
        raise ConfigError(key, "expression longer than 10000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(key, f"invalid expression {text!r}: {exc.msg}") from None
    allowed = set(variables)

    def check(node):
        if isinstance(node, ast.Expression):
            return check(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ConfigError(key, f"only numeric literals are allowed, got {node.value!r}")
            return
        if isinstance(node, ast.Name):
            if node.id not in allowed and node.id not in CONSTANTS:
                raise ConfigError(
                    key, f"unknown name {node.id!r}; allowed: {_describe_allowed(allowed)}"
                )
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            check(node.left)
            check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
            check(node.operand)
            return
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.dump(node.func)
                raise ConfigError(
                    key, f"function {name!r} is not allowed; allowed: {sorted(FUNCTIONS)}"
                )
            if node.keywords:
                raise ConfigError(key, "keyword arguments are not allowed in expressions")
            for arg in node.args:
                check(arg)
            return
        raise ConfigError(
            key,
            f"construct {type(node).__name__!r} is not allowed; "
            f"allowed: {_describe_allowed(allowed)}",
        )

    check(tree)

    def evaluate(node, env):
        if isinstance(node, ast.Expression):
            return evaluate(node.body, env)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return env[node.id] if node.id in env else CONSTANTS[node.id]
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](evaluate(node.left, env), evaluate(node.right, env))
        if isinstance(node, ast.UnaryOp):
            return _UNOPS[type(node.op)](evaluate(node.operand, env))
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(evaluate(a, env) for a in node.args))
        raise AssertionError("unreachable: node was checked")  # pragma: no cover

    def f(env: Mapping[str, np.ndarray]) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(evaluate(tree, env), dtype=float)

    return f
