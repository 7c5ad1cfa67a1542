"""One thin rclpy node per module; each module has `main()` (its console script)."""
import os
import signal
import sys


def _end_quietly(signum, _frame):
    # SIGINT/SIGTERM while the node is still importing (onnxruntime, mujoco: seconds on a small
    # machine): end as the signal would, without a KeyboardInterrupt traceback. node_main.run_node
    # installs the running node's handlers before rclpy.init.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# A node's console script is named after its module here (setup.py), so this is a node starting.
_exe = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ''
if _exe and os.path.isfile(os.path.join(os.path.dirname(__file__), _exe + '.py')) and not _exe.startswith('_'):
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, _end_quietly)
