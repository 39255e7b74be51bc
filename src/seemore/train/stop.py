"""Stopping a run cleanly when asked to: SIGTERM (what a preemptible machine, SLURM's time
limit or `kill` sends) or SIGINT (Ctrl-C).

The first signal lets the step in progress finish; the loop then writes a checkpoint and
ends with Stopped, whose message names the command that goes on from it. A second signal
stops at once (KeyboardInterrupt), losing only the step in progress.
"""

from __future__ import annotations

import signal
import sys
import threading

import torch
import torch.distributed as dist

from seemore.train.distributed import World

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """A run stopped by a signal after writing its checkpoint; the message says how to go
    on. exit_code follows the shell's 128 + signal number."""

    def __init__(self, message: str, number: int):
        super().__init__(message)
        self.exit_code = 128 + number


class GracefulStop:
    """Within ``with GracefulStop() as stop``, stop.number is the first signal received (0:
    none yet). Signal handlers can only be set in the main thread; elsewhere this does
    nothing."""

    def __init__(self) -> None:
        self.number = 0
        self.previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        if self.number:
            raise KeyboardInterrupt(f"a second {name}")
        self.number = number
        print(f"\n{name}: stopping after this step, with a checkpoint (send it again to stop "
              "at once)", file=sys.stderr, flush=True)

    def requested(self, world: World, device: torch.device) -> int:
        """The signal any process of the run received (0: none); every process must agree,
        since writing a checkpoint is a collective step."""
        if world.size == 1:
            return self.number
        flag = torch.tensor([self.number], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
