"""pianoeval: train and compare models that judge piano performances."""

from __future__ import annotations

__version__ = "0.1.0"
