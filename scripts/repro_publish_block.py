#!/usr/bin/env python3
"""Does a ROS publisher block when one of its subscribers is SIGKILLed? (issue 7, docs/reliability.md)

One publisher process publishes sensor_msgs/JointState (7 joints, like /mbrl/state) at --rate Hz with
the stack's /mbrl/state QoS (reliable, keep last 10) and times every publish() call. --subs subscriber
processes listen; every --kill-every seconds one of them is SIGKILLed (no goodbye) and a new one is
started. The parent watches the publisher's progress through a shared counter, so a publisher stuck
inside publish() (holding the GIL: it cannot report anything itself) is still seen: a stall longer
than --hang-s counts as a hang, and `py-spy dump --native` of it is printed when py-spy is installed.

Run it once per transport and compare, e.g.:
    python scripts/repro_publish_block.py --duration 60
    FASTDDS_BUILTIN_TRANSPORTS=UDPv4 python scripts/repro_publish_block.py --duration 60
    python scripts/repro_publish_block.py --duration 60 --hog 1   # plus one busy-loop process
Prints one summary line (publishes, kills, publish() p50/p99/max, longest gap between publishes,
stalls over 50 ms, hangs) and exits 1 if the publisher hung. With --kill-every 0 nothing is killed and
it prints the processes' CPU use and each subscriber's delivery latency (the cost of a transport).
Note: under ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST rmw_fastrtps uses shared memory whatever
FASTDDS_BUILTIN_TRANSPORTS says; compare transports with SUBNET (on a domain of its own).
With shared memory, every SIGKILLed subscriber leaves its segment in /dev/shm (about 0.5 MB,
fastdds_<id> + fastdds_<id>_el; 200 kills ~ 100 MB of RAM) that Fast DDS does not remove; a segment
whose _el file nobody holds an flock on is such a leftover and can be deleted.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import psutil

TOPIC = '/repro/state'


def _qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    # Same as mbrl_ros.ros.conversions.SENSOR, the QoS of /mbrl/state (kept local so the script
    # runs the experiment even if that profile changes).
    return QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def publisher(rate: float, counter, stats, stop) -> None:
    import rclpy
    from sensor_msgs.msg import JointState
    rclpy.init()
    node = rclpy.create_node('repro_pub')
    pub = node.create_publisher(JointState, TOPIC, _qos())
    msg = JointState()
    msg.name = [f'joint{i}' for i in range(7)]
    period = 1.0 / rate
    durations = []
    slow = []  # (monotonic start, ms) of publish() calls over 10 ms
    max_gap = 0.0
    last = None
    nxt = time.monotonic()
    while not stop.is_set():
        msg.position = [random.random() for _ in range(7)]
        msg.velocity = list(msg.position)
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 10**9)
        t0 = time.monotonic()
        pub.publish(msg)
        t1 = time.monotonic()
        durations.append(t1 - t0)
        if t1 - t0 > 0.010:
            slow.append((round(t0, 3), round(1e3 * (t1 - t0), 1)))
        if last is not None:
            max_gap = max(max_gap, t0 - last)
        last = t0
        counter.value += 1
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
        if nxt < time.monotonic() - 1.0:  # fell far behind (a stall): do not burst to catch up
            nxt = time.monotonic()
    durations.sort()
    n = len(durations)
    stats['n'] = n
    stats['p50_ms'] = 1e3 * durations[n // 2] if n else 0.0
    stats['p99_ms'] = 1e3 * durations[min(n - 1, int(0.99 * n))] if n else 0.0
    stats['max_ms'] = 1e3 * durations[-1] if n else 0.0
    stats['over_10ms'] = sum(d > 0.010 for d in durations)
    stats['max_gap_ms'] = 1e3 * max_gap
    stats['slow'] = slow[:50]
    node.destroy_node()
    rclpy.shutdown()


def subscriber() -> None:
    import rclpy
    from sensor_msgs.msg import JointState
    rclpy.init()
    node = rclpy.create_node('repro_sub')
    lat = []  # wall-clock delivery latency from the publisher's stamp (same machine, same clock)

    def on_msg(m):
        lat.append(time.time() - (m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec))
    node.create_subscription(JointState, TOPIC, on_msg, _qos())
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):
        pass
    lat.sort()
    if lat:
        n = len(lat)
        print(f'LATENCY n={n} p50_ms={1e3 * lat[n // 2]:.3f} p99_ms={1e3 * lat[int(0.99 * n)]:.3f} '
              f'max_ms={1e3 * lat[-1]:.3f}', flush=True)


def _start_sub() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, '--role', 'sub'], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)


def _py_spy(pid: int) -> str:
    exe = shutil.which('py-spy') or os.path.join(os.path.dirname(sys.executable), 'py-spy')
    if not os.path.exists(exe):
        return '(py-spy not installed)'
    try:
        return subprocess.run([exe, 'dump', '--native', '--pid', str(pid)], capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f'(py-spy failed: {exc})'


def _gdb_threads(pid: int) -> str:
    """Native stacks of every thread (Fast DDS's own threads are invisible to py-spy)."""
    if not shutil.which('gdb'):
        return '(gdb not installed)'
    try:
        out = subprocess.run(['gdb', '-p', str(pid), '-batch', '-ex', 'thread apply all bt 30'],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f'(gdb failed: {exc})'
    return '\n'.join(line for line in out.splitlines() if line.startswith(('Thread', '#')))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--role', choices=['main', 'sub'], default='main', help=argparse.SUPPRESS)
    ap.add_argument('--rate', type=float, default=250.0, help='publish rate (Hz)')
    ap.add_argument('--subs', type=int, default=4, help='subscriber processes')
    ap.add_argument('--duration', type=float, default=30.0, help='seconds of killing')
    ap.add_argument('--kill-every', type=float, default=0.5,
                    help='seconds between SIGKILLs; 0: no kills, print CPU use and delivery latency instead')
    ap.add_argument('--hog', type=int, default=0, help='busy-loop processes during the run')
    ap.add_argument('--hang-s', type=float, default=3.0, help='a publisher stalled this long is hung')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--gdb', action='store_true', help='on a hang, also print every thread\'s native stack')
    ap.add_argument('--verbose', action='store_true', help='list each publish() over 10 ms')
    args = ap.parse_args()
    if args.role == 'sub':
        subscriber()
        return 0

    rng = random.Random(args.seed)
    ctx = mp.get_context('spawn')
    counter = ctx.Value('q', 0, lock=False)
    manager = ctx.Manager()
    stats = manager.dict()
    stop = ctx.Event()
    pub = ctx.Process(target=publisher, args=(args.rate, counter, stats, stop), daemon=True)
    pub.start()
    subs = [_start_sub() for _ in range(args.subs)]
    hogs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(args.hog)]
    cpu_pct = 0.0
    kills = 0
    kill_times = []
    hung = False
    stall_max = 0.0
    stalls_50ms = 0
    dump = ''
    try:
        time.sleep(3.0)  # discovery
        procs = [psutil.Process(pid) for pid in [pub.pid] + [s.pid for s in subs]]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        t_cpu0 = time.monotonic()
        t_end = time.monotonic() + args.duration
        next_kill = time.monotonic() + args.kill_every if args.kill_every > 0 else float('inf')
        last_count, last_change = counter.value, time.monotonic()
        in_stall = False
        while time.monotonic() < t_end:
            time.sleep(0.01)
            now = time.monotonic()
            c = counter.value
            if c != last_count:
                last_count, last_change, in_stall = c, now, False
            stalled = now - last_change
            stall_max = max(stall_max, stalled)
            if stalled > 0.05 and not in_stall:
                stalls_50ms += 1
                in_stall = True
            if stalled > args.hang_s:
                hung = True
                print(f'publisher stalled for {stalled:.1f} s after {kills} kills: hung', flush=True)
                dump = _py_spy(pub.pid)
                if args.gdb:
                    dump += _gdb_threads(pub.pid)
                break
            if now >= next_kill:
                i = rng.randrange(len(subs))
                subs[i].send_signal(signal.SIGKILL)
                subs[i].wait()
                subs[i] = _start_sub()
                kills += 1
                kill_times.append(now)
                next_kill = now + args.kill_every
        if args.kill_every <= 0:  # no kills: the same processes all along, so their CPU is comparable
            cpu_pct = 100.0 * (sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0) / (time.monotonic() - t_cpu0)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        stop.set()
        pub.join(timeout=5.0 if not hung else 0.5)
        if pub.is_alive():
            pub.kill()
            pub.join()
        for s in subs:
            s.send_signal(signal.SIGINT)
        latencies = []
        for s in subs:
            try:
                out, _ = s.communicate(timeout=5.0)
                latencies += [line for line in out.splitlines() if line.startswith('LATENCY')]
            except subprocess.TimeoutExpired:
                s.kill()
                s.wait()
        st = dict(stats)
        manager.shutdown()
    transports = os.environ.get('FASTDDS_BUILTIN_TRANSPORTS', 'DEFAULT')
    if os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE'):
        transports += '+xml:' + os.path.basename(os.environ['FASTDDS_DEFAULT_PROFILES_FILE'])
    transports += f" discovery={os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', 'default')}"
    if st:
        print(f'transports={transports} rate={args.rate:g}Hz subs={args.subs} hog={args.hog} kills={kills} '
              f'publishes={st["n"]} publish_ms p50={st["p50_ms"]:.3f} p99={st["p99_ms"]:.3f} '
              f'max={st["max_ms"]:.1f} over10ms={st["over_10ms"]} max_gap_ms={st["max_gap_ms"]:.1f} '
              f'stalls>50ms={stalls_50ms} longest_stall_s={stall_max:.2f} hung={hung}')
    else:
        print(f'transports={transports} kills={kills} hung={hung} longest_stall_s={stall_max:.2f} '
              '(publisher killed: no per-publish statistics)')
    if args.kill_every <= 0:
        print(f'cpu (publisher + {args.subs} subscribers) {cpu_pct:.1f} % of one core')
        for line in latencies:
            print('  ' + line)
    if st and st['slow'] and args.verbose:
        t_first = kill_times[0] if kill_times else 0.0
        for t, ms in st['slow']:
            before = [k for k in kill_times if k <= t]
            since = f'{t - before[-1]:.3f} s after kill {len(before)}' if before else 'before the first kill'
            print(f'  slow publish {ms} ms at t={t - t_first:+.3f} s ({since})')
    if dump:
        print(dump)
    return 1 if hung else 0


if __name__ == '__main__':
    sys.exit(main())
