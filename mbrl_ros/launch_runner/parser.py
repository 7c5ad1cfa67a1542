"""Parser for ROS 2 YAML launch files (`*.launch.yaml`), the subset this project uses.

    launch:
    - arg: {name: robot, default: arm7, description: ...}     # no default: required
    - let: {name: rate, value: "250"}
    - node:
        pkg: mbrl_ros
        exec: sim_robot
        name: sim_robot
        namespace: ns
        output: screen
        args: "--extra"               # before --ros-args
        ros_args: "--log-level debug" # after --ros-args
        param: [{name: robot, value: $(var robot)}, {from: $(find-pkg-share mbrl_ros)/config/x.yaml}]
        remap: [{from: /a, to: /b}]
        respawn: false
        if: $(var use_sim)            # `if`/`unless` on any entry
    - executable: {cmd: "python3 $(dirname)/tool.py", name: tool, output: screen}
    - group: {scoped: true, namespace: arm, children: [...]}   # or `group: [...]`
    - include: {file: $(dirname)/other.launch.yaml, arg: [{name: robot, value: arm3}]}

The result is a LaunchPlan: a list of ProcessDescription (name, command line, env, output mode).
Inline parameters are written to a temporary `ros__parameters` file per node so that their YAML
types survive (a string "5" given through `$(var)` becomes the int 5, as with ros2 launch).
Differences from ros2 launch, on purpose: an `include` gets its own scope (an included file's
`let` does not leak into the includer), relative `include`/`from` paths are tried next to the
launch file before the working directory, and Python/XML launch files cannot be included.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mbrl_ros.launch_runner.description import LaunchArgument, LaunchError, LaunchPlan, ProcessDescription
from mbrl_ros.launch_runner.substitutions import (
    SubstitutionContext, SubstitutionError, substitute, to_bool)

PACKAGE = 'mbrl_ros'
OUTPUT_MODES = ('screen', 'log', 'both')
_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')

_KEYS = {
    'arg': {'name', 'default', 'description', 'choices', 'if', 'unless'},
    'let': {'name', 'value', 'if', 'unless'},
    'node': {'pkg', 'exec', 'name', 'namespace', 'output', 'args', 'ros_args', 'param', 'remap',
             'respawn', 'respawn_delay', 'respawn_max_retries', 'env', 'if', 'unless'},
    'executable': {'cmd', 'name', 'output', 'args', 'cwd', 'env', 'shell', 'respawn', 'respawn_delay',
                   'respawn_max_retries', 'if', 'unless'},
    'group': {'scoped', 'forwarding', 'keep', 'namespace', 'children', 'launch', 'if', 'unless'},
    'include': {'file', 'arg', 'if', 'unless'},
    'push-ros-namespace': {'namespace', 'if', 'unless'},
    'set_env': {'name', 'value', 'if', 'unless'},
    'unset_env': {'name', 'if', 'unless'},
}
_ALIASES = {'push_ros_namespace': 'push-ros-namespace', 'set-env': 'set_env', 'unset-env': 'unset_env'}


# ---- YAML with line numbers ---------------------------------------------------------------------

class _Map(dict):
    line = 0


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode):
    data = _Map()
    data.line = node.start_mark.line + 1
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in data:
            raise yaml.constructor.ConstructorError(
                None, None, f'duplicate key {key!r}', key_node.start_mark)
        data[key] = loader.construct_object(value_node, deep=True)


_Loader.add_constructor('tag:yaml.org,2002:map', _construct_map)


def load_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise LaunchError(f'{path}: cannot read: {exc.strerror}') from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass (adds line numbers)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f'{path}:{mark.line + 1}:{mark.column + 1}' if mark else str(path)
        raise LaunchError(f'{where}: YAML syntax error: {exc.problem or exc.context}') from None
    except yaml.YAMLError as exc:
        raise LaunchError(f'{path}: YAML error: {exc}') from None


# ---- scopes -------------------------------------------------------------------------------------

@dataclass
class _Scope:
    variables: dict[str, str]
    namespace: str = '/'
    env: dict[str, str | None] = field(default_factory=dict)

    def copy(self) -> '_Scope':
        return _Scope(dict(self.variables), self.namespace, dict(self.env))


def join_namespace(base: str, ns: str) -> str:
    """ROS namespace composition: a relative `ns` is pushed under `base`, an absolute one replaces it."""
    ns = ns.strip()
    if not ns:
        return base
    parts = ([] if ns.startswith('/') else base.strip('/').split('/')) + ns.strip('/').split('/')
    parts = [p for p in parts if p]
    for p in parts:
        if not _NAME_RE.match(p):
            raise ValueError(f'invalid namespace {ns!r}: {p!r} is not a valid name token '
                             '(letters, digits, underscores; not starting with a digit)')
    return '/' + '/'.join(parts)


# ---- the parser ---------------------------------------------------------------------------------

class _Entry:
    """Position of one entry, for error messages."""

    def __init__(self, file: Path, tag: str, body: Any, index: int, line: int = 0):
        self.file, self.tag, self.body = file, tag, body
        self.line = getattr(body, 'line', 0) or line
        self.index = index

    def label(self) -> str:
        name = None
        if isinstance(self.body, dict):
            name = self.body.get('name') or self.body.get('exec') or self.body.get('cmd') or self.body.get('file')
        named = f' {name!r}' if isinstance(name, str) else ''
        return f'{self.tag}{named}'

    def error(self, what: str) -> LaunchError:
        line = f':{self.line}' if self.line else ''
        return LaunchError(f'{self.file}{line}: {self.label()} (entry {self.index}): {what}')


class LaunchParser:
    def __init__(self, cli_args: dict[str, str] | None = None, workdir: Path | None = None,
                 environ: dict[str, str] | None = None):
        self.cli_args = dict(cli_args or {})
        self.environ = environ
        self._workdir = workdir
        self.processes: list[ProcessDescription] = []
        self.declared: dict[str, str] = {}  # every argument declared in the tree -> its value
        self.known: set[str] = set()         # argument names in entries skipped by if/unless
        self._params_count = 0
        self._made_workdir = False

    # -- entry points
    def parse(self, path: str | os.PathLike) -> LaunchPlan:
        path = Path(path).resolve()
        if not path.is_file():
            raise LaunchError(f'launch file {path} does not exist')
        try:
            self._parse_file(path, _Scope(dict(self.cli_args)), chain=())
            unknown = sorted(set(self.cli_args) - set(self.declared) - self.known)
            if unknown:
                declared = ', '.join(sorted(self.declared)) or 'none'
                raise LaunchError(
                    f'{path}: unknown launch argument(s) given: {", ".join(unknown)} '
                    f'(the file declares: {declared})')
            _unique_labels(self.processes)
        except BaseException:
            self._remove_workdir()
            raise
        return LaunchPlan(path, self.processes, dict(self.declared), self._workdir)

    def _remove_workdir(self):
        if self._workdir is not None and self._made_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix='mbrl_launch_'))
            self._made_workdir = True
        return self._workdir

    # -- files and entries
    def _parse_file(self, path: Path, scope: _Scope, chain: tuple[Path, ...]):
        doc = load_yaml(path)
        if not isinstance(doc, dict) or 'launch' not in doc:
            raise LaunchError(f'{path}: not a YAML launch file: the top level must be a mapping with a '
                              '`launch:` list')
        extra = sorted(set(doc) - {'launch'})
        if extra:
            raise LaunchError(f'{path}: unknown top-level key(s) {", ".join(map(repr, extra))} '
                              '(only `launch:` is allowed)')
        entries = doc['launch'] or []
        if not isinstance(entries, list):
            raise LaunchError(f'{path}: `launch:` must be a list of entries, got {type(entries).__name__}')
        self._entries(entries, scope, path, chain + (path,))

    def _entries(self, entries: list, scope: _Scope, path: Path, chain: tuple[Path, ...]):
        for i, item in enumerate(entries, 1):
            line = getattr(item, 'line', 0)
            where = f'{path}:{line}' if line else str(path)
            if not isinstance(item, dict) or len(item) != 1:
                raise LaunchError(f'{where}: entry {i} must be a mapping with exactly one tag '
                                  f'(one of: {", ".join(sorted(_KEYS))}), got {item!r}')
            (tag, body), = item.items()
            tag = _ALIASES.get(tag, tag)
            if tag not in _KEYS:
                raise LaunchError(f'{where}: entry {i}: unknown tag {tag!r} (known: {", ".join(sorted(_KEYS))})')
            e = _Entry(path, tag, body, i, line)
            self._check_keys(e)
            if not self._enabled(e, scope):
                self.known.update(_arg_names([item]))
                continue
            getattr(self, '_' + tag.replace('-', '_'))(e, scope, chain)

    def _check_keys(self, e: _Entry):
        body = e.body
        if e.tag == 'group' and isinstance(body, list):
            return
        if e.tag == 'include' and isinstance(body, str):
            return
        if e.tag == 'push-ros-namespace' and isinstance(body, str):
            return
        if not isinstance(body, dict):
            raise e.error(f'expected a mapping of attributes, got {type(body).__name__}')
        unknown = sorted(set(body) - _KEYS[e.tag])
        if unknown:
            raise e.error(f'unknown key(s) {", ".join(map(repr, unknown))} (allowed: {", ".join(sorted(_KEYS[e.tag]))})')

    # -- values
    def _ctx(self, scope: _Scope, e: _Entry) -> SubstitutionContext:
        env = dict(os.environ if self.environ is None else self.environ)
        for k, v in scope.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return SubstitutionContext(scope.variables, e.file, env)

    def _str(self, value, scope: _Scope, e: _Entry, key: str) -> str:
        if isinstance(value, bool):
            return 'true' if value else 'false'
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise e.error(f'`{key}` must be a string, got {type(value).__name__} {value!r}')
        try:
            return substitute(value, self._ctx(scope, e))
        except SubstitutionError as exc:
            raise e.error(f'`{key}`: {exc}') from None

    def _required(self, e: _Entry, key: str, scope: _Scope) -> str:
        if key not in e.body or e.body[key] is None:
            raise e.error(f'missing required key `{key}`')
        if key == 'name' and not isinstance(e.body[key], str):
            # YAML 1.1 reads on/off/yes/no as booleans: an easy trap for argument names.
            raise e.error(f'`name` must be a string, got {e.body[key]!r} (quote it)')
        return self._str(e.body[key], scope, e, key)

    def _bool(self, e: _Entry, key: str, scope: _Scope, default: bool) -> bool:
        if key not in e.body:
            return default
        value = e.body[key]
        if isinstance(value, str):
            value = self._str(value, scope, e, key)
        try:
            return to_bool(value, f'`{key}`')
        except SubstitutionError as exc:
            raise e.error(str(exc)) from None

    def _enabled(self, e: _Entry, scope: _Scope) -> bool:
        if not isinstance(e.body, dict):
            return True
        if 'if' in e.body and not self._bool(e, 'if', scope, True):
            return False
        if 'unless' in e.body and self._bool(e, 'unless', scope, False):
            return False
        return True

    def _list(self, e: _Entry, key: str) -> list:
        value = e.body.get(key) or []
        if not isinstance(value, list):
            raise e.error(f'`{key}` must be a list, got {type(value).__name__}')
        return value

    # -- tags
    def _arg(self, e: _Entry, scope: _Scope, chain):
        name = self._required(e, 'name', scope)
        if not _NAME_RE.match(name):
            raise e.error(f'invalid argument name {name!r}')
        if name in scope.variables:
            value = scope.variables[name]
        elif 'default' in e.body:
            value = self._str(e.body['default'], scope, e, 'default')
        else:
            origin = 'the command line (name:=value)' if len(chain) == 1 else f'the include in {chain[-2]}'
            raise e.error(f'required argument {name!r} not given; pass it on {origin}')
        choices = e.body.get('choices')
        if choices is not None:
            if not isinstance(choices, list):
                raise e.error('`choices` must be a list')
            allowed = [self._str(c, scope, e, 'choices') for c in choices]
            if value not in allowed:
                raise e.error(f'argument {name!r} = {value!r} is not one of {allowed}')
        scope.variables[name] = value
        self.declared[name] = value

    def _let(self, e: _Entry, scope: _Scope, chain):
        name = self._required(e, 'name', scope)
        scope.variables[name] = self._required(e, 'value', scope)

    def _set_env(self, e: _Entry, scope: _Scope, chain):
        scope.env[self._required(e, 'name', scope)] = self._required(e, 'value', scope)

    def _unset_env(self, e: _Entry, scope: _Scope, chain):
        scope.env[self._required(e, 'name', scope)] = None

    def _push_ros_namespace(self, e: _Entry, scope: _Scope, chain):
        ns = self._str(e.body, scope, e, 'namespace') if isinstance(e.body, str) else self._required(e, 'namespace', scope)
        try:
            scope.namespace = join_namespace(scope.namespace, ns)
        except ValueError as exc:
            raise e.error(str(exc)) from None

    def _group(self, e: _Entry, scope: _Scope, chain):
        body = e.body
        if isinstance(body, list):
            self._entries(body, scope.copy(), e.file, chain)
            return
        if 'children' in body and 'launch' in body:
            raise e.error('give the children either as `children` or as `launch`, not both')
        children = body.get('children', body.get('launch')) or []
        if not isinstance(children, list):
            raise e.error('the group children must be a list of entries')
        inner = scope.copy() if self._bool(e, 'scoped', scope, True) else scope
        if not self._bool(e, 'forwarding', scope, True):
            kept = {}
            for item in self._list(e, 'keep'):
                if not isinstance(item, dict) or set(item) != {'name', 'value'}:
                    raise e.error('`keep` entries must be {name, value} mappings')
                kept[self._str(item['name'], scope, e, 'keep')] = self._str(item['value'], scope, e, 'keep')
            inner.variables = kept
        if 'namespace' in body:
            try:
                inner.namespace = join_namespace(inner.namespace, self._str(body['namespace'], scope, e, 'namespace'))
            except ValueError as exc:
                raise e.error(str(exc)) from None
        self._entries(children, inner, e.file, chain)

    def _include(self, e: _Entry, scope: _Scope, chain):
        if isinstance(e.body, str):
            raw, args = e.body, []
        else:
            if 'file' not in e.body:
                raise e.error('missing required key `file`')
            raw, args = e.body['file'], self._list(e, 'arg')
        target = self._resolve_path(self._str(raw, scope, e, 'file'), e)
        if not target.is_file():
            raise e.error(f'included file {target} does not exist')
        if not target.name.endswith(('.yaml', '.yml')):
            raise e.error(f'cannot include {target.name}: `mbrl-ros launch` runs YAML launch files only')
        if target in chain:
            raise e.error('include cycle: ' + ' -> '.join(str(p) for p in chain + (target,)))
        inner = scope.copy()
        for item in args:
            if not isinstance(item, dict) or 'name' not in item or 'value' not in item or len(item) != 2:
                raise e.error(f'`arg` entries of an include must be {{name, value}} mappings, got {item!r}')
            inner.variables[self._str(item['name'], scope, e, 'arg')] = self._str(item['value'], scope, e, 'arg')
        self._parse_file(target, inner, chain)

    def _resolve_path(self, p: str, e: _Entry) -> Path:
        path = Path(p).expanduser()
        if not path.is_absolute():
            beside = e.file.parent / path
            path = beside if beside.exists() or not path.exists() else path.resolve()
        return path

    def _output(self, e: _Entry, scope: _Scope) -> str:
        out = self._str(e.body.get('output', 'screen'), scope, e, 'output')
        if out not in OUTPUT_MODES:
            raise e.error(f'`output` must be one of {", ".join(OUTPUT_MODES)}, got {out!r}')
        return out

    def _env(self, e: _Entry, scope: _Scope) -> dict[str, str | None]:
        env = dict(scope.env)
        for item in self._list(e, 'env'):
            if not isinstance(item, dict) or set(item) != {'name', 'value'}:
                raise e.error(f'`env` entries must be {{name, value}} mappings, got {item!r}')
            env[self._str(item['name'], scope, e, 'env')] = self._str(item['value'], scope, e, 'env')
        return env

    def _respawn(self, e: _Entry, scope: _Scope) -> dict:
        respawn = self._bool(e, 'respawn', scope, False)
        delay = self._number(e, 'respawn_delay', scope, float, 0.0, 'a number of seconds')
        if delay < 0:
            raise e.error('`respawn_delay` must be >= 0')
        retries = self._number(e, 'respawn_max_retries', scope, int, -1, 'an integer (-1: no limit)')
        return {'respawn': respawn, 'respawn_delay': delay, 'respawn_max_retries': retries}

    def _number(self, e: _Entry, key: str, scope: _Scope, kind, default, what: str):
        """`key` of the entry as `kind` (float or int) after substitution, `default` when absent."""
        if key not in e.body:
            return default
        text = self._str(e.body[key], scope, e, key)
        try:
            return kind(text)
        except ValueError:
            raise e.error(f'`{key}` must be {what}, got {text!r}') from None

    def _split(self, e: _Entry, key: str, scope: _Scope) -> list[str]:
        if key not in e.body:
            return []
        value = e.body[key]
        if isinstance(value, list):
            return [self._str(v, scope, e, key) for v in value]
        try:
            return shlex.split(self._str(value, scope, e, key))
        except ValueError as exc:
            raise e.error(f'`{key}`: {exc}') from None

    def _executable(self, e: _Entry, scope: _Scope, chain):
        cmd_text = self._required(e, 'cmd', scope)
        shell = self._bool(e, 'shell', scope, False)
        if shell:
            cmd = ['/bin/sh', '-c', ' '.join([cmd_text] + [shlex.quote(a) for a in self._split(e, 'args', scope)])]
        else:
            try:
                cmd = shlex.split(cmd_text) + self._split(e, 'args', scope)
            except ValueError as exc:
                raise e.error(f'`cmd`: {exc}') from None
            if not cmd:
                raise e.error('`cmd` is empty')
            if shutil.which(cmd[0]) is None:
                raise e.error(f'executable {cmd[0]!r} not found (not a file, not on PATH)')
        name = self._str(e.body['name'], scope, e, 'name') if 'name' in e.body else Path(cmd[0]).name
        cwd = self._str(e.body['cwd'], scope, e, 'cwd') if 'cwd' in e.body else None
        if cwd is not None and not Path(cwd).is_dir():
            raise e.error(f'`cwd` {cwd} is not a directory')
        self.processes.append(ProcessDescription(
            name=name, cmd=cmd, env=self._env(e, scope), output=self._output(e, scope), kind='process',
            cwd=cwd, source=f'{e.file}:{e.line}', **self._respawn(e, scope)))

    def _node(self, e: _Entry, scope: _Scope, chain):
        pkg = self._required(e, 'pkg', scope)
        exe = self._required(e, 'exec', scope)
        env = self._env(e, scope)
        cmd = resolve_node_executable(pkg, exe, e)
        name = self._str(e.body['name'], scope, e, 'name') if 'name' in e.body else None
        if name is not None and not _NAME_RE.match(name):
            raise e.error(f'invalid node name {name!r} (letters, digits, underscores; not starting with a digit)')
        try:
            ns = join_namespace(scope.namespace, self._str(e.body.get('namespace', ''), scope, e, 'namespace'))
        except ValueError as exc:
            raise e.error(str(exc)) from None
        cmd += self._split(e, 'args', scope)
        ros = []
        if name is not None:
            ros += ['-r', f'__node:={name}']
        if ns != '/':
            ros += ['-r', f'__ns:={ns}']
        files = self._params(self._list(e, 'param'), scope, e, name or exe)
        for f in files:
            ros += ['--params-file', f]
        for item in self._list(e, 'remap'):
            if not isinstance(item, dict) or set(item) != {'from', 'to'}:
                raise e.error(f'`remap` entries must be {{from, to}} mappings, got {item!r}')
            ros += ['-r', f"{self._str(item['from'], scope, e, 'remap')}:={self._str(item['to'], scope, e, 'remap')}"]
        ros += self._split(e, 'ros_args', scope)
        if ros:
            cmd += ['--ros-args'] + ros
        label = name or exe
        self.processes.append(ProcessDescription(
            name=label, cmd=cmd, env=env, output=self._output(e, scope), kind='node',
            source=f'{e.file}:{e.line}', params_files=files, namespace=ns, **self._respawn(e, scope)))

    # -- parameters
    def _params(self, items: list, scope: _Scope, e: _Entry, label: str) -> list[str]:
        files: list[str] = []
        inline: dict[str, Any] = {}

        def flush():
            if inline:
                self._params_count += 1
                path = self.workdir() / f'{self._params_count:02d}_{label}.params.yaml'
                path.write_text(yaml.safe_dump({'/**': {'ros__parameters': _nest(inline)}}, sort_keys=False))
                files.append(str(path))
                inline.clear()

        def walk(items, prefix):
            for item in items:
                if not isinstance(item, dict):
                    raise e.error(f'`param` entries must be mappings ({{name, value}} or {{from}}), got {item!r}')
                if 'from' in item:
                    if prefix or set(item) != {'from'}:
                        raise e.error(f'a `from` parameter entry takes only `from`, got keys {sorted(item)}')
                    flush()
                    files.append(str(self._params_file(self._str(item['from'], scope, e, 'param from'), e)))
                elif 'name' in item:
                    pname = self._str(item['name'], scope, e, 'param name')
                    full = f'{prefix}{pname}'
                    if 'param' in item and set(item) == {'name', 'param'}:
                        if not isinstance(item['param'], list):
                            raise e.error(f'parameter group {full!r}: `param` must be a list')
                        walk(item['param'], full + '.')
                    elif set(item) == {'name', 'value'}:
                        inline[full] = self._param_value(item['value'], scope, e, full)
                    else:
                        raise e.error(f'parameter {full!r}: expected keys {{name, value}}, got {sorted(item)}')
                else:
                    raise e.error(f'`param` entry needs `name` and `value`, or `from`; got {item!r}')
        walk(items, '')
        flush()
        return files

    def _param_value(self, value, scope: _Scope, e: _Entry, pname: str):
        if isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return _infer(self._str(value, scope, e, f'param {pname}'))
        if isinstance(value, list):
            items = [self._param_value(v, scope, e, pname) for v in value]
            kinds = {type(v) for v in items}
            if kinds == {int, float}:
                return [float(v) for v in items]
            if len(kinds) > 1:
                raise e.error(f'parameter {pname!r}: list items must all have one type, got '
                              + ', '.join(sorted(k.__name__ for k in kinds)))
            if any(isinstance(v, list) for v in items):
                raise e.error(f'parameter {pname!r}: nested lists are not ROS parameter values')
            return items
        if value is None:
            raise e.error(f'parameter {pname!r} has no value')
        raise e.error(f'parameter {pname!r}: a {type(value).__name__} is not a parameter value '
                      '(nest parameters with {name, param: [...]})')

    def _params_file(self, raw: str, e: _Entry) -> Path:
        path = self._resolve_path(raw, e)
        if not path.is_file():
            raise e.error(f'parameters file {path} does not exist')
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f':{mark.line + 1}' if mark else ''
            raise e.error(f'parameters file {path}{at}: YAML syntax error: {exc.problem}') from None
        except (yaml.YAMLError, OSError) as exc:
            raise e.error(f'parameters file {path}: {exc}') from None
        if not _has_ros_parameters(data):
            raise e.error(f'parameters file {path} is not a ROS 2 parameters file: expected '
                          '`<node name or /**>: ros__parameters: {...}`')
        return path.resolve()


def _has_ros_parameters(data, depth=0) -> bool:
    """Every top-level key must lead (through namespaces) to a `ros__parameters` mapping."""
    if not isinstance(data, dict) or not data or depth > 16:
        return False
    for value in data.values():
        if not isinstance(value, dict):
            return False
        if 'ros__parameters' in value:
            if not isinstance(value['ros__parameters'], dict):
                return False
        elif not _has_ros_parameters(value, depth + 1):
            return False
    return True


def _infer(text: str):
    """Type a substituted string as ros2 launch does (YAML rules): '5' -> 5, 'true' -> True."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and text.strip()[:1] in ('"', "'"):
        return value  # "'5'": a quoted YAML string stays a string
    if isinstance(value, list) and value and all(isinstance(v, (bool, int, float, str)) for v in value):
        kinds = {type(v) for v in value}
        if len(kinds) == 1:
            return value
        if kinds == {int, float}:
            return [float(v) for v in value]
    return text


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}: the nested form every ROS 2 params-file reader accepts."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        d = out
        *parents, leaf = key.split('.')
        for p in parents:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise LaunchError(f'parameter {key!r} conflicts with parameter {p!r}')
        d[leaf] = value
    return out


def resolve_node_executable(pkg: str, exe: str, e: _Entry | None = None) -> list[str]:
    """Command that runs `exe` of package `pkg`: mbrl_ros console script, or its module, or
    $AMENT_PREFIX_PATH/lib/<pkg>/<exe>."""
    def fail(msg):
        return e.error(msg) if e is not None else LaunchError(msg)
    if '/' in exe or not exe:
        raise fail(f'invalid executable name {exe!r}')
    if pkg == PACKAGE:
        script = Path(sys.executable).parent / exe
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
        module = f'{PACKAGE}.nodes.{exe}'
        if exe.isidentifier():
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if found:
                return [sys.executable, '-m', module]
        raise fail(f'package {pkg!r} has no executable {exe!r}: neither {script} nor module {module} exists')
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    for prefix in prefixes:
        cand = Path(prefix) / 'lib' / pkg / exe
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    looked = ', '.join(str(Path(p) / 'lib' / pkg / exe) for p in prefixes) or '$AMENT_PREFIX_PATH is unset'
    raise fail(f'executable {exe!r} of package {pkg!r} not found (looked in: {looked})')


def _unique_labels(processes: list[ProcessDescription]) -> None:
    """Give every process a distinct label: the node name, else its namespaced name, else name-N."""
    counts: dict[str, int] = {}
    for p in processes:
        counts[p.name] = counts.get(p.name, 0) + 1
    seen: set[str] = set()
    for p in processes:
        label = p.name
        ns = p.namespace
        if counts[label] > 1 and ns != '/':
            label = ns.strip('/') + '/' + p.name
        base, n = label, 1
        while label in seen:
            n += 1
            label = f'{base}-{n}'
        seen.add(label)
        p.name = label


# ---- public helpers -----------------------------------------------------------------------------

def parse_cli_args(items: list[str]) -> dict[str, str]:
    """['robot:=arm3', ...] -> {'robot': 'arm3'}; a malformed item raises LaunchError."""
    out = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep or not _NAME_RE.match(name):
            raise LaunchError(f'bad launch argument {item!r}: expected name:=value')
        out[name] = value
    return out


def parse_launch_file(path: str | os.PathLike, args: dict[str, str] | None = None,
                      environ: dict[str, str] | None = None) -> LaunchPlan:
    """Parse `path` with command-line `args`; the plan's temporary files go when plan.cleanup() runs."""
    return LaunchParser(args, environ=environ).parse(path)


def declared_arguments(path: str | os.PathLike) -> list[LaunchArgument]:
    """The `arg` entries of a file (and of its groups), unevaluated, for --show-args."""
    path = Path(path)
    doc = load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get('launch'), list):
        raise LaunchError(f'{path}: not a YAML launch file (no `launch:` list)')
    out = []
    for body in _arg_entries(doc['launch']):
        default = body.get('default')
        out.append(LaunchArgument(
            str(body['name']), None if default is None else str(default), str(body.get('description', '')),
            [str(c) for c in body['choices']] if isinstance(body.get('choices'), list) else None, str(path)))
    return out


def _arg_entries(entries) -> list[dict]:
    """`arg` bodies of a list of entries and of its groups (not of includes), without evaluating."""
    out = []
    for item in entries if isinstance(entries, list) else []:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (tag, body), = item.items()
        if tag == 'arg' and isinstance(body, dict) and 'name' in body:
            out.append(body)
        elif tag == 'group':
            out += _arg_entries(body if isinstance(body, list)
                                else (body or {}).get('children', (body or {}).get('launch')))
    return out


def _arg_names(entries) -> set[str]:
    return {str(b['name']) for b in _arg_entries(entries)}
