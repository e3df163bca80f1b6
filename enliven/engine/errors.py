"""Errors the engine raises at its boundaries.

Each carries a short machine-readable ``code`` (used by the server as the JSON error code)
and a message that says what was expected and what came. The CLI and the server turn
these into one clear line or a 4xx body, never a traceback.
"""
from __future__ import annotations


class EnlivenError(Exception):
    """Base of every error enliven reports to a user."""

    code: str = "error"


class BadImageError(EnlivenError):
    """The file is not a readable image: corrupt, truncated, empty or not an image at all."""

    code = "bad_image"


class UnsupportedFormatError(EnlivenError):
    """The image is in a format outside the allowlist (JPEG, PNG, WebP)."""

    code = "unsupported_format"


class ImageTooLargeError(EnlivenError):
    """The image has more pixels (or bytes) than allowed: a decompression-bomb guard."""

    code = "image_too_large"


class NoFaceError(EnlivenError):
    """No face was found where one is needed."""

    code = "no_face"


class FaceTooSmallError(EnlivenError):
    """A face was found but is too small to animate well."""

    code = "face_too_small"


class BadVideoError(EnlivenError):
    """A driving video cannot be opened or decoded."""

    code = "bad_video"


class BadOutputError(EnlivenError):
    """An output cannot be written as asked: it is one of the inputs, its folder is missing or
    not writable, or its kind (by extension) is not one enliven writes."""

    code = "bad_output"


class ModelFileError(EnlivenError):
    """A model file is missing, corrupt or of the wrong kind."""

    code = "model_file"


class ShapeError(EnlivenError, ValueError):
    """An array has the wrong shape or dtype for the function it was given to."""

    code = "shape"


def _kinds() -> dict[str, type[EnlivenError]]:
    found: dict[str, type[EnlivenError]] = {}
    todo: list[type[EnlivenError]] = [EnlivenError]
    while todo:
        kind = todo.pop()
        found.setdefault(kind.code, kind)
        todo.extend(kind.__subclasses__())
    return found


def error_from_code(code: str, message: str) -> EnlivenError:
    """The error of kind ``code`` (as carried across a process boundary), EnlivenError if unknown."""
    return _kinds().get(code, EnlivenError)(message)
