"""YAML launch parser: substitutions, arguments, groups/namespaces, if/unless, includes, parameters,
executable resolution, and a clear message for every kind of bad file. No processes are started."""
import stat
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mbrl_ros import cli
from mbrl_ros.launch_runner import LaunchError, declared_arguments, parse_cli_args, parse_launch_file
from mbrl_ros.launch_runner.parser import join_namespace
from mbrl_ros.launch_runner.substitutions import (
    SubstitutionContext, SubstitutionError, safe_eval, substitute)
from mbrl_ros.resources import package_share


@pytest.fixture
def write(tmp_path):
    def _write(text, name='t.launch.yaml'):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p
    return _write


@pytest.fixture
def parse(write):
    plans = []

    def _parse(text, args=None, name='t.launch.yaml'):
        plan = parse_launch_file(write(text, name), args)
        plans.append(plan)
        return plan
    yield _parse
    for p in plans:
        p.cleanup()


def error_of(fn, *a, **kw) -> str:
    with pytest.raises(LaunchError) as info:
        fn(*a, **kw)
    return str(info.value)


def params_of(proc) -> dict:
    """Merged ros__parameters of a node's params files, in order (later wins, as in ROS)."""
    out = {}
    for f in proc.params_files:
        for value in yaml.safe_load(Path(f).read_text()).values():
            out.update(value['ros__parameters'])
    return out


N = 'pkg: mbrl_ros, exec: state_estimator'  # a node module that exists in this package


# ---- substitutions ----------------------------------------------------------------------------

def test_substitutions_var_env_nesting_quotes(tmp_path):
    ctx = SubstitutionContext({'a': 'x', 'name': 'HOME_X'}, tmp_path / 'f.launch.yaml',
                              {'HOME_X': '/h', 'EMPTY': ''})
    assert substitute('p/$(var a)/q', ctx) == 'p/x/q'
    assert substitute('$(env HOME_X)', ctx) == '/h'
    assert substitute('$(env NOPE fallback)', ctx) == 'fallback'
    assert substitute('$(env $(var name))', ctx) == '/h'          # nested
    assert substitute("$(env NOPE 'two words')", ctx) == 'two words'
    assert substitute('$(optenv NOPE)', ctx) == ''
    assert substitute('$(dirname)', ctx) == str(tmp_path.resolve())
    assert substitute('$(find-pkg-share mbrl_ros)', ctx) == str(package_share())
    assert substitute('$(equals $(var a) x)', ctx) == 'true'
    assert substitute('$(not-equals $(var a) x)', ctx) == 'false'
    assert substitute('no subs here', ctx) == 'no subs here'


@pytest.mark.parametrize('text, match', [
    ('$(var nope)', "undefined variable 'nope'"),
    ('$(env MBRL_SURELY_UNSET_VAR)', "environment variable 'MBRL_SURELY_UNSET_VAR' is not set"),
    ('$(find-pkg-share some_other_pkg)', "package 'some_other_pkg' not found"),
    ('$(frobnicate x)', 'unknown substitution'),
    ('$(var a', 'unterminated'),
    ('$(var)', 'takes 1 argument'),
    ("""$(eval "__import__('os').system('true')")""", 'not allowed'),
    ('$(eval open)', 'not allowed'),
    ('$(eval "(1).__class__")', 'not allowed'),
    ('$(eval __import__(1))', 'cannot parse'),  # unquoted parentheses end the substitution
])
def test_substitution_errors(text, match):
    with pytest.raises(SubstitutionError, match=match):
        substitute(text, SubstitutionContext({'a': '1'}, None, {}))


def test_safe_eval_does_arithmetic_and_logic_only():
    assert safe_eval('2 * 3 + 1') == 7
    assert safe_eval("'arm7' == 'arm7' and not False") is True
    assert safe_eval('1 < 2 < 3') is True
    assert safe_eval('10 if 1 > 2 else 20') == 20
    ctx = SubstitutionContext({'n': '4'}, None, {})
    assert substitute("$(eval '$(var n) * 2')", ctx) == '8'
    with pytest.raises(SubstitutionError):
        safe_eval("'a' * 10**9")  # no memory bombs through string repetition


def test_join_namespace():
    assert join_namespace('/', 'a') == '/a'
    assert join_namespace('/a', 'b/c') == '/a/b/c'
    assert join_namespace('/a', '/abs') == '/abs'
    assert join_namespace('/a', '') == '/a'
    with pytest.raises(ValueError, match='invalid namespace'):
        join_namespace('/', '1bad')


# ---- arguments --------------------------------------------------------------------------------

ARGS_FILE = """
launch:
- arg: {name: robot, default: arm7, description: which arm}
- arg: {name: mode, default: fast, choices: [fast, slow]}
- arg: {name: needed}
- executable: {cmd: "true $(var robot) $(var mode) $(var needed)", name: t}
"""


def test_cli_args_override_defaults(parse):
    plan = parse(ARGS_FILE, {'needed': 'n', 'robot': 'arm3'})
    assert plan.processes[0].cmd[1:] == ['arm3', 'fast', 'n']
    assert plan.arguments == {'robot': 'arm3', 'mode': 'fast', 'needed': 'n'}


def test_required_arg_missing(parse):
    msg = error_of(parse, ARGS_FILE, {})
    assert "required argument 'needed' not given" in msg and 't.launch.yaml:5' in msg


def test_unknown_cli_arg(parse):
    msg = error_of(parse, ARGS_FILE, {'needed': 'n', 'robt': 'arm3'})
    assert 'unknown launch argument(s) given: robt' in msg and 'robot' in msg


def test_cli_arg_of_a_skipped_entry_is_not_unknown(parse):
    text = ('launch:\n- arg: {name: use_b, default: "false"}\n'
            '- group: {if: $(var use_b), children: [arg: {name: b_rate, default: "1"}]}\n')
    assert parse(text, {'b_rate': '5'}).arguments == {'use_b': 'false'}
    assert parse(text, {'b_rate': '5', 'use_b': 'true'}).arguments == {'use_b': 'true', 'b_rate': '5'}


def test_choices_enforced(parse):
    assert 'is not one of' in error_of(parse, ARGS_FILE, {'needed': 'n', 'mode': 'medium'})


def test_parse_cli_args_format():
    assert parse_cli_args(['a:=1', 'b:=x:=y', 'c:=']) == {'a': '1', 'b': 'x:=y', 'c': ''}
    with pytest.raises(LaunchError, match="expected name:=value"):
        parse_cli_args(['robot=arm3'])


def test_declared_arguments(write):
    args = declared_arguments(write(ARGS_FILE))
    assert [(a.name, a.default) for a in args] == [('robot', 'arm7'), ('mode', 'fast'), ('needed', None)]
    assert args[0].description == 'which arm' and args[1].choices == ['fast', 'slow']


# ---- nodes and parameters ---------------------------------------------------------------------

def test_node_command_line_and_typed_params(parse, tmp_path):
    pfile = tmp_path / 'p.yaml'
    pfile.write_text('state_estimator:\n  ros__parameters:\n    stale_timeout_s: 0.5\n    count: 1\n')
    plan = parse(f"""
    launch:
    - arg: {{name: rate, default: "250"}}
    - node:
        pkg: mbrl_ros
        exec: state_estimator
        name: est
        namespace: arm
        args: "--extra 1"
        ros_args: "--log-level debug"
        param:
        - {{from: {pfile}}}
        - {{name: count, value: $(var rate)}}
        - {{name: flag, value: "true"}}
        - {{name: gain, value: "1.5"}}
        - {{name: label, value: "abc"}}
        - {{name: quoted, value: "'5'"}}
        - {{name: native, value: 3}}
        - {{name: gains, value: [1, 2.5]}}
        - name: filter
          param: [{{name: q, value: 0.1}}, {{name: r, value: 2}}]
        remap: [{{from: /joint_states, to: /arm/joint_states}}]
    """)
    (p,) = plan.processes
    assert p.name == 'est' and p.kind == 'node' and p.output == 'screen'
    cmd = p.cmd
    assert cmd[:3] == [sys.executable, '-m', 'mbrl_ros.nodes.state_estimator'] or cmd[0].endswith('/state_estimator')
    ros = cmd[cmd.index('--ros-args') + 1:]
    assert cmd.index('--extra') < cmd.index('--ros-args')
    assert ros[:4] == ['-r', '__node:=est', '-r', '__ns:=/arm']
    files = [ros[i + 1] for i, a in enumerate(ros) if a == '--params-file']
    assert files[0] == str(pfile.resolve()) and len(files) == 2  # `from` first, then the inline ones
    remap = ros.index('/joint_states:=/arm/joint_states')
    assert ros[remap - 1] == '-r' and remap > ros.index('--params-file')
    assert ros[-2:] == ['--log-level', 'debug']
    inline = yaml.safe_load(Path(files[1]).read_text())['/**']['ros__parameters']
    assert inline == {'count': 250, 'flag': True, 'gain': 1.5, 'label': 'abc', 'quoted': '5', 'native': 3,
                      'gains': [1.0, 2.5], 'filter': {'q': 0.1, 'r': 2}}
    assert params_of(p)['count'] == 250  # the later inline value overrides the file's, as in ROS


def test_inline_params_then_file_keep_their_order(parse, tmp_path):
    pfile = tmp_path / 'p.yaml'
    pfile.write_text('/**:\n  ros__parameters:\n    count: 7\n')
    plan = parse(f"""
    launch:
    - node:
        pkg: mbrl_ros
        exec: state_estimator
        param: [{{name: count, value: 1}}, {{from: {pfile}}}]
    """)
    assert params_of(plan.processes[0])['count'] == 7
    assert plan.processes[0].name == 'state_estimator'
    assert '__node:=' not in ' '.join(plan.processes[0].cmd)  # no name given: the node's own


def test_param_file_errors(parse, tmp_path):
    msg = error_of(parse, f"""
    launch:
    - node:
        pkg: mbrl_ros
        exec: state_estimator
        name: est
        param: [{{from: {tmp_path}/missing.yaml}}]
    """)
    assert 'parameters file' in msg and 'missing.yaml does not exist' in msg and "node 'est'" in msg
    bad = tmp_path / 'bad.yaml'
    bad.write_text('stale_timeout_s: 0.5\n')
    msg = error_of(parse, f"""
    launch:
    - node:
        pkg: mbrl_ros
        exec: state_estimator
        param: [{{from: {bad}}}]
    """)
    assert 'is not a ROS 2 parameters file' in msg and 'ros__parameters' in msg
    broken = tmp_path / 'broken.yaml'
    broken.write_text('a:\n  ros__parameters: {x: [1, 2}\n')
    assert 'YAML syntax error' in error_of(parse, f"""
    launch:
    - node:
        pkg: mbrl_ros
        exec: state_estimator
        param: [{{from: {broken}}}]
    """)


def test_node_executable_resolution(parse, tmp_path, monkeypatch):
    msg = error_of(parse, 'launch:\n- node: {pkg: mbrl_ros, exec: no_such_node}\n')
    assert "package 'mbrl_ros' has no executable 'no_such_node'" in msg
    msg = error_of(parse, 'launch:\n- node: {pkg: other_pkg, exec: talker}\n')
    assert "executable 'talker' of package 'other_pkg' not found" in msg
    exe = tmp_path / 'prefix' / 'lib' / 'other_pkg' / 'talker'
    exe.parent.mkdir(parents=True)
    exe.write_text('#!/bin/sh\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path / 'prefix'))
    plan = parse('launch:\n- node: {pkg: other_pkg, exec: talker, name: t}\n')
    assert plan.processes[0].cmd[0] == str(exe)


def test_missing_pkg_or_exec(parse):
    assert 'missing required key `pkg`' in error_of(parse, 'launch:\n- node: {exec: x}\n')
    assert 'missing required key `exec`' in error_of(parse, 'launch:\n- node: {pkg: mbrl_ros}\n')


# ---- groups, namespaces, conditions -----------------------------------------------------------

def test_groups_namespaces_and_scoping(parse):
    plan = parse(f"""
    launch:
    - let: {{name: v, value: outer}}
    - group:
      - push-ros-namespace: {{namespace: robot1}}
      - let: {{name: v, value: inner}}
      - node: {{{N}, name: a}}
      - group:
          namespace: sub
          children:
          - node: {{{N}, name: b}}
          - node: {{{N}, name: c, namespace: /abs}}
    - node: {{{N}, name: d, args: $(var v)}}
    - group:
        scoped: false
        children:
        - let: {{name: v, value: leaked}}
        - push_ros_namespace: {{namespace: ns2}}
    - node: {{{N}, name: e, args: $(var v)}}
    """)
    ns = {p.name: p.namespace for p in plan.processes}
    assert ns == {'a': '/robot1', 'b': '/robot1/sub', 'c': '/abs', 'd': '/', 'e': '/ns2'}
    d, e = plan.processes[3], plan.processes[4]
    assert 'outer' in d.cmd and 'leaked' in e.cmd


def test_duplicate_node_names_get_distinct_labels(parse):
    plan = parse("""
    launch:
    - group: {namespace: left, children: [node: {pkg: mbrl_ros, exec: state_estimator, name: est}]}
    - group: {namespace: right, children: [node: {pkg: mbrl_ros, exec: state_estimator, name: est}]}
    - executable: {cmd: "true", name: tool}
    - executable: {cmd: "true", name: tool}
    """)
    assert [p.name for p in plan.processes] == ['left/est', 'right/est', 'tool', 'tool-2']


def test_if_unless(parse):
    plan = parse("""
    launch:
    - arg: {name: enabled, default: "true"}
    - executable: {cmd: "true", name: a, if: $(var enabled)}
    - executable: {cmd: "true", name: b, unless: $(var enabled)}
    - executable: {cmd: "true", name: c, if: "$(eval '$(var enabled)' == 'false')"}
    - group: {if: "False", children: [executable: {cmd: "true", name: d}]}
    - include: {file: nowhere.launch.yaml, if: "0"}
    - executable: {cmd: "true", name: e, if: "$(var enabled)", unless: "$(var enabled)"}
    - executable: {cmd: "true", name: f, if: true}
    """)
    assert [p.name for p in plan.processes] == ['a', 'f']
    assert [p.name for p in parse(open(plan.file).read(), {'enabled': 'false'}).processes] == ['b', 'c', 'f']
    msg = error_of(parse, 'launch:\n- executable: {cmd: "true", if: maybe}\n')
    assert '`if` must be true/false/1/0' in msg


# ---- includes ---------------------------------------------------------------------------------

def test_include_with_args_and_dirname(parse, write, tmp_path):
    write("""
    launch:
    - arg: {name: who, description: required here}
    - arg: {name: depth, default: "1"}
    - let: {name: local, value: only_in_child}
    - executable: {cmd: "true $(var who) $(var depth) $(dirname)", name: inner_$(var who)}
    """, 'sub/inner.launch.yaml')
    plan = parse("""
    launch:
    - arg: {name: depth, default: "5"}
    - include:
        file: $(dirname)/sub/inner.launch.yaml
        arg: [{name: who, value: first}]
    - group:
      - push-ros-namespace: {namespace: g}
      - include: {file: sub/inner.launch.yaml, arg: [{name: who, value: second}, {name: depth, value: "9"}]}
    - executable: {cmd: "true $(var depth)", name: after}
    """, {'depth': '3'})
    a, b, c = plan.processes
    assert a.name == 'inner_first' and a.cmd[1:] == ['first', '3', str((tmp_path / 'sub').resolve())]
    assert b.cmd[1:3] == ['second', '9']
    assert c.cmd == ['true', '3']


def test_cli_arg_declared_in_included_file_is_known(parse, write):
    write('launch:\n- arg: {name: deep, default: d}\n- executable: {cmd: "true $(var deep)", name: x}\n',
          'inner.launch.yaml')
    plan = parse('launch:\n- include: {file: $(dirname)/inner.launch.yaml}\n', {'deep': 'given'})
    assert plan.processes[0].cmd == ['true', 'given']


def test_include_errors(parse, write):
    msg = error_of(parse, 'launch:\n- include: {file: $(dirname)/missing.launch.yaml}\n')
    assert 'included file' in msg and 'missing.launch.yaml does not exist' in msg and 't.launch.yaml:2' in msg
    write('launch:\n- include: {file: $(dirname)/t.launch.yaml}\n', 'loop.launch.yaml')
    assert 'include cycle' in error_of(parse, 'launch:\n- include: {file: $(dirname)/loop.launch.yaml}\n')
    write('launch:\n- arg: {name: must}\n', 'req.launch.yaml')
    msg = error_of(parse, 'launch:\n- include: {file: $(dirname)/req.launch.yaml}\n')
    assert "required argument 'must' not given" in msg and 'req.launch.yaml' in msg and 'the include in' in msg
    write('x = 1\n', 'py.launch.py')
    assert 'YAML launch files only' in error_of(parse, 'launch:\n- include: $(dirname)/py.launch.py\n')


# ---- bad files --------------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('launch:\n- node: {pkg: mbrl_ros\n', ['YAML syntax error', 't.launch.yaml:3']),
    ('launch:\n  - arg: {name: a}\n   - arg: {name: b}\n', ['YAML syntax error', 't.launch.yaml:3']),
    ('nodes: []\n', ['not a YAML launch file']),
    ('launch: []\nextra: 1\n', ["unknown top-level key(s) 'extra'"]),
    ('launch:\n- nod: {pkg: a, exec: b}\n', ["unknown tag 'nod'", 't.launch.yaml:2']),
    ('launch:\n- executable: {cmd: "true", nmae: x}\n', ["unknown key(s) 'nmae'", 'executable', 'allowed:']),
    ('launch:\n- executable: {cmd: "true $(var nope)", name: x}\n', ["undefined variable 'nope'", "executable 'x'"]),
    ('launch:\n- executable: {cmd: no_such_binary_xyz}\n', ["executable 'no_such_binary_xyz' not found"]),
    ('launch:\n- executable: {cmd: "true", output: loud}\n', ['`output` must be one of']),
    ('launch:\n- executable: {cmd: "true", respawn_delay: soon}\n', ['`respawn_delay` must be a number']),
    ('launch:\n- node: {pkg: mbrl_ros, exec: state_estimator, name: "bad-name"}\n', ["invalid node name 'bad-name'"]),
    ('launch:\n- node: {pkg: mbrl_ros, exec: state_estimator, remap: [{from: a}]}\n', ['`remap` entries must be {from, to}']),
    ('launch:\n- node: {pkg: mbrl_ros, exec: state_estimator, param: [{name: a}]}\n', ["parameter 'a': expected keys"]),
    ('launch:\n- node: {pkg: mbrl_ros, exec: state_estimator, param: [{name: a, value: {b: 1}}]}\n', ['is not a parameter value']),
    ('launch:\n- node: {pkg: mbrl_ros, exec: state_estimator, param: [{name: a, value: [1, x]}]}\n', ['list items must all have one type']),
    ('launch:\n- arg: {name: a}\n  arg: {name: b}\n', ['duplicate key']),
    ('launch:\n- arg: {name: on, default: x}\n', ['`name` must be a string', 'quote it']),
    ('launch:\n- {arg: {name: a}, let: {name: b, value: c}}\n', ['exactly one tag']),
])
def test_bad_files_give_clear_errors(parse, text, expected):
    msg = error_of(parse, text)
    assert 't.launch.yaml' in msg
    for e in expected:
        assert e in msg, msg


def test_parse_of_missing_file():
    assert 'does not exist' in error_of(parse_launch_file, '/nonexistent/x.launch.yaml')


def test_temporary_params_files_are_removed(parse):
    plan = parse('launch:\n- node: {pkg: mbrl_ros, exec: state_estimator, param: [{name: a, value: 1}]}\n')
    (f,) = plan.processes[0].params_files
    assert Path(f).is_file()
    plan.cleanup()
    assert not Path(f).exists()


# ---- the command line -------------------------------------------------------------------------

def test_cli_print_and_show_args(write, capsys):
    f = write(ARGS_FILE.replace('- executable', '- node: {pkg: mbrl_ros, exec: state_estimator, '
                                'name: est, param: [{name: robot, value: $(var robot)}]}\n- executable'))
    assert cli.main(['launch', str(f), '--show-args']) == 0
    out = capsys.readouterr().out
    assert "robot  [default: 'arm7']" in out and 'which arm' in out and 'needed  [(required)]' in out
    assert cli.main(['launch', str(f), 'needed:=x', 'robot:=arm3', '--print']) == 0
    out = capsys.readouterr().out
    assert '[est] (node, output=screen)' in out and '__node:=est' in out and 'robot: arm3' in out
    assert '[t] (process' in out and 'true arm3 fast x' in out
    assert cli.main(['launch', str(f), '--print']) == 2
    assert "required argument 'needed' not given" in capsys.readouterr().err
    assert cli.main(['launch', 'no_such.launch.yaml', '--print']) == 2
    assert 'not found; looked in' in capsys.readouterr().err


def test_shipped_sim_arm_launch_parses(capsys):
    """The lead's launch file, resolved by name as users do (needs the nodes it names to exist)."""
    pytest.importorskip('mbrl_ros.nodes.sim_robot')
    rc = cli.main(['launch', 'sim_arm.launch.yaml', 'robot:=arm3', 'world_model:=false', '--print'])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert '[sim_robot]' in captured.out and '[state_estimator]' in captured.out
