"""One thin rclpy node per module; each module has `main()` (its console script)."""
import os
import signal
import sys

NODE_EXECUTABLES = ('sim_robot', 'state_estimator', 'world_model', 'mpc_controller', 'policy', 'safety_filter')


def _end_quietly(signum, _frame):
    # SIGINT/SIGTERM while the node is still importing (onnxruntime, mujoco: seconds on a small
    # machine): end as the signal would, without a KeyboardInterrupt traceback. rclpy.init replaces
    # this handler once the node starts.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


if os.path.basename(sys.argv[0] if sys.argv else '') in NODE_EXECUTABLES:
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, _end_quietly)
