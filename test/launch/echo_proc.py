"""Test helper process for the launch runner: prints, then sleeps, exits or misbehaves on request.

    echo_proc.py --lines 3 --text hi --exit-after 0.5 --code 3 --ignore-sigint --child [--escape] --pid-file F
"""
import argparse
import os
import signal
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument('--text', default='hello')
p.add_argument('--lines', type=int, default=1)
p.add_argument('--stderr', action='store_true', help='print to stderr too')
p.add_argument('--exit-after', type=float, default=None)
p.add_argument('--code', type=int, default=0)
p.add_argument('--ignore-sigint', action='store_true')
p.add_argument('--ignore-sigterm', action='store_true')
p.add_argument('--child', action='store_true', help='start a sleeping grandchild in the same group')
p.add_argument('--escape', action='store_true', help='the grandchild starts its own session (escapes group kills)')
p.add_argument('--pid-file', default=None, help='append "pid child_pid" here')
a = p.parse_args()

if a.ignore_sigint:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    # An orderly exit on SIGINT, as a ROS node does.
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
if a.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = None
if a.child:
    # This grandchild ignores SIGINT: only the runner's group kill can end it.
    child = subprocess.Popen([sys.executable, '-c', 'import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)'],
                             start_new_session=a.escape)
if a.pid_file:
    with open(a.pid_file, 'a') as f:
        f.write(f'{os.getpid()} {child.pid if child else 0}\n')
for i in range(a.lines):
    print(f'{a.text} {i}', flush=True)
    if a.stderr:
        print(f'err {a.text} {i}', file=sys.stderr, flush=True)
print(f'env MBRL_TEST_VALUE={os.environ.get("MBRL_TEST_VALUE", "")}', flush=True)
deadline = None if a.exit_after is None else time.monotonic() + a.exit_after
while deadline is None or time.monotonic() < deadline:
    time.sleep(0.02)
sys.exit(a.code)
