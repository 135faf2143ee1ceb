"""Errors caused by bad input (files, options, data).

The CLI prints these as one clear line without a traceback; everything else is a bug and keeps its traceback.
Every message names the input (a path, an option, a key) and says what was expected.
"""


class LapaError(Exception):
    """Base class of all user-facing errors."""


class DatasetError(LapaError):
    """An episode dataset or video folder is missing, malformed or incompatible."""


class CheckpointError(LapaError):
    """A checkpoint directory is missing, corrupt or does not match what was asked for."""


class ConfigError(LapaError):
    """A configuration (YAML, JSON, named preset or CLI option) has an unknown key or a bad value."""


class InputError(LapaError):
    """A runtime input (an image, an instruction) does not have the expected shape, type or content."""
