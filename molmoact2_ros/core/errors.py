"""Exception types shared by every layer.

Each carries a message meant to be printed as one line to a lab engineer: what is wrong, where, and
how to fix it. The CLI prints ``str(err)`` for these and exits non-zero instead of a traceback.
"""


class MolmoAct2RosError(Exception):
    """Base for every error this package raises on purpose."""


class ConfigError(MolmoAct2RosError):
    """An embodiment (or other) config file is missing, malformed or out of range."""


class CheckpointError(MolmoAct2RosError):
    """A checkpoint directory is missing, incomplete, or does not match the embodiment."""


class ObservationError(MolmoAct2RosError):
    """An observation cannot be turned into a model input (missing camera, wrong state size, ...)."""


class ChunkRejected(MolmoAct2RosError):
    """An action chunk failed validation in the driver; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class HardwareError(MolmoAct2RosError):
    """A hardware backend failed to connect, read or write."""
