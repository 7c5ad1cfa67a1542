"""What a node must still know after its launcher respawns it: world_model's live-swapped bundle.

A respawned process starts from its launch parameters. For world_model that meant going back to the
configured `model_dir` and announcing it, so every follower left the bundle the user had swapped in
live. The memory is one small YAML file per (launch, node). The launch is named by a key the launch
files give the node (`$(anon launch)`: unique per launch, the same for every respawn within it, in
both `mbrl-ros launch` and `ros2 launch`) and by the launcher process, the node's parent. So a
respawn finds the file its predecessor wrote; a new launch, or the same node started by hand (no
key), does not. Files of launchers that are gone are removed at the next start.

Where: $ROS_HOME/mbrl_ros/respawn (ROS_HOME defaults to ~/.ros, as for ROS logs).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import yaml


def _start_ticks(pid: int) -> Optional[str]:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22): a pid plus
    its start time names one process even after pids wrap."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its end.
    fields = stat[stat.rfind(')') + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _safe(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_-]', '_', text)


def default_directory() -> Path:
    home = os.environ.get('ROS_HOME') or os.path.join(os.path.expanduser('~'), '.ros')
    return Path(home) / 'mbrl_ros' / 'respawn'


class RespawnMemory:
    """remember(key, value) / recall(key) for one node within one launch (`launch_key`)."""

    def __init__(self, node_name: str, launch_key: str, directory: Optional[Path] = None,
                 parent_pid: Optional[int] = None):
        self.directory = Path(directory) if directory is not None else default_directory()
        self.parent_pid = os.getppid() if parent_pid is None else parent_pid
        ticks = _start_ticks(self.parent_pid)
        node = _safe(node_name.strip('/')) or 'node'
        # No key (started by hand) or no parent start time (not Linux): no memory, rather than one
        # shared by unrelated starts.
        self.path = None if not launch_key or ticks is None else \
            self.directory / f'{node}.{_safe(launch_key)}.{self.parent_pid}.{ticks}.yaml'

    def recall(self, key: str) -> Optional[str]:
        if self.path is None:
            return None
        try:
            data = yaml.safe_load(self.path.read_text())
        except (OSError, yaml.YAMLError):
            return None
        value = data.get(key) if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    def remember(self, key: str, value: str) -> None:
        """Atomic (write + rename): a process killed mid-write leaves the previous file."""
        if self.path is None:
            return
        data = {}
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            pass
        if not isinstance(data, dict):
            data = {}
        data[key] = value
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f'.{os.getpid()}.tmp')
        tmp.write_text(yaml.safe_dump(data))
        os.replace(tmp, self.path)

    def prune(self) -> int:
        """Remove the files of launchers that no longer run; returns how many."""
        removed = 0
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return 0
        for f in entries:
            m = re.fullmatch(r'.+\.(\d+)\.(\d+)\.yaml(?:\.\d+\.tmp)?', f.name)
            if m and _start_ticks(int(m[1])) != m[2]:
                try:
                    f.unlink()
                    removed += 1
                except OSError:
                    pass
        return removed
