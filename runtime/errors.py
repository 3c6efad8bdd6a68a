"""The errors a user can meet; each carries a one-line message meant for an operator."""


class FrameQCError(Exception):
    """Base class: anything frameqc reports as a one-line message instead of a traceback."""


class FrameError(FrameQCError):
    """A frame that cannot be read or prepared; the other frames of a run still go on."""


class ModelError(FrameQCError):
    """A model that cannot be loaded or is not a frameqc model."""


class UsageError(FrameQCError):
    """A request that does not make sense (missing model, bad option value)."""
