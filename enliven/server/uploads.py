"""The body of ``POST /api/sessions``: a multipart form (photo + consent), a small JSON object or nothing;
its limits, checked while it is read (the whole body within ``body_timeout_s``); the photo decoded
(decoding.py) and handed to the session's engine.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
from aiohttp import BodyPartReader, web

from enliven.engine.choices import CROP_SIZES_PX
from enliven.engine.errors import EnlivenError

from .config import ServerConfig
from .decoding import Decoder
from .engines import SessionEngine
from .http_guards import HttpError
from .pool import WorkerError
from .sessions import ConsentRecord

T = TypeVar("T")

logger = logging.getLogger(__name__)

FORM_OVERHEAD_BYTES = 64 * 1024  # multipart headers and small fields on top of the photo
SMALL_FIELD_BYTES = 1024  # consent and other text fields
READ_CHUNK_BYTES = 64 * 1024
CONSENT_TRUE = ("true", "1", "yes", "on")


@dataclass
class CreateForm:
    """What a session creation asked for."""

    photo: bytes | None = None  # the uploaded file; None: the built-in photo
    consent: bool = False  # "this is me, or I have this person's permission"
    size: object = None  # crop size asked for, as sent (checked by ``crop_size_px``); None: the default

    def crop_size_px(self, default: int) -> int:
        """The crop size asked for (an integer), or ``default``. Raises HttpError(400) when it is not offered."""
        size = default if self.size is None else self.size
        if type(size) is not int or size not in CROP_SIZES_PX:
            raise HttpError(400, "bad_value", f"size must be one of {CROP_SIZES_PX} (an integer)")
        return size

    def consent_record(self) -> ConsentRecord | None:
        """What the uploader confirmed and when, with the photo's hash (not the photo); None without a photo."""
        if self.photo is None:
            return None
        return ConsentRecord(datetime.now(UTC).isoformat(timespec="seconds"), hashlib.sha256(self.photo).hexdigest())

    def check_consent(self) -> None:
        """Raises HttpError(400) when a photo came without consent."""
        if self.photo is not None and not self.consent:
            raise HttpError(400, "consent_required", "confirm that this is you or that you have this person's "
                                                     "permission (consent=true) before uploading a photo")


async def _read_part(part: BodyPartReader, limit: int, status: int, what: str) -> bytes:
    data = bytearray()
    while True:
        chunk = await part.read_chunk(READ_CHUNK_BYTES)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise HttpError(status, "too_large", f"{what} is limited to {limit} bytes")


async def read_body(request: web.Request, limit: int, what: str) -> bytes:
    """The whole body of a small request (JSON), refused with 413 once it exceeds ``limit`` bytes.
    (``StreamReader.read(n)`` returns what has arrived so far: a body in several TCP segments would be cut.)"""
    data = bytearray()
    while True:
        chunk = await request.content.read(READ_CHUNK_BYTES)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise HttpError(413, "too_large", f"{what} is limited to {limit} bytes")


async def within_body_timeout(read: Awaitable[T], config: ServerConfig) -> T:
    """``await read`` (a request body's reading), at most ``body_timeout_s``. Raises HttpError(408)."""
    try:
        return await asyncio.wait_for(read, config.body_timeout_s)
    except TimeoutError as e:
        raise HttpError(408, "request_timeout", f"the request's body did not arrive within "
                                                f"{config.body_timeout_s:g} s") from e


async def read_create_form(request: web.Request, config: ServerConfig) -> CreateForm:
    """Read the request's body within the upload limits and ``body_timeout_s``. Raises HttpError (400,
    408, 413, 415)."""
    return await within_body_timeout(_read_create_form(request, config), config)


async def _read_create_form(request: web.Request, config: ServerConfig) -> CreateForm:
    limit = config.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD_BYTES:
        raise HttpError(413, "too_large", f"photos are limited to {limit // 2**20} MB; "
                                          f"got a {request.content_length}-byte request")
    form = CreateForm()
    ctype = request.content_type
    if not request.body_exists:
        return form
    if ctype == "application/json":
        raw = await read_body(request, SMALL_FIELD_BYTES, "a JSON body here (options only; upload photos as a form)")
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as e:
            raise HttpError(400, "bad_request", "expected a JSON object") from e
        if not isinstance(body, dict):
            raise HttpError(400, "bad_request", "expected a JSON object")
        form.size = body.get("size")
        return form
    if ctype != "multipart/form-data":
        raise HttpError(415, "unsupported_media_type", "expected multipart/form-data (photo + consent) or no body")
    try:
        await _read_multipart(request, form, limit)
    except HttpError:
        raise
    except (ValueError, AssertionError, UnicodeDecodeError, LookupError, TypeError,
            web.HTTPException) as e:  # what aiohttp raises on a broken multipart body
        raise HttpError(400, "bad_request", f"malformed multipart form ({type(e).__name__})") from e
    return form


async def _read_multipart(request: web.Request, form: CreateForm, limit: int) -> None:
    reader = await request.multipart()
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            return
        if not isinstance(part, BodyPartReader):
            raise HttpError(400, "bad_request", "nested multipart is not accepted")
        if part.name == "photo":
            if form.photo is not None:
                raise HttpError(400, "bad_request", "one photo per session")
            form.photo = await _read_part(part, limit, 413, "a photo")
            total += len(form.photo)
        else:
            value = await _read_part(part, SMALL_FIELD_BYTES, 400, f"the field {part.name!r:.40}")
            total += len(value)
            text = value.decode("utf-8", "replace").strip().lower()
            if part.name == "consent":
                form.consent = text in CONSENT_TRUE
            elif part.name == "size":
                form.size = int(text) if text.isascii() and text.isdigit() and len(text) < 6 else -1
        if total > limit + FORM_OVERHEAD_BYTES:
            raise HttpError(413, "too_large", f"the request is limited to {limit} bytes")


async def decode_upload(decoder: Decoder, upload: bytes | None) -> np.ndarray | None:
    """The uploaded photo decoded in a capped child process (decoding.py); None for the built-in photo.
    Raises HttpError: 422 for an empty or refused photo (status from http_guards.ENGINE_ERROR_STATUS)."""
    if upload is None:
        return None
    if not upload:
        raise HttpError(422, "bad_image", "the photo is empty")
    try:
        return await decoder.decode(upload)
    except EnlivenError as e:
        logger.info("upload refused: %s", e.code)
        raise HttpError.from_engine(e) from e


async def prepare_photo(engine: SessionEngine, photo: np.ndarray | None) -> None:
    """Find the photo's face and prepare the engine's Animator, off the event loop.

    Raises HttpError: 422 for several faces and for the engine's refusals (their status from
    http_guards.ENGINE_ERROR_STATUS), 503 when the worker restarts or fails.
    """
    try:
        faces = await engine.prepare(photo)
    except WorkerError as e:
        logger.warning("photo preparation failed: %s", e)
        raise HttpError(503, "busy", "the animation worker is restarting; try again in a few seconds",
                        {"Retry-After": "5"}) from e
    except EnlivenError as e:
        logger.info("upload refused: %s", e.code)
        raise HttpError.from_engine(e) from e
    except RuntimeError as e:  # the worker answered with an error of its own
        logger.warning("photo preparation failed: %s", str(e)[:200])
        raise HttpError(503, "busy", "the animation worker could not prepare this photo; try again",
                        {"Retry-After": "5"}) from e
    if faces > 1:
        logger.info("upload refused: multiple_faces")
        raise HttpError(422, "multiple_faces", f"the photo shows {faces} faces; use a photo of one person")
