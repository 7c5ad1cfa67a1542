"""`mbrl-ros bench sim`: how well the simulated arm and the state estimator keep time.

Starts `sim_robot` and `state_estimator` as real processes in an isolated ROS domain, watches
their topics from a probe node for `--duration` seconds and prints:

- physics real-time factor: sim time advanced / wall time over the whole run, from the
  `sim_time_s` the sim reports in /diagnostics (or from /clock with --sim-time);
- /joint_states: mean publish rate over the run vs the sim's publish_rate_hz (error %), and
  inter-arrival p50/p99/max (jitter);
- /mbrl/state latency from the joint_states header stamp (receive time here minus the stamp;
  only when the stamps are wall-clock time, i.e. not with --sim-time), and the estimator hop: /mbrl/state receipt minus
  the receipt of the /joint_states with the same stamp (valid whatever clock stamps them).

All times are taken by the probe in this process, so its own Python/GIL delay is included:
the figures are an upper bound on what a C++ subscriber would see.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from mbrl_ros.topics import DIAGNOSTICS_TOPIC, JOINT_STATES_TOPIC, STATE_TOPIC


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--duration', type=float, default=60.0, help='seconds to measure')
    p.add_argument('--robot', default='arm7', help='built-in robot name or MJCF path')
    p.add_argument('--publish-rate', type=float, default=None,
                   help="sim_robot publish_rate_hz (default: the node's own)")
    p.add_argument('--startup-timeout', type=float, default=60.0,
                   help='seconds to wait for /mbrl/state to flow before giving up')
    p.add_argument('--sim-time', action='store_true',
                   help='run the sim with publish_clock:=true (stamps in sim time: no stamp latency)')
    p.add_argument('--json', action='store_true', help='print the results as JSON instead of a table')


def run(args) -> int:
    from mbrl_ros.testing.isolation import isolate_ros_session

    # Before rclpy is imported: the bench must never talk to a real robot on the default domain.
    domain = isolate_ros_session()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
        (lambda *a: print(*a, flush=True))
    log(f'[bench sim] ROS_DOMAIN_ID={domain}; robot {args.robot}; measuring {args.duration:.0f} s')
    sim_params = [f'robot:={args.robot}', f'publish_clock:={str(args.sim_time).lower()}']
    if args.publish_rate is not None:
        sim_params.append(f'publish_rate_hz:={args.publish_rate}')
    procs = {}
    logs = {}
    try:
        for name, params in (('sim_robot', sim_params), ('state_estimator', [f'robot:={args.robot}'])):
            logs[name] = tempfile.TemporaryFile(mode='w+')
            cmd = [sys.executable, '-m', f'mbrl_ros.nodes.{name}', '--ros-args']
            for prm in params:
                cmd += ['-p', prm]
            procs[name] = subprocess.Popen(cmd, stdout=logs[name], stderr=subprocess.STDOUT,
                                           start_new_session=True)
        result = _measure(args, procs, log)
    except KeyboardInterrupt:
        log('[bench sim] interrupted')
        return 130
    finally:
        _stop(procs)
    if 'error' in result:
        print(f"[bench sim] {result['error']}", file=sys.stderr)
        for name, f in logs.items():
            f.seek(0)
            tail = f.read()[-2000:]
            print(f'--- {name} (exit {procs[name].returncode}) ---\n{tail}', file=sys.stderr)
        return 1
    for f in logs.values():
        f.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0


def _stop(procs: dict) -> None:
    """SIGINT (the nodes' clean shutdown), then SIGKILL whatever is left."""
    for p in procs.values():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _measure(args, procs, log) -> dict:
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState

    from mbrl_ros.ros.conversions import stamp_to_sec
    from mbrl_ros.testing.ros_probe import RosProbe

    # Best effort matches any publisher; deep queues so a slow probe loses nothing.
    qos = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.BEST_EFFORT)

    def dead():
        return next((n for n, p in procs.items() if p.poll() is not None), None)

    with RosProbe('bench_sim') as probe:
        # Keep only what is needed (receive time, stamp), not whole messages.
        js, st, clk, diags = [], [], [], []
        probe.subscribe(JOINT_STATES_TOPIC, JointState, qos,
                        lambda m, t: js.append((t, m.header.stamp.sec, m.header.stamp.nanosec)))
        probe.subscribe(STATE_TOPIC, JointState, qos,
                        lambda m, t: st.append((t, m.header.stamp.sec, m.header.stamp.nanosec)))
        probe.subscribe('/clock', Clock, qos, lambda m, t: clk.append((t, stamp_to_sec(m.clock))))

        def on_diag(m, t):
            diags.extend((t, s) for s in m.status)
        probe.subscribe(DIAGNOSTICS_TOPIC, DiagnosticArray, 50, on_diag)

        t_start = time.monotonic()
        if not probe.wait_until(lambda: bool(st) or dead(), args.startup_timeout) or dead():
            which = dead()
            return {'error': f'{which} exited during start-up' if which else
                    f'no /mbrl/state within {args.startup_timeout:.0f} s'}
        log(f'[bench sim] up after {time.monotonic() - t_start:.1f} s; measuring...')
        time.sleep(1.0)  # let discovery and start-up transients settle
        # Fix the measurement window by receive time (wall clock, as the probe stamps it).
        w0 = time.time()
        cpu0 = _cpu_seconds(procs)
        next_report = time.monotonic() + 10
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            if dead():
                return {'error': f'{dead()} exited during the run'}
            time.sleep(0.1)
            if time.monotonic() >= next_report and not args.json:
                next_report += 10
                log(f'[bench sim]   {args.duration - (end - time.monotonic()):.0f} s ...')
        w1 = time.time()
        cpu1 = _cpu_seconds(procs)
        try:
            rate_setting = float(probe.get_param('/sim_robot', 'publish_rate_hz'))
        except Exception:  # noqa: BLE001 - the figure is optional, the bench still reports
            rate_setting = None
        js, st, clk, diag_log = list(js), list(st), list(clk), list(diags)
    out = analyse(js, st, clk, diag_log, w0, w1, rate_setting, args, np)
    # Context for reading the figures on a shared machine.
    out['cpu_percent'] = {n: 100.0 * (cpu1[n] - cpu0[n]) / (w1 - w0) for n in cpu0 if n in cpu1}
    out['load_average_1min'] = os.getloadavg()[0]
    out['cpu_count'] = os.cpu_count()
    return out


def _cpu_seconds(procs: dict) -> dict:
    """user+system CPU seconds used so far by each node process (empty without psutil)."""
    try:
        import psutil
    except ImportError:
        return {}
    out = {}
    for name, p in procs.items():
        try:
            t = psutil.Process(p.pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _pct(np, a, q):
    return float(np.percentile(a, q)) if len(a) else float('nan')


def analyse(js, st, clk, diags, w0, w1, rate_setting, args, np) -> dict:
    """Turn the raw receive logs into the bench's figures (pure; no ROS).

    js, st: (receive time, stamp sec, stamp nanosec); clk: (receive time, sim time);
    diags: (receive time, DiagnosticStatus); w0..w1: the measurement window (receive time).
    """
    from mbrl_ros.ros.diagnostics import status_values
    last_diag = {s.name: s for _, s in diags}  # the latest status of each node
    sim_diag = [(t, status_values(s)) for t, s in diags
                if w0 <= t <= w1 and 'sim' in s.name]
    js = [x for x in js if w0 <= x[0] <= w1]
    st = [x for x in st if w0 <= x[0] <= w1]
    clk = [x for x in clk if w0 <= x[0] <= w1]
    out: dict = {'robot': args.robot, 'duration_s': w1 - w0}

    # Real-time factor.
    rtf, rtf_source = None, None
    sim_times = [(t, float(kv['sim_time_s'])) for t, kv in sim_diag if _is_float(kv.get('sim_time_s'))]
    if len(clk) >= 2:
        rtf = (clk[-1][1] - clk[0][1]) / (clk[-1][0] - clk[0][0])
        rtf_source = '/clock'
    elif len(sim_times) >= 2 and sim_times[-1][0] > sim_times[0][0]:
        # Diagnostics arrive ~1 s apart, so over a long run the receive jitter averages out.
        rtf = (sim_times[-1][1] - sim_times[0][1]) / (sim_times[-1][0] - sim_times[0][0])
        rtf_source = f'sim_time_s in /diagnostics over {sim_times[-1][0] - sim_times[0][0]:.0f} s'
    else:
        per_window = [float(kv['real_time_factor']) for _, kv in sim_diag
                      if _is_float(kv.get('real_time_factor'))]
        if per_window:
            rtf, rtf_source = float(np.mean(per_window)), 'mean real_time_factor in /diagnostics'
    out['real_time_factor'] = rtf
    out['real_time_factor_source'] = rtf_source

    # /joint_states rate and jitter (receive times).
    t_js = np.array([x[0] for x in js])
    js_out = {'count': len(js), 'setting_hz': rate_setting}
    if len(t_js) >= 2:
        rate = (len(t_js) - 1) / (t_js[-1] - t_js[0])
        gaps = 1e3 * np.diff(t_js)
        js_out.update(mean_rate_hz=rate,
                      rate_error_pct=(100.0 * (rate - rate_setting) / rate_setting
                                      if rate_setting else None),
                      interarrival_p50_ms=_pct(np, gaps, 50), interarrival_p99_ms=_pct(np, gaps, 99),
                      interarrival_max_ms=float(gaps.max()))
        stamps = np.array([x[1] + x[2] * 1e-9 for x in js])
        sgaps = 1e3 * np.diff(stamps)
        js_out.update(stamp_step_p50_ms=_pct(np, sgaps, 50), stamp_step_p99_ms=_pct(np, sgaps, 99))
        # Are the stamps wall-clock time? (a sim may stamp sim time)
        js_out['stamps_wall_clock'] = bool(np.median(np.abs(t_js - stamps)) < 1.0)
    out['joint_states'] = js_out

    # /mbrl/state latency.
    st_out = {'count': len(st)}
    if st:
        t_st = np.array([x[0] for x in st])
        s_st = np.array([x[1] + x[2] * 1e-9 for x in st])
        if js_out.get('stamps_wall_clock'):
            lat = 1e3 * (t_st - s_st)
            st_out.update(latency_from_stamp_p50_ms=_pct(np, lat, 50),
                          latency_from_stamp_p99_ms=_pct(np, lat, 99),
                          latency_from_stamp_max_ms=float(lat.max()))
        js_recv = {(x[1], x[2]): x[0] for x in js}
        hop = np.array([1e3 * (x[0] - js_recv[(x[1], x[2])]) for x in st if (x[1], x[2]) in js_recv])
        st_out['matched_to_joint_states'] = len(hop)
        if len(hop):
            st_out.update(estimator_hop_p50_ms=_pct(np, hop, 50), estimator_hop_p99_ms=_pct(np, hop, 99),
                          estimator_hop_max_ms=float(hop.max()))
        st_out['fraction_of_joint_states'] = len(st) / len(js) if js else None
    out['mbrl_state'] = st_out
    out['diagnostics'] = {name: {'level': int.from_bytes(s.level, 'little') if isinstance(s.level, bytes)
                                 else int(s.level), 'message': s.message}
                          for name, s in last_diag.items()}
    return out


def _is_float(v) -> bool:
    try:
        return v is not None and float(v) == float(v)
    except ValueError:
        return False


def format_table(r: dict) -> str:
    def f(v, fmt='{:.2f}'):
        return 'n/a' if v is None or v != v else fmt.format(v)
    js, st = r['joint_states'], r['mbrl_state']
    rows = [
        ('robot', r['robot']),
        ('measured for', f(r['duration_s'], '{:.1f} s')),
        ('physics real-time factor', f(r['real_time_factor'], '{:.3f}') +
         (f"  (from {r['real_time_factor_source']})" if r['real_time_factor_source'] else '')),
        ('/joint_states messages', str(js['count'])),
        ('/joint_states rate', f"{f(js.get('mean_rate_hz'))} Hz (setting {f(js.get('setting_hz'), '{:.1f}')} Hz, "
                               f"error {f(js.get('rate_error_pct'), '{:+.2f}')} %)"),
        ('/joint_states inter-arrival', f"p50 {f(js.get('interarrival_p50_ms'), '{:.3f}')} ms  "
                                        f"p99 {f(js.get('interarrival_p99_ms'), '{:.3f}')} ms  "
                                        f"max {f(js.get('interarrival_max_ms'), '{:.3f}')} ms"),
        ('/joint_states stamp step', f"p50 {f(js.get('stamp_step_p50_ms'), '{:.3f}')} ms  "
                                     f"p99 {f(js.get('stamp_step_p99_ms'), '{:.3f}')} ms"),
        ('/mbrl/state messages', f"{st['count']} ({f(st.get('fraction_of_joint_states'), '{:.1%}')} "
                                 'of /joint_states)'),
    ]
    if 'latency_from_stamp_p50_ms' in st:
        rows.append(('/mbrl/state latency from stamp',
                     f"p50 {f(st['latency_from_stamp_p50_ms'], '{:.3f}')} ms  "
                     f"p99 {f(st['latency_from_stamp_p99_ms'], '{:.3f}')} ms  "
                     f"max {f(st['latency_from_stamp_max_ms'], '{:.3f}')} ms"))
    else:
        rows.append(('/mbrl/state latency from stamp', 'n/a (joint_states not stamped with wall-clock time)'))
    if 'estimator_hop_p50_ms' in st:
        rows.append(('estimator hop (js -> state)',
                     f"p50 {f(st['estimator_hop_p50_ms'], '{:.3f}')} ms  "
                     f"p99 {f(st['estimator_hop_p99_ms'], '{:.3f}')} ms  "
                     f"max {f(st['estimator_hop_max_ms'], '{:.3f}')} ms"))
    for name, pct in sorted(r.get('cpu_percent', {}).items()):
        rows.append((f'CPU {name}', f'{pct:.0f} % of one core'))
    if 'load_average_1min' in r:
        rows.append(('host load (1 min)', f"{r['load_average_1min']:.2f} on {r['cpu_count']} cores"))
    for name, d in sorted(r['diagnostics'].items()):
        level = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}.get(d['level'], str(d['level']))
        rows.append((f'diagnostics {name}', f"{level}: {d['message']}"))
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)
