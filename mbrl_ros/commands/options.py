"""Option parsing and the help formatter shared by the CLI commands."""
from __future__ import annotations

import argparse


def number_pairs(text: str, flag: str = '--weights') -> dict:
    """'effort=0.02,uncertainty=1' -> {'effort': 0.02, 'uncertainty': 1.0}; ValueError naming `flag`."""
    out = {}
    for item in [t for t in text.replace(' ', '').split(',') if t]:
        k, sep, v = item.partition('=')
        try:
            out[k] = float(v)
        except ValueError:
            sep = ''
        if not sep or not k:
            raise ValueError(f'{flag} expects name=number pairs, got {item!r}')
    return out


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` of every sub-command: each option's default appended as "(default: X)".

    Left out where it says nothing: a flag that is off unless given (store_true), a default of None
    or '' (the help text says what happens then), an empty repeatable option, and a help text that
    already names its default in words: "(default: the shipped models/<robot>)".
    """

    def _get_help_string(self, action):
        help_ = action.help or ''
        if '(default' in help_ or not shows_default(action):
            return help_
        return help_ + ' (default: %(default)s)'


def shows_default(action) -> bool:
    """Whether HelpFormatter appends `action`'s default (the test of the help texts uses this too)."""
    default = action.default
    if default is None or default is argparse.SUPPRESS or action.required:
        return False
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                           argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
        return False
    if isinstance(default, (str, list, tuple)) and not default:
        return False
    return True
