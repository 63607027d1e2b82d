"""Makers for the heldout2 manifest (see __init__.py)."""

from __future__ import annotations

MAKERS: dict = {}
