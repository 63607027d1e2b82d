"""Makers for the ohlora manifest (see __init__.py)."""

from __future__ import annotations

MAKERS: dict = {}
