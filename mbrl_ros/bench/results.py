"""`mbrl-ros bench results`: rerun the benches behind the README's results and write one page.

Each bench runs as its own `mbrl-ros bench ...` process (as a user would type it); the page gets,
per bench, the command and what it printed, under a stamp of the date, the commit (marked
`+uncommitted changes` when the tree differs from it) and the machine (CPU model, cores, load).
`--quick` runs the same benches in their smoke forms (for the tests; not figures to quote).
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_OUT = 'docs/results.md'
# URDFs under pybullet_data (KUKA iiwa, Franka Panda, UFactory xArm6) and the tip link where the chain branches
ZOO = (('kuka_iiwa/model.urdf', ''), ('franka_panda/panda.urdf', 'panda_grasptarget'), ('xarm/xarm6_robot.urdf', ''))


def add_arguments(p):
    p.add_argument('--out', default=DEFAULT_OUT, help='the page to write (a path; the folder must exist)')
    p.add_argument('--quick', action='store_true', help='smoke forms of every bench (minutes, not figures to quote)')
    p.add_argument('--only', default='', metavar='NAME,...',
                   help='run only these sections (names as in the page: chained, zoo-pd, policy-step, model)')


def sections(quick: bool, zoo_dir: Path | None) -> list[tuple[str, str, list[list[str]]]]:
    """(name, title, [bench argv, ...]) in page order."""
    short = ['--short'] if quick else []
    chained = ['closed-loop', '--controller', 'mpc,osc_pd,policy', '--budgets', '0']
    chained += ['--seeds', '1000', '--goals', '2'] if quick else ['--seeds', '1000,2000,3000', '--goals', '30']
    out = [('chained', 'arm7, chained goals, ROS-free, no planner budget: MPC, operational-space PD, '
                       'distilled policy on the same goals', [chained + short])]
    if zoo_dir is not None:
        runs = [['closed-loop', '--controller', 'osc_pd', '--robot', str(zoo_dir / path), *(['--tip-link', tip] if tip
                 else []), '--seeds', '77', '--goals', '2' if quick else '30', *short] for path, tip in ZOO]
        out.append(('zoo-pd', 'operational-space PD with the gain rule on URDF arms as pybullet_data ships them '
                              '(30 chained goals, seed 77)', runs))
    out.append(('policy-step', 'distilled policy step time (onnxruntime, one state)',
                [['policy', '--robot', 'arm7', '--bundle', 'arm7', '--calls', '200' if quick else '5000']]))
    out.append(('model', 'ensemble inference, onnxruntime vs torch, 1 thread',
                [['model', 'arm7', '--threads', '1', *(['--batches', '1,256', '--min-time', '0.05'] if quick else [])]]))
    return out


def stamp() -> dict:
    def git(*argv):
        try:
            return subprocess.run(['git', *argv], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).resolve().parents[2]).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ''
    commit = git('rev-parse', '--short=7', 'HEAD') or 'unknown (not a git checkout)'
    if git('status', '--porcelain', '--untracked-files=no'):
        commit += ' +uncommitted changes'
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), 'commit': commit,
            'machine': f'{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}'}


def _zoo_dir() -> Path | None:
    try:
        import pybullet_data
    except ImportError:
        return None
    return Path(pybullet_data.getDataPath())


def run(args) -> int:
    names = [n.strip() for n in args.only.split(',') if n.strip()]
    todo = sections(args.quick, _zoo_dir())
    unknown = set(names) - {name for name, _, _ in todo}
    if unknown:
        print(f'mbrl-ros bench results: --only: unknown {sorted(unknown)}; choose from '
              f'{", ".join(name for name, _, _ in todo)}')
        return 2
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f'mbrl-ros bench results: --out: no folder {out.parent}')
        return 2
    head = stamp()
    page = [f'# Results\n\nWritten by `mbrl-ros bench results{" --quick" if args.quick else ""}` on {head["date"]} '
            f'at commit {head["commit"]}; machine: {head["machine"]}. Every section: the command and what it '
            'printed. The README quotes these; how figures changed over time is in CHANGELOG.md.\n']
    if args.quick:
        page.append('**Smoke run (`--quick`): short forms of every bench, not figures to quote.**\n')
    failed = 0
    for name, title, runs in todo:
        if names and name not in names:
            continue
        page.append(f'## {title}\n')
        for argv in runs:
            cmd = ['mbrl-ros', 'bench', *argv]
            print(f'[results] {" ".join(cmd)}', flush=True)
            t0 = time.monotonic()
            res = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'bench', *argv], capture_output=True,
                                 text=True)
            took = time.monotonic() - t0
            print(f'[results]   exit {res.returncode} after {took:.0f} s', flush=True)
            failed += res.returncode != 0
            text = res.stdout.strip() or res.stderr.strip()[-3000:]
            page.append(f'`{" ".join(cmd)}` (exit {res.returncode}, {took:.0f} s)\n\n```\n{text}\n```\n')
    out.write_text('\n'.join(page))
    print(f'wrote {out}' + (f' ({failed} bench(es) failed: see the page)' if failed else ''))
    return 1 if failed else 0
