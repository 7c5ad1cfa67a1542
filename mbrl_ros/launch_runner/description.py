"""What a parsed launch file comes down to: a plain list of processes to run."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path


class LaunchError(Exception):
    """A launch file cannot be run; the message names the file, the entry and what is wrong."""


@dataclass
class ProcessDescription:
    name: str                       # unique label: output prefix, and what the test fixture calls it
    cmd: list[str]
    env: dict[str, str | None] = field(default_factory=dict)  # on top of the inherited env; None unsets
    output: str = 'screen'          # 'screen' | 'both': printed; 'log': stdout to a log file only
    kind: str = 'node'              # 'node' | 'process' (an `executable` entry)
    respawn: bool = False
    respawn_delay: float = 0.0
    respawn_max_retries: int = -1   # -1: no limit; past it, an exit counts as the process dying
    cwd: str | None = None
    source: str = ''                # 'file:line' of the entry, for messages
    params_files: list[str] = field(default_factory=list)
    namespace: str = '/'


@dataclass
class LaunchArgument:
    name: str
    default: str | None             # as written (unevaluated); None: required
    description: str = ''
    choices: list[str] | None = None
    file: str = ''


@dataclass
class LaunchPlan:
    file: Path
    processes: list[ProcessDescription]
    arguments: dict[str, str]       # value of every argument declared anywhere in the tree
    workdir: Path | None = None     # temporary files (inline parameters); removed by cleanup()

    def cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
