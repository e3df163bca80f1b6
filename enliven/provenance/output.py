"""Provenance of one output file: every frame watermarked, the finished file signed with C2PA.

The offline writer calls ``FileProvenance.mark(frame)`` on each frame just before writing it and
``FileProvenance.sign(...)`` once the file is complete.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from enliven.engine.defaults import BUILTIN_PHOTO
from enliven.provenance.c2pa_sign import (C2PA_MEDIA_TYPES, Ingredient, SigningIdentity, media_type_of,
                                          resolve_identity, sha256_file, sign_file)
from enliven.provenance.watermark import Watermarker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvenanceOptions:
    c2pa: bool = True  # sign written files with a C2PA manifest
    c2pa_cert: str | None = None  # PEM certificate chain, signer first; None: $ENLIVEN_C2PA_CERT, else development
    c2pa_key: str | None = None  # PEM private key of that signer; None: $ENLIVEN_C2PA_KEY, else development


class FileProvenance:
    """One output file's watermark session and signing identity (resolved up front, so a bad
    certificate fails before any animating)."""

    def __init__(self, options: ProvenanceOptions = ProvenanceOptions()) -> None:
        self.watermarker = Watermarker()
        self.identity: SigningIdentity | None = (
            resolve_identity(options.c2pa_cert, options.c2pa_key) if options.c2pa else None)

    def mark(self, frame: np.ndarray) -> np.ndarray:
        """A watermarked copy of an (H, W, 3) uint8 RGB output frame."""
        return self.watermarker.embed(frame)

    def sign(self, output: str | os.PathLike[str], photo: str | os.PathLike[str] | None,
             driving: str | os.PathLike[str] | None) -> None:
        """Sign the finished ``output`` (a C2PA manifest naming the inputs by hash), unless C2PA is off."""
        if self.identity is None or not Path(output).is_file():
            return  # C2PA off, or a folder of PNG frames
        media_type = media_type_of(output)
        if media_type not in C2PA_MEDIA_TYPES:
            logger.info("%s: no C2PA manifest for this format (%s); the frames carry the watermark", output,
                        media_type)
            return
        ingredients = [_photo_ingredient(photo)]
        if driving is not None:
            ingredients.append(Ingredient("driving video", sha256_file(driving), media_type_of(driving)))
        sign_file(output, ingredients, self.identity, watermark_session=self.watermarker.payload.session_hex,
                  media_type=media_type)


def _photo_ingredient(photo: str | os.PathLike[str] | None) -> Ingredient:
    if photo is not None:
        return Ingredient("photo", sha256_file(photo), media_type_of(photo))
    with resources.as_file(resources.files("enliven.engine.assets") / BUILTIN_PHOTO) as path:
        return Ingredient("photo (built-in)", sha256_file(path), media_type_of(path))
