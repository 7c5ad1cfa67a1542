"""`mbrl-ros`: the package's command line.

Each sub-command lives in its own module (mbrl_ros/commands/) exposing `add_arguments(parser)` and `run(args)`;
modules are imported only when their command runs, so `mbrl-ros launch` never pays for torch.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from mbrl_ros.commands.options import HelpFormatter

# name -> (module, one-line help)
COMMANDS = {
    'launch': ('mbrl_ros.commands.launch', 'run a ROS 2 YAML launch file, each node its own process'),
    'demo': ('mbrl_ros.commands.demo', 'the stack on the simulated arm with a live readout'),
    'train': ('mbrl_ros.commands.train', 'train the ensemble world model and write a model bundle'),
    'evaluate-model': ('mbrl_ros.commands.evaluate_model', 'one-step, open-loop and calibration metrics of a bundle'),
    'bench': ('mbrl_ros.commands.bench', 'benchmarks that print numbers (bench sim: rates, jitter, latency)'),
    'collect': ('mbrl_ros.commands.collect', 'record exploration data as a rosbag2 MCAP bag (sim fast path or --live)'),
    'distill': ('mbrl_ros.commands.distill', 'DAgger-distil the MPC into a fast policy (policy.onnx in the bundle)'),
    'learn': ('mbrl_ros.commands.learn', 'PETS from nothing: explore, train, MPC episodes, retrain (K times), distil'),
    'check': ('mbrl_ros.commands.check', 'reliability checks on a live sim stack: chaos, load, soak, fuzz, bad-bundles'),
}


def _available():
    out = {}
    for name, (module, help_) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = (module, help_)
    return out


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The `mbrl-ros` parser; only the `chosen` command's module is imported and its options added."""
    parser = argparse.ArgumentParser(prog='mbrl-ros', description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        if name == chosen:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    return int(args._run(args) or 0)

if __name__ == '__main__':
    sys.exit(main())
