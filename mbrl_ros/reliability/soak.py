"""Soak check: goals every 3 s for a long time (30 min): no crash, memory growth per node
(RSS at minute 2 vs the end) < 5 %, success rate steady per 5-minute window.

A crash is any node process that exited during the run (the launch respawns the controllers, so a
crash would otherwise pass unseen): the runner's exit records and start counts say it.
"""
from __future__ import annotations

import time
from typing import Callable

from mbrl_ros.reliability import analysis as A
from mbrl_ros.reliability.harness import ReachingSession, load_note
from mbrl_ros.reliability.monitor import MemorySampler


def run_soak(s: ReachingSession, duration_s: float, window_s: float = 300.0, mem_ref_s: float = 120.0,
             mem_period_s: float = 10.0, progress_s: float = 60.0, say: Callable[[str], None] = print) -> dict:
    mon = s.monitor
    # the nodes publish diagnostics at 1 Hz: wait for the first counters so the delta is defined
    mon.wait(lambda: None not in node_counters(mon).values(), timeout=5.0)
    sampler = MemorySampler(s.stack.pids, mem_period_s).start()
    t0 = time.time()
    viol0 = mon.violations
    counters0 = node_counters(mon)
    loads = []
    try:
        next_line = t0 + progress_s
        while time.time() - t0 < duration_s:
            time.sleep(min(1.0, max(0.0, t0 + duration_s - time.time())))
            if not s.stack.running:
                say('[soak] the launch runner stopped: ' + s.stack.tail(20))
                break
            if time.time() >= next_line:
                next_line += progress_s
                loads.append(load_note())
                say(progress_line(s, t0, sampler))
    finally:
        sampler.close()
    t1 = time.time()
    res = summarise(s, t0, t1, sampler.samples, window_s, min(mem_ref_s, 0.3 * (t1 - t0)),
                    mon.violations - viol0, loads)
    c1 = node_counters(mon)
    res.update({k: (c1[k] - counters0[k]) if None not in (c1[k], counters0[k]) else None for k in c1})
    return res


def node_counters(mon) -> dict:
    """The filter's periods sent and the arm's commands received (their /diagnostics, 1 Hz): what
    reached the arm, free of the monitor's own losses on a loaded machine."""
    out = {}
    for key, node, field in (('filter_sent', 'safety_filter', 'periods'),
                             ('arm_received', 'sim_robot', 'commands_received')):
        try:
            out[key] = int((mon.diag_values(node) or {})[field])
        except (KeyError, ValueError):
            out[key] = None
    return out


def progress_line(s: ReachingSession, t0: float, sampler: MemorySampler) -> str:
    now = time.time()
    gt, goals = s.monitor.goal_record()
    et, ee = s.monitor.ee_record()
    out = [o for o in A.reach_outcomes(gt, goals, et, ee, now) if o.t >= t0]
    sm = A.success_summary(out)
    t, _ = s.monitor.commands(t0, now)
    ps = A.period_stats(t, t0, now)
    latest = {}
    for _, name, _, rss in sampler.samples:
        latest[name] = rss
    mem = ' '.join(f'{n}={v / 2**20:.0f}' for n, v in latest.items())
    return (f"[soak] {now - t0:6.0f} s: {sm['successes']}/{sm['goals']} goals reached, missed periods "
            f"{ps.missed_fraction * 100:.2f} %, out-of-limit {s.monitor.violations}, RSS MB {mem}; {load_note()}")


def summarise(s: ReachingSession, t0: float, t1: float, samples, window_s: float, mem_ref_s: float,
              violations: int, loads: list) -> dict:
    mon = s.monitor
    gt, goals = mon.goal_record()
    et, ee = mon.ee_record()
    outcomes = [o for o in A.reach_outcomes(gt, goals, et, ee, t1) if o.t >= t0]
    t, modes = mon.commands(t0, t1)
    ps = A.period_stats(t, t0, t1)
    exits = {k: v for k, v in s.stack.exit_codes().items() if v}
    restarts = {n: s.stack.starts(n) - 1 for n in s.stack.names() if s.stack.starts(n) > 1}
    mem = A.memory_growth(samples, t0 + mem_ref_s)
    growth = [v['growth'] for v in mem.values() if v['growth'] is not None]
    return {'duration_s': round(t1 - t0, 1), 'crashes': {'exits': exits, 'restarts': restarts},
            'no_crash': not exits and not restarts and s.stack.running,
            'memory': mem, 'memory_ref_s': mem_ref_s,
            'max_memory_growth': max(growth) if growth else None,
            'reach': A.success_summary(outcomes),
            'reach_by_window': A.success_by_window(outcomes, t0, window_s),
            'periods': ps.as_dict(), 'periods_sent': A.period_stats(mon.sent_times(t0, t1), t0, t1).as_dict(),
            'modes': A.mode_counts(modes, ps.missed),
            'out_of_limit': violations, 'load': load_note(), 'load_during': loads}


def format_summary(res: dict) -> str:
    lines = [f"[soak] {res['duration_s']} s; no crash: {res['no_crash']} {res['crashes']}; {res['load']}",
             f"[soak] memory (RSS at {res['memory_ref_s']:.0f} s vs end):"]
    for node, m in sorted(res['memory'].items()):
        g = 'restarted' if m['growth'] is None else f"{100 * m['growth']:+.2f} %"
        lines.append(f"    {node:15s} {m['rss_ref_mb']:8.1f} MB -> {m['rss_end_mb']:8.1f} MB  {g}")
    r = res['reach']
    lines.append(f"[soak] reach: {r['successes']}/{r['goals']} ({r['success_rate']}) within 2 cm at 3 s; per window:")
    for w in res['reach_by_window']:
        lines.append(f"    {w['from_s']:6.0f}-{w['to_s']:6.0f} s: {w['successes']}/{w['goals']} ({w['success_rate']})")
    p, m = res['periods'], res['modes']
    lines.append(f"[soak] missed periods {p['missed_periods']}/{p['expected_periods']} ({p['missed_percent']} %), "
                 f"longest gap {p['longest_gap_ms']} ms (by send time {res['periods_sent']['missed_percent']} %); periods mpc {m['mpc']}, policy {m['policy']}, hold {m['hold']}; "
                 f"out-of-limit commands {res['out_of_limit']}")
    lines.append(f"[soak] the nodes' own counters: filter sent {res.get('filter_sent')}, arm received "
                 f"{res.get('arm_received')}, of {p['expected_periods']} periods")
    return '\n'.join(lines)
