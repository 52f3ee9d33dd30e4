"""One exception tree for tilex.

Every error a user can cause derives from :class:`TilexError` and from the
matching builtin, so ``except ValueError`` keeps working for callers who do not
know tilex.  The command line turns a :class:`UsageError` subclass into one line
on stderr and exit status 2; anything else is an internal error (exit 1).
"""

from __future__ import annotations

__all__ = [
    "CorruptFileError",
    "DeviceError",
    "InputRangeError",
    "ManifestError",
    "MissingFileError",
    "NonFiniteError",
    "OutputBusyError",
    "OutputExistsError",
    "OutputError",
    "PlanError",
    "RegistrationError",
    "ResumeMismatchError",
    "ScanError",
    "TileError",
    "TilexError",
    "UnsupportedFormatError",
    "UsageError",
    "WeightsError",
    "error_line",
]


class TilexError(Exception):
    """Base of every error raised by tilex on purpose."""


class UsageError(TilexError):
    """An error caused by the user's input or options (CLI exit status 2)."""


class ScanError(UsageError, ValueError):
    """A scan cannot be opened or read as given."""

    def __init__(self, message: str, *, path: object | None = None) -> None:
        super().__init__(message)
        self.path = path


class ManifestError(ScanError):
    """``scan.json`` is not valid JSON or does not follow the manifest format."""


class MissingFileError(ScanError, FileNotFoundError):
    """A file named by the scan does not exist or cannot be opened."""


class CorruptFileError(ScanError):
    """A file exists but is truncated, corrupt or not the format it claims."""


class UnsupportedFormatError(ScanError):
    """A file's format, dtype or channel count is not one tilex reads."""


class RegistrationError(ScanError):
    """Inputs of one scan do not share the same height and width."""


class NonFiniteError(ScanError):
    """A float input holds NaN or infinity (tilex refuses them)."""


class InputRangeError(ScanError):
    """A float input's values cannot be reflectance in its input range (e.g. 0..65535 as 0..1)."""


class WeightsError(UsageError, ValueError):
    """Encoder weights are missing, malformed or do not match the model."""


class OutputError(UsageError, ValueError):
    """An output folder cannot be written or read as a tilex output."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and ``overwrite`` was not asked for."""


class OutputBusyError(OutputError):
    """Another process is writing the output (see :mod:`tilex.lock`)."""

    def __init__(
        self, message: str, *, path: object | None = None, holder: dict | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder or {}  # pid, host and start time of the process writing it


class ResumeMismatchError(OutputError):
    """``--resume`` was asked with inputs, parameters or weights that differ."""


class PlanError(UsageError, ValueError):
    """An option of a run is invalid, alone or with another (see :mod:`tilex.plan`)."""


class DeviceError(UsageError, RuntimeError):
    """The requested device is not available (no CUDA, no CuPy, bad index)."""


class TileError(TilexError, RuntimeError):
    """A tile failed while running; names the tile and its region."""

    def __init__(self, message: str, *, tile: object | None = None) -> None:
        super().__init__(message)
        self.tile = tile


def error_line(err: BaseException) -> str:
    """The one line the command line prints for ``err`` (after ``tilex: error: ``).

    A tilex error's first line; an operating system error's file and reason;
    anything else (a bug, out of memory) with the name of its type, as the
    last line of its traceback would read.

    Examples
    --------
    >>> error_line(OSError(28, "No space left on device", "/out/panel/score.ome.zarr"))
    '/out/panel/score.ome.zarr: No space left on device'
    >>> error_line(RuntimeError("CUDA out of memory"))
    'RuntimeError: CUDA out of memory'
    """
    if isinstance(err, OSError) and not isinstance(err, TilexError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    text = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, TilexError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
