"""`mbrl-ros <command> --help`: every option of every sub-command has a help text and shows its default.

The parsers are built as `mbrl-ros` builds them (mbrl_ros.cli.build_parser, one command at a time)
and walked down through nested sub-commands (`bench <name>`).
"""
import argparse

import pytest

from mbrl_ros import cli
from mbrl_ros.commands.options import HelpFormatter, shows_default



def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _walk(parser):
    """(prog, parser) for `parser` and every parser below it."""
    yield parser.prog, parser
    for _, child in _subparsers(parser):
        yield from _walk(child)


def _command_parser(name):
    top = cli.build_parser(chosen=name)
    return dict(_subparsers(top))[name]


def _all_parsers():
    out = []
    for name in cli.COMMANDS:
        out.extend(_walk(_command_parser(name)))
    return out


PARSERS = _all_parsers()


def test_every_command_is_walked():
    progs = {prog for prog, _ in PARSERS}
    assert {f'mbrl-ros {name}' for name in cli.COMMANDS} <= progs
    assert 'mbrl-ros bench sim' in progs and 'mbrl-ros bench policy' in progs


def test_top_level_parser_shows_defaults():
    assert issubclass(cli.build_parser()._get_formatter().__class__, argparse.ArgumentDefaultsHelpFormatter)


@pytest.mark.parametrize('prog, parser', PARSERS, ids=[prog for prog, _ in PARSERS])
def test_formatter_shows_defaults(prog, parser):
    assert issubclass(parser.formatter_class, HelpFormatter), prog
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter), prog
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not shows_default(action):
            continue
        shown = formatter._get_help_string(action)
        assert '(default' in shown, f'{prog} {action.option_strings or action.dest}: default not shown'
    parser.format_help()  # every '%(default)s' expands


@pytest.mark.parametrize('prog, parser', PARSERS, ids=[prog for prog, _ in PARSERS])
def test_every_option_has_help(prog, parser):
    missing = [', '.join(a.option_strings) or a.dest for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and not (a.help or '').strip()]
    assert not missing, f'{prog}: options without help: {missing}'


def test_default_text_not_duplicated():
    """A help text names its default once: either in words or through the formatter, not both."""
    doubled = []
    for prog, parser in PARSERS:
        formatter = parser._get_formatter()
        for action in parser._actions:
            shown = (formatter._get_help_string(action) or '').replace('%(default)s', 'X')
            if shown.lower().count('(default') > 1 or shown.lower().count('default ') > 1:
                doubled.append(f'{prog} {action.option_strings}')
    assert not doubled, doubled


def test_help_runs_and_shows_a_default(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(['bench', 'sim', '--help'])
    assert exc.value.code == 0
    assert '(default: 60.0)' in capsys.readouterr().out
