"""sim_robot: a MuJoCo arm that looks to the rest of the stack like a ros2_control robot.

Physics runs in its own thread, one `SimArm.step()` per physics period, paced against absolute
deadlines (next += period: no cumulative drift; if it falls far behind it resyncs and warns).
Every physics_rate/publish_rate steps it publishes /joint_states (effort = the drives' total
torque, gravity compensation included, as a torque-controlled arm reports it) and the
ground-truth /mbrl/sim/ee_position, plus /clock when `publish_clock` (then every stamp is sim
time, for nodes running with use_sim_time).

Commands on /forward_effort_controller/commands (std_msgs/Float64MultiArray, one value per
joint, the forward_command_controller convention) are validated by core.commands.check_command;
a bad one is counted and dropped, never applied. The latest good command is held until
`command_timeout_s` passes without a new one; then the watchdog commands zero (effort: gravity
compensation only; velocity: stand still).
"""
from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mbrl_ros.core.commands import CommandWatchdog, check_command
from mbrl_ros.core.sim import INTERFACES, Pacer, SimArm, SimError
from mbrl_ros.ros.control_loop import control_priority_param, prioritise_process, report_priority
from mbrl_ros.ros.conversions import SENSOR, sec_to_stamp
from mbrl_ros.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.ros.hang_watchdog import hang_timeout_param, start_hang_watchdog
from mbrl_ros.ros.node_main import StartupError, main_for
from mbrl_ros.ros.parameters import Param, ParameterHandler
from mbrl_ros.ros.robot_param import load_robot, robot_params, robot_source
from mbrl_ros.topics import COMMAND_TOPIC, EE_POSITION_TOPIC, JOINT_STATES_TOPIC

SPECS = [
    *robot_params(),  # robot_description, base_link, tip_link, ee_offset, ee_site, package_paths
    Param('robot', 'arm7', 'built-in robot (arm7, arm3) or MJCF or URDF path', dynamic=False),
    Param('physics_rate_hz', 500.0, 'physics steps per second (MuJoCo timestep = 1/rate)',
          range=(10.0, 5000.0), dynamic=False),
    Param('publish_rate_hz', 100.0,
          '/joint_states rate; published every round(physics_rate/publish_rate) physics steps',
          range=(1.0, 5000.0)),
    Param('command_interface', 'effort',
          'effort: Nm on top of gravity compensation; velocity: joint velocity targets (rad/s)',
          choices=INTERFACES, dynamic=False),
    Param('gravity_compensation', True, 'the drives add g(q) to every command', dynamic=False),
    Param('command_timeout_s', 0.1, 'no command for this long -> zero command (watchdog)',
          range=(0.001, 10.0)),
    Param('state_noise_std', 0.0, 'Gaussian noise std on published positions and velocities',
          range=(0.0, 1.0)),
    Param('seed', 0, 'seed of the state-noise generator', range=(0, 2**31 - 1), dynamic=False),
    Param('publish_clock', False, 'publish /clock with sim time and stamp everything with it',
          dynamic=False),
    Param('initial_positions', None, 'start (and ~/reset) pose, one value per joint; empty: the '
          "robot's home keyframe", dynamic=False, type_hint='double_array'),
    hang_timeout_param(),
    control_priority_param('every thread of the process (physics loop, DDS)'),
]

# Best effort matches reliable and best-effort publishers alike; depth 1: the latest command wins.
COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
RESYNC_AFTER_S = 0.1  # further behind than this: skip ahead instead of racing to catch up


class SimRobotNode(Node):
    def __init__(self):
        super().__init__('sim_robot')
        self.params = ParameterHandler(self, SPECS, on_validate=self._validate,
                                       on_applied=self._on_params)
        p = self.params
        try:
            self.robot = load_robot(p)
            self.sim = SimArm(self.robot, physics_rate_hz=p['physics_rate_hz'],
                              command_interface=p['command_interface'],
                              gravity_compensation=p['gravity_compensation'],
                              state_noise_std=p['state_noise_std'], seed=p['seed'])
        except Exception as exc:  # unknown robot, bad MJCF/URDF: one clear line, exit 78 (EX_CONFIG)
            raise StartupError(f"cannot load robot {robot_source(p)}: {exc}") from exc
        self.start_q = self._start_pose(p['initial_positions'])
        self.sim.reset(self.start_q)
        if p['publish_rate_hz'] > p['physics_rate_hz']:
            raise StartupError(f"publish_rate_hz ({p['publish_rate_hz']}) must not exceed "
                               f"physics_rate_hz ({p['physics_rate_hz']})")
        self.interface = p['command_interface']
        self.period = 1.0 / p['physics_rate_hz']
        self.watchdog = CommandWatchdog(self.robot.dof, p['command_timeout_s'])

        # Shared between the executor and the physics thread under _lock.
        self._lock = threading.Lock()
        self._reset_request = None
        self.counts = dict(received=0, rejected=0, sim_errors=0, thread_errors=0, published=0)
        self._last_rejection = ''
        self._last_error = ''
        self._window = (time.monotonic(), 0.0, 0, 0)  # wall time, sim time, published, rejected

        self.pub_js = self.create_publisher(JointState, JOINT_STATES_TOPIC, SENSOR)
        self.pub_ee = self.create_publisher(PointStamped, EE_POSITION_TOPIC, SENSOR)
        self.pub_clock = self.create_publisher(Clock, '/clock', 10) if p['publish_clock'] else None
        self.create_subscription(Float64MultiArray, COMMAND_TOPIC,
                                 self._on_command, COMMAND_QOS)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.diagnostics = Diagnostics(self, self._status, period_s=1.0)

        if self.get_parameter('use_sim_time').value and self.pub_clock is None:
            self.get_logger().warning(
                'use_sim_time is true but publish_clock is false: nothing publishes /clock, so this '
                "node's timers (diagnostics) stall; set publish_clock:=true")
        self._pacer = Pacer(self.period, RESYNC_AFTER_S)
        # Stamps carry the time the state belongs to (its physics deadline), not the moment it was
        # published: when the thread catches up after a stall, consecutive stamps still advance by
        # one period, so a downstream velocity estimate doesn't spike.
        self._mono_to_wall = time.time() - time.monotonic()
        self._running = True
        self._thread = threading.Thread(target=self._physics_loop, name='physics', daemon=True)
        self._thread.start()
        # The arm's side of the loop (a real ros2_control driver runs real-time too): /joint_states
        # and the command watchdog must not wait behind other processes.
        self.scheduling = prioritise_process(p['control_thread_priority'])
        report_priority(self.scheduling, self.get_logger(), 'threads')
        self.hang_watchdog = start_hang_watchdog(self, p['hang_timeout_s'])  # (self.watchdog: the command one)
        self.get_logger().info(
            f"simulating {self.robot.name} ({self.robot.dof} joints, {self.interface} interface) at "
            f"{p['physics_rate_hz']:g} Hz, publishing /joint_states at {p['publish_rate_hz']:g} Hz"
            + (', sim time on /clock' if self.pub_clock else ''))
        # Once, what the description gave and what the sim made of it (dropped meshes, named
        # elements, the file's own timestep/integrator versus the one that runs).
        own = (f' (the file says {self.robot.timestep:g} s {self.robot.integrator.removeprefix("mjINT_").lower()})'
               if self.robot.format == 'mjcf' else '')  # a URDF has no physics options
        self.get_logger().info(f'{self.robot.describe()}; physics: {1.0 / self.sim.dt:g} Hz implicitfast{own}')

    # ---- configuration ----------------------------------------------------------------------
    def _start_pose(self, values) -> np.ndarray:
        if not values:
            return self.robot.home_q.copy()
        q = np.asarray(values, dtype=np.float64)
        if q.shape != (self.robot.dof,) or not np.all(np.isfinite(q)):
            raise StartupError(f'initial_positions needs {self.robot.dof} finite values '
                               f'({self.robot.joint_names}), got {list(values)}')
        if not self.robot.within_limits(q):
            raise StartupError(f'initial_positions {q.tolist()} outside the joint limits '
                               f'[{self.robot.q_min.tolist()}, {self.robot.q_max.tolist()}]')
        return q

    def _validate(self, changes: dict):
        rate = changes.get('publish_rate_hz')
        if rate is not None and rate > self.params['physics_rate_hz']:
            return f"publish_rate_hz must not exceed physics_rate_hz ({self.params['physics_rate_hz']})"
        return None

    def _on_params(self, changes: dict) -> None:
        if 'command_timeout_s' in changes:
            self.watchdog.timeout_s = float(changes['command_timeout_s'])
        if 'state_noise_std' in changes:
            self.sim.state_noise_std = float(changes['state_noise_std'])

    def _decimation(self) -> int:
        return max(1, int(round(self.params['physics_rate_hz'] / self.params['publish_rate_hz'])))

    # ---- callbacks (executor thread) ------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        try:
            reason = check_command(msg.data, self.robot, self.interface)
        except Exception as exc:  # never let a message take the node down
            reason = f'cannot read command: {exc!r}'
        with self._lock:
            self.counts['received'] += 1
            if reason is None:
                self.watchdog.accept(msg.data, time.monotonic())
                return
            self.counts['rejected'] += 1
            self._last_rejection = reason
        self.get_logger().warning(f'rejected command: {reason}', throttle_duration_sec=1.0)

    def _on_reset(self, request, response):
        done = threading.Event()
        with self._lock:
            self._reset_request = done
        if not self._thread.is_alive():
            response.success, response.message = False, 'physics thread is not running'
        elif done.wait(timeout=2.0):
            response.success = True
            response.message = f'reset to {np.round(self.start_q, 4).tolist()}'
            self.get_logger().info('reset to the start pose')
        else:
            response.success, response.message = False, 'physics thread did not answer in 2 s'
        return response

    # ---- physics thread ---------------------------------------------------------------------
    def _physics_loop(self) -> None:
        step = 0
        pacer = self._pacer
        while self._running:
            try:
                self._tick()
                step += 1
                if step % self._decimation() == 0:
                    self._publish()
            except SimError as exc:
                self.counts['sim_errors'] += 1
                self._last_error = str(exc)
                self.get_logger().error(f'{exc}; resetting to the start pose')
                self.sim.reset(self.start_q)
            except Exception as exc:  # keep simulating; report it
                if not self.context.ok():
                    break  # shutting down (SIGINT/SIGTERM closed the context under us): not an error
                self.counts['thread_errors'] += 1
                self._last_error = repr(exc)
                self.get_logger().error(f'physics loop error: {exc!r}', throttle_duration_sec=1.0)
            behind = pacer.wait()
            if behind is not None:
                self.get_logger().warning(
                    f'physics fell {behind * 1e3:.0f} ms behind real time; resynchronising',
                    throttle_duration_sec=1.0)

    def _tick(self) -> None:
        with self._lock:
            reset, self._reset_request = self._reset_request, None
        if reset is not None:
            self.watchdog.clear()  # a command from before the reset must not push the arm on
            self.sim.reset(self.start_q)
            reset.set()
        cmd, tripped = self.watchdog.current(time.monotonic())
        if tripped:
            self.get_logger().warning(
                f'no command for {self.watchdog.timeout_s:g} s: watchdog commands zero {self.interface}')
        self.sim.set_command(cmd)
        self.sim.step(1)

    def _publish(self) -> None:
        q, qd, effort = self.sim.observe()
        stamp = sec_to_stamp(self.sim.time if self.pub_clock is not None
                             else self._pacer.deadline + self._mono_to_wall)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        js = JointState(name=self.robot.joint_names, position=q.tolist(), velocity=qd.tolist(),
                        effort=effort.tolist())
        js.header.stamp = stamp
        self.pub_js.publish(js)
        ee = PointStamped()
        ee.header.stamp = stamp
        ee.header.frame_id = 'world'
        ee.point.x, ee.point.y, ee.point.z = (float(v) for v in self.sim.ee_position())
        self.pub_ee.publish(ee)
        self.counts['published'] += 1

    # ---- health and shutdown -------------------------------------------------------------------
    def _status(self):
        now = time.monotonic()
        t0, sim0, pub0, rej0 = self._window
        sim_t, published = self.sim.time, self.counts['published']
        self._window = (now, sim_t, published, self.counts['rejected'])
        span = max(now - t0, 1e-9)
        rtf = (sim_t - sim0) / span if sim_t >= sim0 else float('nan')  # nan across a reset
        with self._lock:
            counts = dict(self.counts)
            rejection = self._last_rejection
        age = self.watchdog.age(now)
        values = {
            'robot': self.robot.name,
            'command_interface': self.interface,
            'threads': self.scheduling,
            'real_time_factor': rtf,
            'publish_rate_hz': (published - pub0) / span,
            'sim_time_s': sim_t,
            'commands_received': counts['received'],
            'rejected_commands': counts['rejected'],
            'watchdog_trips': self.watchdog.trips,
            'watchdog_active': self.watchdog.tripped,
            'command_age_s': 'never' if age is None else age,
            'resyncs': self._pacer.resyncs,
            'sim_errors': counts['sim_errors'],
            'thread_errors': counts['thread_errors'],
            'last_rejection': rejection or 'none',
            'last_error': self._last_error or 'none',
        }
        if not self._thread.is_alive():
            return ERROR, 'physics thread stopped', values
        if counts['thread_errors'] or counts['sim_errors']:
            return WARN, f'physics errors: {self._last_error}', values
        if rtf == rtf and rtf < 0.9:
            return WARN, f'running slower than real time (factor {rtf:.2f})', values
        if counts['rejected'] > rej0:
            return WARN, f"{counts['rejected']} commands rejected; last: {rejection}", values
        return OK, 'holding (watchdog: no fresh command)' if self.watchdog.tripped else 'ok', values

    def close(self) -> None:
        if self.hang_watchdog is not None:  # shutting down: a slow exit is not a hang
            self.hang_watchdog.close()
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


def main():
    main_for(SimRobotNode)


if __name__ == '__main__':
    main()
