"""`mbrl-ros check <name>`: the reliability harnesses (chaos, load, soak, fuzz, bad-bundles) against a live
sim stack in a ROS domain of its own (mbrl_ros/reliability/checks.py)."""
from __future__ import annotations

import argparse

from mbrl_ros.commands.options import HelpFormatter


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mbrl_ros.reliability.checks import CHECKS
    sub = p.add_subparsers(dest='check', metavar='CHECK')
    sub.required = True
    for name, (arguments, run_check, help_) in CHECKS.items():
        cp = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        arguments(cp)
        cp.set_defaults(_check_run=run_check)


def run(args) -> int:
    return int(args._check_run(args) or 0)
