"""Errors and warnings raised while reading streams."""


class StreamSpecError(ValueError):
    """A stream description is malformed; the message names the key and the valid values."""


class MissingExtraError(StreamSpecError, ImportError):
    """A layout needs an optional dependency; the message names the extra to install."""


class StreamDataError(ValueError):
    """The data on disk does not fit the stream: a missing folder, an empty split, one class."""


class ManifestPathError(StreamDataError):
    """A manifest names a file outside the data root."""


class BadImageError(StreamDataError):
    """An image file cannot be read and ``on_bad_file`` is ``error``."""


class SkippedFilesWarning(UserWarning):
    """Unreadable image files were skipped."""


class LeakageWarning(UserWarning):
    """The same file appears in a training split and a test split."""
