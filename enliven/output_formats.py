"""What ``enliven animate`` writes, chosen by the output path, and the checks made on it before any work.

    out.mp4, out.mov   H.264 + AAC (the driving video's audio kept)
    out.webm           VP9 + Opus (audio kept)
    out.gif            for sharing: one palette per clip, at most GIF_MAX_FPS and GIF_MAX_SIDE_PX,
                       no audio, the "AI-generated" label in each frame's corner
    frames/            a folder of PNG frames (a trailing slash names a folder)

Every format carries the disclosure ``video_io.DISCLOSURE_COMMENT`` where it has a place for it
(container tag, GIF comment extension, PNG text chunk), and every writer publishes its output
only when it is complete (a temporary file or folder beside it, then a rename).

``resolve_output`` refuses, with a BadOutputError, an output that is one of the inputs (the same
file by path or by inode: hard links and symlinks too), whose folder does not exist or cannot be
written, or whose kind is none of these. This module imports no media library, so the CLI can
check its arguments, and build its help, at once; ``open_writer`` imports the writers.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from .engine.errors import BadOutputError
from .engine.image_writers import GifWriter, PngFramesWriter
from .engine.video_io import VideoWriter

if TYPE_CHECKING:
    import numpy as np

GIF_MAX_FPS = 15.0  # a GIF's frame rate at most: every k-th frame is kept (30 fps -> 15, 25 fps -> 12.5)
GIF_MAX_SIDE_PX = 480  # a GIF's longer side at most, pixels; larger frames are scaled down, aspect kept
PNG_FRAME_PATTERN = re.compile(r"frame_\d{6}\.png")  # the names of PngFramesWriter's files
FOLDER = "/"  # what ends an output path that names a folder of PNG frames


@dataclass(frozen=True)
class OutputFormat:
    """One kind of output, and how users ask for it."""

    kind: str  # "mp4", "mov", "webm" (video_io's containers), "gif" or "png"
    suffix: str  # what the output path ends with: ".mp4"; FOLDER for PNG frames
    name: str  # as users read it: "MP4", "PNG frames"
    audio: bool  # whether the driving video's audio is kept
    details: str  # a few words for --help and the README


FORMATS: tuple[OutputFormat, ...] = (
    OutputFormat("mp4", ".mp4", "MP4", True, "H.264, AAC audio"),
    OutputFormat("mov", ".mov", "MOV", True, "H.264, AAC audio"),
    OutputFormat("webm", ".webm", "WebM", True, "VP9, Opus audio"),
    OutputFormat("gif", ".gif", "GIF", False,
                 f"for sharing: at most {GIF_MAX_FPS:g} fps and {GIF_MAX_SIDE_PX} px, one palette per clip, "
                 "an AI-generated label in the corner, no audio"),
    OutputFormat("png", FOLDER, "PNG frames", False, "a folder of frame_000000.png, ..., no audio"),
)
_BY_SUFFIX = {f.suffix: f for f in FORMATS}
_CHOICES = ", ".join(f.suffix for f in FORMATS if f.suffix != FOLDER) + f" or a folder ending in {FOLDER}"


def formats_help() -> str:
    """One line naming each format, for ``--help``."""
    parts = []
    for f in FORMATS:
        same = [g.suffix for g in FORMATS if g.details == f.details]
        if same[0] == f.suffix:
            label = "DIR/" if f.suffix == FOLDER else ", ".join(same)
            parts.append(f"{label} ({f.details})")
    return "; ".join(parts)


@dataclass(frozen=True)
class OutputTarget:
    """An output path that passed resolve_output, and what it will hold."""

    path: Path  # the file, or the folder of PNG frames
    format: OutputFormat

    def __str__(self) -> str:
        return f"{self.path}{os.sep}" if self.format.suffix == FOLDER else str(self.path)


class FrameWriter(Protocol):
    """What open_writer returns: VideoWriter, GifWriter or PngFramesWriter."""

    path: Path
    rate: Fraction  # frames per second of what is written (a GIF's may be lower than given)
    encoded_size: tuple[int, int]  # (width, height) of what is written, pixels
    frames_written: int  # frames the output holds

    @property
    def has_audio(self) -> bool: ...

    def write(self, frame: np.ndarray) -> None: ...

    def close(self, *, keep: bool = True) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None: ...


Inputs = Mapping[str, "str | os.PathLike[str] | None"]  # what each input is ("photo") -> its path, or None


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be reached): not the same file
        return False


def _refuse_inputs(path: Path, inputs: Inputs, what: str) -> None:
    """BadOutputError if ``path`` is one of the inputs (same inode: the same name, a hard or symbolic link)."""
    for name, given in inputs.items():
        if given is not None and _same_file(path, given):
            raise BadOutputError(f"{what} {os.fspath(path)!r} is the {name} {os.fspath(given)!r}; "
                                 f"writing it would replace the {name}: choose another path")


def _check_folder(folder: Path, what: str) -> None:
    """BadOutputError unless ``folder`` exists and a file can be made in it."""
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise BadOutputError(f"expected {what} in an existing folder; {os.fspath(folder)!r} {state}")
    try:
        with tempfile.TemporaryFile(dir=folder):  # unnamed on Linux: nothing is left even if killed here
            pass
    except OSError as e:
        raise BadOutputError(f"expected {what} in a folder that can be written; "
                             f"cannot write in {os.fspath(folder)!r} ({e.strerror or e})") from e


def _format_of(text: str, path: Path) -> OutputFormat:
    if text.endswith((FOLDER, os.sep)):
        return _BY_SUFFIX[FOLDER]
    found = _BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        got = f"the extension {path.suffix!r}" if path.suffix else "no extension"
        hint = f" (it is a folder: add a trailing {FOLDER} to write PNG frames into it)" if path.is_dir() else ""
        raise BadOutputError(f"expected an output ending in {_CHOICES}; {text!r} has {got}{hint}")
    return found


def _check_frames_folder(path: Path, inputs: Inputs) -> None:
    """An existing folder may be replaced only if it holds nothing but frames of an earlier run."""
    if not path.exists():
        return
    if not path.is_dir():
        raise BadOutputError(f"expected a folder for PNG frames; {os.fspath(path)!r} is a file")
    for name, given in inputs.items():
        if given is not None and _same_file(Path(given).parent, path):
            raise BadOutputError(f"expected a folder for PNG frames that does not hold the {name}; "
                                 f"{os.fspath(path)!r} holds {os.fspath(given)!r}")
    others = sorted(e.name for e in path.iterdir()
                    if not (PNG_FRAME_PATTERN.fullmatch(e.name) and e.is_file() and not e.is_symlink()))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise BadOutputError(f"expected a new or empty folder for PNG frames (or one with only frames of an "
                             f"earlier run, which are replaced); {os.fspath(path)!r} holds {shown}")


def resolve_output(output: str | os.PathLike[str], inputs: Inputs) -> OutputTarget:
    """The format and checked path of an output, before any work is done.

    Args: output: the path as given; a trailing slash names a folder of PNG frames (a Path
        loses it: pass the string). inputs: what each input is ("photo", "driving video")
        -> its path, or None when the built-in one is used.
    Raises: BadOutputError (one line, for the user) if the output is an input, its folder does
        not exist or cannot be written, its extension is not one of FORMATS, it names an existing
        folder as a file, or it names a folder holding files other than frames of an earlier run.
    """
    text = os.fspath(output)
    if not text:
        raise BadOutputError(f"expected an output path ending in {_CHOICES}; got an empty one")
    path = Path(text)
    _refuse_inputs(path, inputs, "the output")
    found = _format_of(text, path)
    _check_folder(path.parent, "the output")
    if found.suffix == FOLDER:
        _check_frames_folder(path, inputs)
    elif path.is_dir():
        raise BadOutputError(f"expected an output file; {text!r} is a folder")
    return OutputTarget(path, found)


def check_side_output(output: str | os.PathLike[str], inputs: Inputs, what: str) -> Path:
    """A second output (the --strip PNG) checked like the main one: not an input, in a writable folder."""
    path = Path(output)
    _refuse_inputs(path, inputs, what)
    _check_folder(path.parent, what)
    if path.is_dir():
        raise BadOutputError(f"expected {what} to be a file; {os.fspath(path)!r} is a folder")
    return path


def open_writer(target: OutputTarget, fps: float | Fraction, size: tuple[int, int], *,
                audio_from: str | os.PathLike[str] | None = None) -> FrameWriter:
    """The writer of ``target`` for frames of ``size`` (width, height) at ``fps``.

    ``audio_from`` (a media file) gives the audio track of formats that keep audio; others ignore it.
    """
    kind = target.format.kind
    if kind == "gif":
        return GifWriter(target.path, fps, size, max_fps=GIF_MAX_FPS, max_side_px=GIF_MAX_SIDE_PX)
    if kind == "png":
        return PngFramesWriter(target.path, fps, size)

    return VideoWriter(target.path, fps, size, container=kind,
                       audio_from=audio_from if target.format.audio else None)
