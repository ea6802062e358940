"""Exceptions users can act on: each message says what is wrong and how to fix it."""


class DiffDenoiseError(Exception):
    """Base class of every error DiffDenoise reports to users (the CLI prints it as one line)."""


class InputError(DiffDenoiseError, ValueError):
    """The input image, file or option cannot be used as given."""


class BundleError(DiffDenoiseError):
    """A model bundle is missing, damaged, unsafe or incompatible."""


class Cancelled(DiffDenoiseError):
    """The user cancelled a run; a checkpoint, if configured, was written first."""
