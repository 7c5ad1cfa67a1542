"""Load check: both CPU cores busy with other work while the stack reaches goals.

The other work is `CpuHogs`: n processes (default 2, one per core) multiplying 256x256 numpy
matrices in a loop, single-threaded BLAS each, at the default nice level 0 — like a user's other
programs. Figures over the measured window: missed control periods (count and %, see
analysis.py for the definition), periods per mode (the policy's share is the fallback covering
MPC misses), commands outside the limits (must be 0), reach success, MPC plan time p50/p99 from
mpc_controller's /diagnostics (its rolling window of the last 500 plans, sampled each second:
median of the p50s; median and worst of the p99s).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from mbrl_ros.reliability import analysis as A
from mbrl_ros.reliability.harness import ReachingSession, load_note

_HOG = ('import numpy as np\n'
        'a = np.random.default_rng(0).random((256, 256))\n'
        'while True:\n'
        '    a = a @ a\n'
        '    a /= np.abs(a).max()\n')


class CpuHogs:
    def __init__(self, n: int = 2):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> 'CpuHogs':
        env = {**os.environ, 'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, '-c', _HOG], env=env, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def cpu_percent(self, interval: float = 0.5) -> list[float]:
        import psutil
        ps = [psutil.Process(p.pid) for p in self.procs if p.poll() is None]
        for p in ps:
            p.cpu_percent(None)
        time.sleep(interval)
        return [p.cpu_percent(None) for p in ps]

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=10)


def plan_times(plan_ms, t0: float, t1: float) -> dict:
    rows = [(p50, p99) for t, p50, p99 in plan_ms if t0 <= t <= t1]
    if not rows:
        return {'samples': 0, 'p50_ms': None, 'p99_ms_median': None, 'p99_ms_worst': None}
    a = np.array(rows)
    return {'samples': len(rows), 'p50_ms': round(float(np.median(a[:, 0])), 2),
            'p99_ms_median': round(float(np.median(a[:, 1])), 2), 'p99_ms_worst': round(float(a[:, 1].max()), 2)}


def measure(s: ReachingSession, duration_s: float, say: Callable[[str], None] = print, tag: str = 'load') -> dict:
    """Reach for `duration_s` under whatever load there is; the figures of that window."""
    mon = s.monitor
    viol0 = mon.violations
    filt0 = mon.diag_values('safety_filter') or {}
    sim0 = mon.diag_values('sim_robot') or {}
    t0 = time.time()
    next_line = t0 + 30.0
    while time.time() - t0 < duration_s:
        time.sleep(min(1.0, max(0.0, t0 + duration_s - time.time())))
        if time.time() >= next_line:
            next_line += 30.0
            t, _ = mon.commands(t0, time.time())
            ps = A.period_stats(t, t0, time.time())
            say(f'[{tag}] {time.time() - t0:5.0f} s: missed {ps.missed}/{ps.expected} periods; {load_note()}')
    t1 = time.time()
    t, modes = mon.commands(t0, t1)
    ps = A.period_stats(t, t0, t1)
    gt, goals = mon.goal_record()
    et, ee = mon.ee_record()
    outcomes = [o for o in A.reach_outcomes(gt, goals, et, ee, t1) if o.t >= t0]
    filt1 = mon.diag_values('safety_filter') or {}
    sim1 = mon.diag_values('sim_robot') or {}

    def delta(k, a=filt0, b=filt1):
        try:
            return int(b[k]) - int(a.get(k, 0))
        except (KeyError, ValueError):
            return None
    sent = A.period_stats(mon.sent_times(t0, t1), t0, t1)
    return {'duration_s': round(t1 - t0, 1), 'periods': ps.as_dict(), 'periods_sent': sent.as_dict(), 'modes': A.mode_counts(modes, ps.missed),
            'out_of_limit': mon.violations - viol0, 'reach': A.success_summary(outcomes),
            'plan': plan_times(mon.plan_ms, t0, t1), 'has_policy': s.has_policy,
            'filter_periods': {m: delta(f'periods_{m}') for m in ('mpc', 'policy', 'hold')},
            'filter_late_resyncs': delta('late_resyncs'),
            # Counters of the nodes themselves (1 Hz diagnostics, so +-1 s of periods at the edges):
            # what the filter sent and what the arm received, free of the monitor's own losses.
            'filter_sent': delta('periods'), 'arm_received': delta('commands_received', sim0, sim1),
            'load': load_note()}


def format_result(res: dict, tag: str = 'load') -> str:
    p, m, r, pl = res['periods'], res['modes'], res['reach'], res['plan']
    total = max(1, p['expected_periods'])
    return '\n'.join([
        f"[{tag}] {res['duration_s']} s; {res.get('hogs', 0)} CPU hogs (cpu % {res.get('hog_cpu', '-')}); {res['load']}",
        f"[{tag}] missed control periods: {p['missed_periods']} of {p['expected_periods']} ({p['missed_percent']} %); "
        f"longest gap {p['longest_gap_ms']} ms (by send time: {res['periods_sent']['missed_periods']}, "
        f"{res['periods_sent']['missed_percent']} %, longest gap {res['periods_sent']['longest_gap_ms']} ms)",
        f"[{tag}] the nodes' own counters over the window: filter sent {res['filter_sent']}, arm (sim_robot) "
        f"received {res['arm_received']}, of {p['expected_periods']} periods",
        f"[{tag}] periods by mode: mpc {m['mpc']} ({100 * m['mpc'] / total:.1f} %), policy {m['policy']} "
        f"({100 * m['policy'] / total:.1f} %), hold {m['hold']} ({100 * m['hold'] / total:.1f} %)"
        f"{'' if res['has_policy'] else ' (no policy.onnx in the bundle: the fallback is hold)'}; "
        f"filter's own count {res['filter_periods']}",
        f"[{tag}] commands outside the limits: {res['out_of_limit']} (must be 0)",
        f"[{tag}] reach: {r['successes']}/{r['goals']} goals within 2 cm at 3 s ({r['success_rate']}); "
        f"median distance {r['median_distance_m']} m",
        f"[{tag}] MPC plan time: p50 {pl['p50_ms']} ms, p99 {pl['p99_ms_median']} ms (median of windows), "
        f"worst window p99 {pl['p99_ms_worst']} ms ({pl['samples']} samples)"])
