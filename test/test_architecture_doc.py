"""docs/architecture.md is the contract: its parameter tables must say what the nodes declare.

Every parameter a node declares (its SPECS) has one row in that node's table, or in the table of
parameters several nodes share, naming the node there; the row's default, range and live/static
are the declaration's. A parameter added, renamed or re-ranged in a node without the document
fails here.
"""
import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / 'docs' / 'architecture.md'
NODES = ('sim_robot', 'state_estimator', 'world_model', 'mpc_controller', 'policy', 'safety_filter')
# Parameters in the shared table, and the nodes that declare them.
COMMON = {
    'hang_timeout_s': NODES,
    'control_thread_priority': ('sim_robot', 'state_estimator', 'mpc_controller', 'policy', 'safety_filter'),
    'model_roots': ('world_model', 'mpc_controller', 'policy', 'safety_filter'),
    'model_dir': ('mpc_controller', 'policy', 'safety_filter'),
    **{name: NODES for name in ('robot_description', 'base_link', 'tip_link', 'ee_offset', 'ee_site',
                                'package_paths')},
}
# Defaults that depend on the installation: the table describes them in words.
DESCRIBED_DEFAULTS = {'model_roots'}


def _num(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def fmt_default(spec) -> str:
    v = spec.default
    if v is None:
        return '(unset)'
    if isinstance(v, bool):
        return f'`{str(v).lower()}`'
    if isinstance(v, str):
        return f'`{v}`' if v else "`''`"
    if isinstance(v, (list, tuple)):
        return '`[' + ', '.join(map(str, v)) + ']`'
    return f'`{_num(v)}`'


def fmt_range(spec) -> str:
    if spec.choices:
        return ' \\| '.join(spec.choices)
    if spec.range:
        lo, hi = spec.range
        return f'{_num(lo)} … {_num(hi)}'
    return '—'


def _tables(text: str) -> dict:
    """{section title: {parameter: [cells]}} for every '#### title' followed by a table (up to the next heading)."""
    out, title = {}, None
    for line in text.splitlines():
        if line.startswith('#### '):
            title = line[5:].strip()
            out[title] = {}
        elif line.startswith('#'):
            title = None
        elif title and line.startswith('| `'):
            cells = [c.strip() for c in re.split(r'(?<!\\)\|', line)[1:-1]]
            out[title][cells[0].strip('`')] = cells
    return out


@pytest.fixture(scope='module')
def tables():
    return _tables(DOC.read_text())


@pytest.mark.parametrize('node', NODES)
def test_every_parameter_is_documented_as_declared(node, tables):
    specs = importlib.import_module(f'mbrl_ros.nodes.{node}').SPECS
    own = tables.get(node)
    assert own is not None, f'docs/architecture.md has no "#### {node}" parameter table'
    shared = tables['parameters several nodes share']
    problems = []
    for s in specs:
        if s.name in COMMON and node in COMMON[s.name]:
            row = shared.get(s.name)
            if row is None or node not in row[1]:
                problems.append(f'{s.name}: not in the shared table for {node}')
                continue
            cells = row[2:5]
        elif s.name in own:
            cells = own[s.name][1:4]
        else:
            problems.append(f'{s.name}: no row')
            continue
        default, range_, when = cells
        want = 'live' if s.dynamic else 'static'
        if when != want:
            problems.append(f'{s.name}: documented {when}, declared {want}')
        if s.name not in DESCRIBED_DEFAULTS and default != fmt_default(s):
            problems.append(f'{s.name}: documented default {default}, declared {fmt_default(s)}')
        if range_ != fmt_range(s):
            problems.append(f'{s.name}: documented range {range_}, declared {fmt_range(s)}')
    names = {s.name for s in specs}
    problems += [f'{name}: documented, not declared' for name in own if name not in names]
    assert not problems, f'{node}: ' + '; '.join(problems)


def test_shared_table_names_only_declaring_nodes(tables):
    shared = tables['parameters several nodes share']
    for name, nodes in COMMON.items():
        assert name in shared, name
        assert set(re.findall(r'\w+', shared[name][1])) == set(nodes), name
