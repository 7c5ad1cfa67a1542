"""Reach-demo report (ROS-free): goals to send, per-goal results, summary table and PNG plots.

The demo (mbrl_ros/commands/demo.py) records what it saw as plain arrays in a `RunRecord`
(wall-clock seconds); everything here works on those arrays, so it is unit-tested without ROS
and can be re-run on a record built from a bag.

Definitions used in the table:
- distance: |end effector - goal| (ground truth from the simulator when available);
- success: within `radius` (2 cm) `success_after_s` (3 s) after the goal was sent (at the end of
  the goal's period when that is shorter; flagged in the table);
- time to 2 cm: first sample within the radius, from the goal's send time;
- modes seen: the safety filter modes in force at any time during the goal's period.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

SUCCESS_RADIUS_M = 0.02
SUCCESS_AFTER_S = 3.0
MODE_COLORS = {'mpc': '#2a9d8f', 'policy': '#e9c46a', 'hold': '#e76f51'}


# ---- goals -------------------------------------------------------------------------------
def reachable_goals(robot, rng: np.random.Generator, n: int, limit_margin: float = 0.15,
                    min_height: float = 0.05, min_separation: float = 0.1, start=None,
                    workspace=None, max_tries: int = 10000) -> np.ndarray:
    """`n` end-effector goals (n, 3) that the arm can reach: FK of random configurations inside
    the joint limits shrunk by `limit_margin` of each joint's span per side (away from the limits),
    at least `min_height` above the ground, each at least `min_separation` from the one before
    (the first from `start`, when given) so that every goal is a real move, and inside
    `workspace` (mbrl_ros.core.workspace.Workspace) when given: the controller would refuse
    a goal outside it."""
    span = robot.q_max - robot.q_min
    lo, hi = robot.q_min + limit_margin * span, robot.q_max - limit_margin * span
    goals: list[np.ndarray] = []
    prev = None if start is None else np.asarray(start, dtype=np.float64)
    for _ in range(max_tries):
        if len(goals) == n:
            break
        g = np.asarray(robot.fk(rng.uniform(lo, hi)), dtype=np.float64)
        if g[2] < min_height:
            continue
        if prev is not None and np.linalg.norm(g - prev) < min_separation:
            continue
        if workspace is not None and workspace.check_goal(g) is not None:
            continue
        goals.append(g)
        prev = g
    if len(goals) < n:
        raise RuntimeError(f'found only {len(goals)} of {n} reachable goals for {robot.name} in {max_tries} '
                           'tries (limits too narrow for the margin?)')
    return np.array(goals).reshape(n, 3)


# ---- what a run recorded -----------------------------------------------------------------
@dataclass
class RunRecord:
    """Time series of one demo run; times are wall-clock seconds (time.time())."""
    goal_times: list = field(default_factory=list)       # send time of each goal
    goals: list = field(default_factory=list)            # (3,) each
    ee_t: list = field(default_factory=list)             # end-effector position samples
    ee: list = field(default_factory=list)
    mode_t: list = field(default_factory=list)           # safety filter mode messages
    modes: list = field(default_factory=list)
    unc_t: list = field(default_factory=list)            # world-model uncertainty
    unc: list = field(default_factory=list)
    latency_t: list = field(default_factory=list)        # MPC command receive time
    latency_ms: list = field(default_factory=list)       # receive time - stamp of the planned-from state
    plan_t: list = field(default_factory=list)           # mpc_controller diagnostics
    plan_p50_ms: list = field(default_factory=list)
    plan_p99_ms: list = field(default_factory=list)
    t_end: Optional[float] = None

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        t, v = {'ee': (self.ee_t, self.ee), 'unc': (self.unc_t, self.unc),
                'latency': (self.latency_t, self.latency_ms)}[name]
        n = min(len(t), len(v))  # appended from another thread: take the common length
        t = np.asarray(t[:n], dtype=np.float64)
        v = np.asarray(v[:n], dtype=np.float64)
        return t, (v.reshape(n, 3) if name == 'ee' else v)


@dataclass
class GoalResult:
    index: int               # 1-based
    goal: tuple
    start_distance: float
    final_distance: float
    distance_at_check: float
    check_after_s: float     # < success_after_s when the goal's period was shorter
    success: bool
    time_to_radius_s: Optional[float]
    modes: list
    samples: int
    mpc_fraction: float = float('nan')   # share of the goal's period in mode mpc

    def as_dict(self) -> dict:
        return {'goal': [round(float(v), 4) for v in self.goal], 'start_distance_m': _r(self.start_distance),
                'final_distance_m': _r(self.final_distance), 'distance_at_check_m': _r(self.distance_at_check),
                'check_after_s': round(self.check_after_s, 3), 'success': bool(self.success),
                'time_to_2cm_s': None if self.time_to_radius_s is None else round(self.time_to_radius_s, 3),
                'modes': list(self.modes), 'mpc_fraction': _r(self.mpc_fraction), 'samples': int(self.samples)}


def _r(x: float) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def _windows(rec: RunRecord) -> list[tuple[float, float]]:
    starts = list(rec.goal_times)
    end = rec.t_end if rec.t_end is not None else (max(rec.ee_t) if rec.ee_t else starts[-1])
    return [(t0, starts[i + 1] if i + 1 < len(starts) else end) for i, t0 in enumerate(starts)]


def modes_in(rec: RunRecord, t0: float, t1: float) -> list[str]:
    """Modes in force at any time in [t0, t1): the last one before t0 and every one inside."""
    t = np.asarray(rec.mode_t[:len(rec.modes)], dtype=np.float64)
    seen: list[str] = []
    if len(t) == 0:
        return seen
    before = np.flatnonzero(t <= t0)
    idx = ([before[-1]] if len(before) else []) + list(np.flatnonzero((t > t0) & (t < t1)))
    for i in idx:
        if rec.modes[i] not in seen:
            seen.append(rec.modes[i])
    return seen


def mode_fractions(rec: RunRecord, t0: float, t1: float) -> dict:
    """Share of [t0, t1) spent in each mode (a mode is in force from its message to the next)."""
    t = np.asarray(rec.mode_t[:len(rec.modes)], dtype=np.float64)
    if len(t) == 0 or t1 <= t0:
        return {}
    ends = np.append(t[1:], max(t1, t[-1]))
    out: dict[str, float] = {}
    for a, b, mode in zip(t, ends, rec.modes):
        span = min(b, t1) - max(a, t0)
        if span > 0:
            out[mode] = out.get(mode, 0.0) + span / (t1 - t0)
    return out


def goal_results(rec: RunRecord, radius: float = SUCCESS_RADIUS_M,
                 success_after_s: float = SUCCESS_AFTER_S) -> list[GoalResult]:
    t, ee = rec.arrays('ee')
    out = []
    for i, ((t0, t1), goal) in enumerate(zip(_windows(rec), rec.goals)):
        goal = np.asarray(goal, dtype=np.float64)
        m = (t >= t0) & (t <= t1)
        tw, d = t[m], (np.linalg.norm(ee[m] - goal, axis=1) if m.any() else np.zeros(0))
        check = min(success_after_s, t1 - t0)
        if len(d):
            upto = np.flatnonzero(tw <= t0 + check + 1e-9)
            d_check = float(d[upto[-1]]) if len(upto) else float('nan')
            inside = np.flatnonzero(d <= radius)
            ttr = float(tw[inside[0]] - t0) if len(inside) else None
            # The distance when the goal arrived: the last sample before it, else the first in it.
            prev = np.flatnonzero(t < t0)
            d0 = float(np.linalg.norm(ee[prev[-1]] - goal)) if len(prev) else float(d[0])
            final = float(d[-1])
        else:
            d_check, ttr, d0, final = float('nan'), None, float('nan'), float('nan')
        out.append(GoalResult(i + 1, tuple(float(v) for v in goal), d0, final, d_check, check,
                              bool(np.isfinite(d_check) and d_check <= radius), ttr,
                              modes_in(rec, t0, t1), int(len(d)),
                              mode_fractions(rec, t0, t1).get('mpc', 0.0) if rec.modes else float('nan')))
    return out


def totals(results: list[GoalResult], rec: Optional[RunRecord] = None) -> dict:
    finals = np.array([r.final_distance for r in results], dtype=np.float64)
    ttr = [r.time_to_radius_s for r in results if r.time_to_radius_s is not None]
    out = {'goals': len(results), 'successes': sum(r.success for r in results),
           'median_final_distance_m': _r(float(np.nanmedian(finals))) if np.isfinite(finals).any() else None,
           'max_final_distance_m': _r(float(np.nanmax(finals))) if np.isfinite(finals).any() else None,
           'median_time_to_2cm_s': round(float(np.median(ttr)), 3) if ttr else None,
           'reached_2cm': len(ttr)}
    if rec is not None:
        _, lat = rec.arrays('latency')
        _, unc = rec.arrays('unc')
        out.update({
            'mpc_commands': int(len(lat)),
            'command_latency_ms_p50': _r(float(np.percentile(lat, 50))) if len(lat) else None,
            'command_latency_ms_p99': _r(float(np.percentile(lat, 99))) if len(lat) else None,
            'plan_ms_p50_last': _r(rec.plan_p50_ms[-1]) if rec.plan_p50_ms else None,
            'plan_ms_p99_last': _r(rec.plan_p99_ms[-1]) if rec.plan_p99_ms else None,
            'uncertainty_median': _r(float(np.median(unc))) if len(unc) else None,
            'mode_changes': max(0, sum(1 for a, b in zip(rec.modes, rec.modes[1:]) if a != b)),
        })
    return out


def format_table(results: list[GoalResult], tot: dict, radius: float = SUCCESS_RADIUS_M,
                 success_after_s: float = SUCCESS_AFTER_S) -> str:
    cm = radius * 100
    head = (f"{'goal':>4}  {'target (x, y, z) m':>24}  {'start':>7}  {'final':>7}  "
            f"{'ok@' + format(success_after_s, 'g') + 's':>6}  {'to ' + format(cm, 'g') + 'cm':>8}  {'mpc%':>4}  modes")
    lines = [head, '-' * len(head)]
    for r in results:
        short = '' if r.check_after_s >= success_after_s - 1e-9 else f' (at {r.check_after_s:.1f}s)'
        lines.append(
            f'{r.index:>4}  ({r.goal[0]:+.3f}, {r.goal[1]:+.3f}, {r.goal[2]:+.3f})  '
            f'{_cm(r.start_distance):>7}  {_cm(r.final_distance):>7}  '
            f"{('yes' if r.success else 'no') + short:>6}  "
            f"{'-' if r.time_to_radius_s is None else format(r.time_to_radius_s, '.2f') + ' s':>8}  "
            f"{'-' if not np.isfinite(r.mpc_fraction) else format(100 * r.mpc_fraction, '.0f'):>4}  "
            f"{','.join(r.modes) or '-'}")
    lines.append('-' * len(head))
    med = tot.get('median_final_distance_m')
    lines.append(f"total: {tot['successes']}/{tot['goals']} within {cm:g} cm after {success_after_s:g} s; "
                 f"{tot['reached_2cm']}/{tot['goals']} reached {cm:g} cm at some point; median final distance "
                 + ('-' if med is None else f'{med * 100:.1f} cm')
                 + ('' if tot.get('median_time_to_2cm_s') is None
                    else f"; median time to {cm:g} cm {tot['median_time_to_2cm_s']:.2f} s"))
    return '\n'.join(lines)


def _cm(d: float) -> str:
    return '-' if d is None or not np.isfinite(d) else f'{d * 100:.1f}cm'


# ---- plots -------------------------------------------------------------------------------
def write_plots(out_dir: str | Path, rec: RunRecord, results: list[GoalResult],
                radius: float = SUCCESS_RADIUS_M, title: str = '') -> list[Path]:
    """distance.png, uncertainty.png, plan_time.png, modes.png in `out_dir` (matplotlib Agg)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_ref = rec.goal_times[0] if rec.goal_times else 0.0
    windows = _windows(rec) if rec.goal_times else []
    paths = []

    def save(fig, name):
        p = out_dir / name
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)

    def shade_goals(ax):
        for i, (t0, _) in enumerate(windows):
            ax.axvline(t0 - t_ref, color='k', lw=1.0, ls=':', zorder=3)
            ax.text(t0 - t_ref, 1.0, f' goal {i + 1}', transform=ax.get_xaxis_transform(), va='top', fontsize=8,
                    color='k', zorder=4)

    # Distance to goal, one curve per goal against the time since it was sent.
    t, ee = rec.arrays('ee')
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (t0, t1), goal, r in zip(windows, rec.goals, results):
        m = (t >= t0) & (t <= t1)
        if m.any():
            ax.plot(t[m] - t0, 100 * np.linalg.norm(ee[m] - np.asarray(goal), axis=1),
                    label=f"goal {r.index} ({'ok' if r.success else 'miss'})")
    ax.axhline(100 * radius, color='k', ls='--', lw=1, label=f'{100 * radius:g} cm')
    ax.set_yscale('log')
    ax.set_xlabel('time since the goal was sent [s]')
    ax.set_ylabel('end-effector distance to goal [cm]')
    ax.set_title(f'Distance to goal per goal {title}'.strip())
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8, ncol=2)  # the 2 cm line is always labelled
    save(fig, 'distance.png')

    # World-model uncertainty over the run.
    tu, u = rec.arrays('unc')
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if len(tu):
        ax.plot(tu - t_ref, u, lw=0.8, color='tab:purple')
    else:
        ax.text(0.5, 0.5, 'no /mbrl/world_model/uncertainty received', ha='center', transform=ax.transAxes)
    shade_goals(ax)
    ax.set_xlabel('time since the first goal [s]')
    ax.set_ylabel('ensemble disagreement')
    ax.set_title('World-model uncertainty (/mbrl/world_model/uncertainty)')
    ax.grid(True, alpha=0.3)
    save(fig, 'uncertainty.png')

    # Plan time: command stamp timing (receive time - stamp of the state it was planned from,
    # so plan time + estimator/transport latency), with the node's own p50/p99 from /diagnostics.
    _, lat = rec.arrays('latency')
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(lat):
        hi = float(np.percentile(lat, 99.5))
        ax.hist(np.clip(lat, 0, hi), bins=50, color='tab:blue', alpha=0.8,
                label=f'state stamp -> command received (n={len(lat)})')
        ax.axvline(np.percentile(lat, 50), color='tab:blue', ls='--', lw=1,
                   label=f'p50 {np.percentile(lat, 50):.1f} ms')
    else:
        ax.text(0.5, 0.5, 'no /mbrl/mpc/command received', ha='center', transform=ax.transAxes)
    if rec.plan_p50_ms:
        ax.axvline(rec.plan_p50_ms[-1], color='tab:green', lw=1.5,
                   label=f'mpc_controller plan p50 {rec.plan_p50_ms[-1]:.1f} ms (/diagnostics)')
        ax.axvline(rec.plan_p99_ms[-1], color='tab:red', lw=1.5,
                   label=f'mpc_controller plan p99 {rec.plan_p99_ms[-1]:.1f} ms (/diagnostics)')
    ax.set_xlabel('ms')
    ax.set_ylabel('commands')
    ax.set_title('MPC plan time (command stamp timing; node p50/p99 from diagnostics)')
    if len(lat) or rec.plan_p50_ms:
        ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    save(fig, 'plan_time.png')

    # Mode timeline: coloured spans for each mode in force.
    fig, ax = plt.subplots(figsize=(8, 2.2))
    mt = np.asarray(rec.mode_t[:len(rec.modes)], dtype=np.float64)
    end = rec.t_end if rec.t_end is not None else (mt[-1] if len(mt) else t_ref)
    labelled = set()
    for i, mode in enumerate(rec.modes[:len(mt)]):
        a = mt[i]
        b = mt[i + 1] if i + 1 < len(mt) else end
        ax.axvspan(a - t_ref, b - t_ref, color=MODE_COLORS.get(mode, '0.5'),
                   label=None if mode in labelled else mode, lw=0)
        labelled.add(mode)
    shade_goals(ax)
    ax.set_yticks([])
    ax.set_xlabel('time since the first goal [s]')
    ax.set_title('Safety filter mode (/mbrl/safety/mode)')
    if labelled:
        ax.legend(loc='upper right', fontsize=8, ncol=3)
    if not len(mt):
        ax.text(0.5, 0.5, 'no /mbrl/safety/mode received', ha='center', transform=ax.transAxes)
    save(fig, 'modes.png')
    return paths


def write_summary(out_dir: str | Path, results: list[GoalResult], tot: dict, table: str,
                  settings: dict) -> tuple[Path, Path]:
    """summary.yaml (machine-readable) and summary.txt (the printed table)."""
    import yaml
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = out_dir / 'summary.yaml'
    with open(y, 'w') as f:
        yaml.safe_dump({'settings': settings, 'totals': tot, 'goals': [r.as_dict() for r in results]}, f,
                       sort_keys=False)
    txt = out_dir / 'summary.txt'
    txt.write_text(table + '\n')
    return y, txt


# ---- the log -----------------------------------------------------------------------------
def bag_topic_counts(path: str | Path) -> dict:
    """Messages per topic of a rosbag2 bag read back with rosbags' AnyReader (the first message
    of each topic deserialised too), so a report only claims a log that standard tooling opens."""
    from rosbags.highlevel import AnyReader

    from mbrl_ros.core.data.bags import bag_dir, typestore
    counts: dict[str, int] = {}
    with AnyReader([bag_dir(path)], default_typestore=typestore()) as reader:
        for c in reader.connections:
            counts.setdefault(c.topic, 0)
        for conn, _, raw in reader.messages():
            if counts[conn.topic] == 0:
                reader.deserialize(raw, conn.msgtype)
            counts[conn.topic] += 1
    return counts
