"""`$(...)` substitutions of the ROS 2 launch front-ends (XML/YAML), evaluated to plain strings.

Supported: `$(var NAME)`, `$(env NAME [DEFAULT])`, `$(optenv NAME [DEFAULT])`,
`$(find-pkg-share PKG)` (mbrl_ros only: there is no ament index without a full ROS install),
`$(dirname)`, `$(filename)`, `$(anon NAME)`, `$(equals A B)`, `$(not-equals A B)` and a safe
`$(eval EXPR)`: literals, arithmetic, comparisons and boolean logic only — no names, calls or
attributes, so a launch file cannot run code through it. Substitutions nest (`$(env X $(var y))`)
and arguments may be quoted with '...' or "...".
"""
from __future__ import annotations

import ast
import operator
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class SubstitutionError(ValueError):
    """A substitution could not be evaluated; the message says which and why."""


@dataclass
class SubstitutionContext:
    variables: dict[str, str] = field(default_factory=dict)
    launch_file: Path | None = None
    environ: dict[str, str] | None = None  # None: os.environ at evaluation time

    def env(self) -> dict[str, str]:
        return os.environ if self.environ is None else self.environ


# ---- the evaluator ----------------------------------------------------------------------------

def substitute(text: str, ctx: SubstitutionContext) -> str:
    """Return `text` with every `$(...)` replaced by its value."""
    if not isinstance(text, str):
        raise TypeError(f'expected a string, got {type(text).__name__}')
    out, i = [], 0
    while i < len(text):
        j = text.find('$(', i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        value, i = _parse_one(text, j + 2, ctx)
        out.append(value)
    return ''.join(out)


def has_substitution(text) -> bool:
    return isinstance(text, str) and '$(' in text


def _parse_one(text: str, i: int, ctx: SubstitutionContext) -> tuple[str, int]:
    """Parse the substitution whose name starts at text[i]; return (value, index after ')')."""
    start = i - 2
    args: list[str] = []
    cur: list[str] = []
    in_token = False
    while True:
        if i >= len(text):
            raise SubstitutionError(f'unterminated substitution {text[start:]!r} (missing ")")')
        c = text[i]
        if text.startswith('$(', i):
            value, i = _parse_one(text, i + 2, ctx)
            cur.append(value)
            in_token = True
        elif c == ')':
            i += 1
            break
        elif c.isspace():
            if in_token:
                args.append(''.join(cur))
                cur, in_token = [], False
            i += 1
        elif c in '\'"':
            value, i = _parse_quoted(text, i, ctx)
            cur.append(value)
            in_token = True
        else:
            cur.append(c)
            in_token = True
            i += 1
    if in_token:
        args.append(''.join(cur))
    if not args:
        raise SubstitutionError(f'empty substitution {text[start:i]!r}')
    name, rest = args[0], args[1:]
    fn = _SUBSTITUTIONS.get(name)
    if fn is None:
        raise SubstitutionError(
            f'unknown substitution $({name} ...) in {text[start:i]!r}; supported: '
            + ', '.join(sorted(_SUBSTITUTIONS)))
    try:
        return fn(rest, ctx), i
    except SubstitutionError as exc:
        raise SubstitutionError(f'{text[start:i]}: {exc}') from None


def _parse_quoted(text: str, i: int, ctx: SubstitutionContext) -> tuple[str, int]:
    quote = text[i]
    i += 1
    out = []
    while True:
        if i >= len(text):
            raise SubstitutionError(f'unterminated quote {quote} in {text!r}')
        if text[i] == quote:
            return ''.join(out), i + 1
        if text.startswith('$(', i):
            value, i = _parse_one(text, i + 2, ctx)
            out.append(value)
        else:
            out.append(text[i])
            i += 1


def _nargs(name: str, args: list[str], lo: int, hi: int) -> None:
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f'{lo} to {hi}'
        raise SubstitutionError(f'$({name}) takes {want} argument(s), got {len(args)}')


def _var(args, ctx):
    _nargs('var', args, 1, 1)
    if args[0] not in ctx.variables:
        known = ', '.join(sorted(ctx.variables)) or 'none'
        raise SubstitutionError(f'undefined variable {args[0]!r} (defined here: {known})')
    return ctx.variables[args[0]]


def _env(args, ctx):
    _nargs('env', args, 1, 2)
    value = ctx.env().get(args[0])
    if value is None:
        if len(args) == 2:
            return args[1]
        raise SubstitutionError(f'environment variable {args[0]!r} is not set (give a default: $(env {args[0]} DEFAULT))')
    return value


def _optenv(args, ctx):
    _nargs('optenv', args, 1, 2)
    return ctx.env().get(args[0], args[1] if len(args) == 2 else '')


def _find_pkg_share(args, ctx):
    _nargs('find-pkg-share', args, 1, 1)
    from mbrl_ros.resources import PACKAGE, package_share
    if args[0] != PACKAGE:
        # Other packages would need the ament index of a full ROS 2 install.
        prefixes = [p for p in ctx.env().get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
        for prefix in prefixes:
            d = Path(prefix) / 'share' / args[0]
            if (d / 'package.xml').is_file():
                return str(d)
        raise SubstitutionError(
            f'package {args[0]!r} not found: only {PACKAGE!r} or packages under $AMENT_PREFIX_PATH '
            f'({":".join(prefixes) or "unset"}) can be resolved')
    try:
        return str(package_share())
    except FileNotFoundError as exc:
        raise SubstitutionError(str(exc)) from None


def _dirname(args, ctx):
    _nargs('dirname', args, 0, 0)
    if ctx.launch_file is None:
        raise SubstitutionError('$(dirname) needs a launch file')
    return str(Path(ctx.launch_file).resolve().parent)


def _filename(args, ctx):
    _nargs('filename', args, 0, 0)
    if ctx.launch_file is None:
        raise SubstitutionError('$(filename) needs a launch file')
    return str(Path(ctx.launch_file).resolve())


def _anon(args, ctx):
    _nargs('anon', args, 1, 1)
    key = '__anon__' + args[0]
    if key not in ctx.variables:  # the same name gives the same value within one launch
        ctx.variables[key] = f'{args[0]}_{uuid.uuid4().hex[:8]}'
    return ctx.variables[key]


def _equals(args, ctx):
    _nargs('equals', args, 2, 2)
    return 'true' if _norm(args[0]) == _norm(args[1]) else 'false'


def _not_equals(args, ctx):
    _nargs('not-equals', args, 2, 2)
    return 'false' if _norm(args[0]) == _norm(args[1]) else 'true'


def _norm(s: str) -> str:
    return s.lower() if s.lower() in ('true', 'false') else s


def _eval(args, ctx):
    if not args:
        raise SubstitutionError('$(eval) needs an expression')
    expr = ' '.join(args)
    return str(safe_eval(expr))


_SUBSTITUTIONS: dict[str, Callable[[list[str], SubstitutionContext], str]] = {
    'var': _var, 'env': _env, 'optenv': _optenv, 'find-pkg-share': _find_pkg_share,
    'dirname': _dirname, 'filename': _filename, 'anon': _anon, 'equals': _equals,
    'not-equals': _not_equals, 'eval': _eval,
}


# ---- safe $(eval) -----------------------------------------------------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
           ast.NotIn: lambda a, b: a not in b}
_NAMES = {'True': True, 'False': False, 'true': True, 'false': False, 'None': None}


def safe_eval(expr: str):
    """Evaluate a literal expression (numbers, strings, + - * / // %, comparisons, and/or/not,
    x if c else y) without Python's eval: there are no names, calls or attributes to reach."""
    try:
        tree = ast.parse(expr.strip(), mode='eval')
    except SyntaxError as exc:
        raise SubstitutionError(f'$(eval) cannot parse {expr!r}: {exc.msg}') from None
    return _ev(tree.body, expr)


def _ev(node, expr):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_ev(e, expr) for e in node.elts]
    if isinstance(node, ast.UnaryOp):
        v = _ev(node.operand, expr)
        if isinstance(node.op, ast.Not):
            return not v
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return +v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _ev(node.left, expr), _ev(node.right, expr)
        if isinstance(node.op, ast.Mult) and (isinstance(a, str) or isinstance(b, str)):
            raise SubstitutionError(f'$(eval) {expr!r}: string repetition is not allowed')
        try:
            return _BINOPS[type(node.op)](a, b)
        except (TypeError, ZeroDivisionError) as exc:
            raise SubstitutionError(f'$(eval) {expr!r}: {exc}') from None
    if isinstance(node, ast.BoolOp):
        vals = (_ev(v, expr) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare):
        left = _ev(node.left, expr)
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _CMPOPS:
                break
            right = _ev(right_node, expr)
            try:
                if not _CMPOPS[type(op)](left, right):
                    return False
            except TypeError as exc:
                raise SubstitutionError(f'$(eval) {expr!r}: {exc}') from None
            left = right
        else:
            return True
    if isinstance(node, ast.IfExp):
        return _ev(node.body, expr) if _ev(node.test, expr) else _ev(node.orelse, expr)
    raise SubstitutionError(
        f'$(eval) {expr!r}: {type(node).__name__} is not allowed (only literals, arithmetic, '
        'comparisons and and/or/not; no names, calls or attributes)')


def to_bool(value, what: str = 'condition') -> bool:
    """Launch-style truth value: true/false/1/0 (any case) or a YAML bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    s = str(value).strip().lower()
    if s in ('true', '1'):
        return True
    if s in ('false', '0'):
        return False
    raise SubstitutionError(f'{what} must be true/false/1/0, got {value!r}')
