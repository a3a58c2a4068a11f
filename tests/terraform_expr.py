"""Evaluate the Terraform expressions of terraform/ (validation conditions, preconditions, IAM
condition texts) without a terraform binary, with Terraform's regex engine.

Terraform's `regex()` is Go's regexp, RE2 syntax: Python's `re` accepts patterns RE2 refuses (a
repeat count above 1000, backreferences, lookarounds), so `regex` here is `re2` (google-re2), and a
pattern RE2 cannot compile is an error, which `can()` turns into false exactly as in Terraform.

Covers the subset the configuration uses: literals, `var.NAME` (with attribute and index access),
string templates with `${...}`, the operators `! && || == != < <= > >= + - * / %`, `? :`,
`[for x in coll : expr if cond]`, and the functions can, regex, alltrue, anytrue, values, keys,
length, floor, lower, upper, startswith, endswith, contains, cidrhost, tostring, tonumber.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any

import re2


class EvalError(Exception):
    """What Terraform reports as an error while evaluating (can() turns it into false)."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<str>")
  | (?P<op>&&|\|\||==|!=|<=|>=|=>|[!<>+\-*/%?:()\[\]{},.=])
  | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
""", re.X)


def _read_string(text: str, i: int) -> tuple[list[Any], int]:
    """A quoted template starting after its opening quote: parts are str or parsed expressions."""
    parts: list[Any] = []
    buf = []
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            buf.append(escapes.get(text[i + 1], text[i + 1]))
            i += 2
        elif ch == '"':
            parts.append("".join(buf))
            return parts, i + 1
        elif text.startswith("$${", i):
            buf.append("${")
            i += 3
        elif text.startswith("${", i):
            parts.append("".join(buf))
            buf = []
            depth, j = 1, i + 2
            while depth:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                elif text[j] == '"':
                    _, j = _read_string(text, j + 1)
                    continue
                j += 1
            parts.append(Parser(text[i + 2:j - 1]).parse())
            i = j
        else:
            buf.append(ch)
            i += 1
    raise EvalError("unterminated string")


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise EvalError(f"cannot read {text[i:i + 20]!r}")
        kind = m.lastgroup
        if kind == "str":
            parts, i = _read_string(text, m.end())
            out.append(("str", parts))
            continue
        if kind != "ws":
            out.append((kind, m.group()))  # type: ignore[arg-type]  # a str where string tokens hold parts
        i = m.end()
    return out


class Parser:
    def __init__(self, text: str) -> None:
        text = text.strip()
        if text.startswith("${") and text.endswith("}"):
            text = text[2:-1]
        self.toks = _tokens(text)
        self.i = 0

    def parse(self) -> Any:
        node = self.expr()
        if self.i != len(self.toks):
            raise EvalError(f"unexpected {self.toks[self.i]}")
        return node

    def peek(self, value: str | None = None) -> bool:
        return self.i < len(self.toks) and (value is None or self.toks[self.i][1] == value and self.toks[self.i][0] in ("op", "name"))

    def take(self, value: str | None = None) -> tuple[str, Any]:
        if value is not None and not self.peek(value):
            raise EvalError(f"expected {value!r} at {self.toks[self.i:self.i + 3]}")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expr(self) -> Any:
        cond = self.binary(0)
        if self.peek("?"):
            self.take("?")
            yes = self.expr()
            self.take(":")
            return ("cond", cond, yes, self.expr())
        return cond

    LEVELS = [("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/", "%")]

    def binary(self, level: int) -> Any:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.i < len(self.toks) and self.toks[self.i][0] == "op" and self.toks[self.i][1] in self.LEVELS[level]:
            op = self.take()[1]
            left = ("bin", op, left, self.binary(level + 1))
        return left

    def unary(self) -> Any:
        if self.peek("!"):
            self.take()
            return ("not", self.unary())
        if self.peek("-"):
            self.take()
            return ("neg", self.unary())
        return self.postfix()

    def postfix(self) -> Any:
        node = self.primary()
        while True:
            if self.peek("."):
                self.take()
                node = ("attr", node, self.take()[1])
            elif self.peek("["):
                self.take()
                node = ("index", node, self.expr())
                self.take("]")
            else:
                return node

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return ("lit", float(value) if "." in value else int(value))
        if kind == "str":
            return ("tmpl", value)
        if kind == "op" and value == "(":
            node = self.expr()
            self.take(")")
            return node
        if kind == "op" and value == "[":
            if self.peek("for"):
                return self.for_expr()
            items = []
            while not self.peek("]"):
                items.append(self.expr())
                if self.peek(","):
                    self.take()
            self.take("]")
            return ("list", items)
        if kind == "name":
            if value in ("true", "false"):
                return ("lit", value == "true")
            if value == "null":
                return ("lit", None)
            if self.peek("("):
                self.take()
                args = []
                while not self.peek(")"):
                    args.append(self.expr())
                    if self.peek(","):
                        self.take()
                self.take(")")
                return ("call", value, args)
            return ("ref", value)
        raise EvalError(f"unexpected {value!r}")

    def for_expr(self) -> Any:
        self.take("for")
        names = [self.take()[1]]
        if self.peek(","):
            self.take()
            names.append(self.take()[1])
        self.take("in")
        coll = self.expr()
        self.take(":")
        body = self.expr()
        cond = None
        if self.peek("if"):
            self.take()
            cond = self.expr()
        self.take("]")
        return ("for", names, coll, body, cond)


def _regex(pattern: str, value: str) -> Any:
    try:
        compiled = re2.compile(pattern)
    except Exception as exc:  # re2.error
        raise EvalError(f"invalid RE2 pattern {pattern!r}: {exc}") from None
    match = compiled.search(value)
    if match is None:
        raise EvalError(f"pattern {pattern!r} did not match {value!r}")
    return match.group(0)


def _cidrhost(prefix: str, n: int) -> str:
    try:
        return str(ipaddress.ip_network(prefix, strict=False)[int(n)])
    except (ValueError, IndexError) as exc:
        raise EvalError(str(exc)) from None


FUNCTIONS = {
    "regex": _regex,
    "alltrue": lambda xs: all(bool(x) for x in xs),
    "anytrue": lambda xs: any(bool(x) for x in xs),
    "values": lambda m: [m[k] for k in sorted(m)],
    "keys": lambda m: sorted(m),
    "length": len,
    "floor": math.floor,
    "lower": str.lower,
    "upper": str.upper,
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "contains": lambda xs, x: x in xs,
    "cidrhost": _cidrhost,
    "tostring": str,
    "tonumber": float,
}


def evaluate(node: Any, env: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "tmpl":
        parts = node[1]
        if len(parts) == 3 and parts[0] == "" and parts[2] == "" and not isinstance(parts[1], str):
            return evaluate(parts[1], env)
        return "".join(p if isinstance(p, str) else str(evaluate(p, env)) for p in parts)
    if kind == "ref":
        if node[1] not in env:
            raise EvalError(f"unknown name {node[1]}")
        return env[node[1]]
    if kind == "attr":
        base = evaluate(node[1], env)
        if not isinstance(base, dict) or node[2] not in base:
            raise EvalError(f"no attribute {node[2]}")
        return base[node[2]]
    if kind == "index":
        base, key = evaluate(node[1], env), evaluate(node[2], env)
        try:
            return base[key]
        except (KeyError, IndexError, TypeError):
            raise EvalError(f"no element {key!r}") from None
    if kind == "list":
        return [evaluate(n, env) for n in node[1]]
    if kind == "not":
        return not evaluate(node[1], env)
    if kind == "neg":
        return -evaluate(node[1], env)
    if kind == "cond":
        return evaluate(node[2] if evaluate(node[1], env) else node[3], env)
    if kind == "bin":
        op, a = node[1], evaluate(node[2], env)
        if op == "&&":
            return bool(a) and bool(evaluate(node[3], env))
        if op == "||":
            return bool(a) or bool(evaluate(node[3], env))
        b = evaluate(node[3], env)
        ops = {"==": lambda: a == b, "!=": lambda: a != b, "<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b,
               ">=": lambda: a >= b, "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b, "%": lambda: a % b}
        return ops[op]()
    if kind == "for":
        names, coll, body, cond = node[1], evaluate(node[2], env), node[3], node[4]
        items = list(coll.items()) if isinstance(coll, dict) else list(enumerate(coll))
        out = []
        for key, value in items:
            scope = dict(env)
            if len(names) == 2:
                scope[names[0]], scope[names[1]] = key, value
            else:
                scope[names[0]] = value
            if cond is None or evaluate(cond, scope):
                out.append(evaluate(body, scope))
        return out
    if kind == "call":
        name, args = node[1], node[2]
        if name == "can":
            try:
                evaluate(args[0], env)
            except EvalError:
                return False
            return True
        if name not in FUNCTIONS:
            raise EvalError(f"function {name} is not supported here")
        return FUNCTIONS[name](*[evaluate(a, env) for a in args])
    raise EvalError(f"cannot evaluate {kind}")


def holds(expression: str, env: dict[str, Any]) -> bool:
    """Whether a condition holds; an evaluation error is a failed condition, as in Terraform."""
    try:
        return bool(evaluate(Parser(expression).parse(), env))
    except EvalError:
        return False


def regex_patterns(expression: str) -> list[str]:
    """The literal patterns passed to regex() in an expression."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, tuple):
            if node[0] == "call" and node[1] == "regex" and node[2] and node[2][0][0] == "tmpl" and all(isinstance(p, str) for p in node[2][0][1]):
                found.append("".join(node[2][0][1]))
            for child in node[1:]:
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(Parser(expression).parse())
    return found
