"""Stopping cleanly: SIGTERM (a preempted TPU VM, Kubernetes) and SIGINT (Ctrl-C) ask the loop
to finish its step, save a checkpoint and exit 0; non-finite numbers stop it with an error."""

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopRequest:
    """Catches SIGTERM and SIGINT while training; `due(step)` says when to stop.

    On several hosts every process must stop (and save) at the same step: JAX's preemption
    sync point decides where the distributed runtime has a preemption service (Cloud TPU);
    otherwise the hosts share their signal flags at each `agree` step (the log steps).
    """

    def __init__(self):
        self.reason: str | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only: nothing to catch
        for number in (signal.SIGTERM, signal.SIGINT):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _handle(self, number, frame) -> None:
        del frame
        if self.reason is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.reason = signal.Signals(number).name

    def due(self, step: int, agree: bool) -> bool:
        if jax.process_count() == 1:
            return self.reason is not None
        try:
            if multihost_utils.reached_preemption_sync_point(step):
                self.reason = self.reason or "preemption"
                return True
        except RuntimeError:  # no preemption service (e.g. a multi-process CPU run)
            pass
        if not agree:
            return False
        flags = multihost_utils.process_allgather(np.int32(self.reason is not None))
        if np.any(flags):
            self.reason = self.reason or "a signal on another host"
            return True
        return False
