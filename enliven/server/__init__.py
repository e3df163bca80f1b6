"""The real-time server: aiohttp signalling + aiortc media, one Animator per session.

``enliven serve`` (see cli.py) starts it; ``create_app(config)`` builds the aiohttp application.
"""
from __future__ import annotations

from .config import ServerConfig

__all__ = ["ServerConfig"]
