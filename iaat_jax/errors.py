"""The errors a user can meet, in one small module that imports nothing: each message is one
line that names the problem and the fix (main.py turns them into an exit status)."""


class ConfigError(ValueError):
    """A bad config, workdir or dataset; the message names the problem and the fix."""


class CheckpointError(Exception):
    """A checkpoint that could not be written or read; the message says which and what to do."""


class NonFiniteError(Exception):
    """A loss or radius that is NaN or infinite; the last good checkpoint is left as it was."""


class TrainingStopped(Exception):
    """Raised after the checkpoint of a requested stop is on disk."""

    def __init__(self, step: int, reason: str, workdir: str):
        super().__init__(
            f"stopped by {reason} at step {step}: checkpoint saved in {workdir}; rerun the same "
            f"command to resume from step {step}"
        )
        self.step = step
