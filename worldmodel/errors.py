"""Errors a user can act on: each message is one line naming what is wrong and how to fix it."""


class WorldModelError(Exception):
    """Base of the errors the command line reports as one line with exit status 2."""


class DataError(WorldModelError, ValueError):
    """A data file or array that is missing, corrupt, mis-shaped or non-finite."""


class CheckpointError(WorldModelError, ValueError):
    """A checkpoint that is missing, corrupt, or does not match what loads it."""


class ConfigError(WorldModelError, ValueError):
    """A configuration value out of range, or a run folder that cannot be used."""


class TrainingDivergedError(WorldModelError, RuntimeError):
    """Training produced non-finite losses or gradients too many times in a row."""
