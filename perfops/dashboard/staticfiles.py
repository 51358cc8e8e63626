"""Serve plotly.js from the installed plotly package, so the page never needs a CDN and the two never drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
PLOTLY_JS = "plotly.min.js"
PREFIX = "vendor/plotly"


class PlotlyFinder(BaseFinder):
    """Finds `vendor/plotly/plotly.min.js` (only that file of the package's data)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=str(PLOTLY_DIR))
        self.storage.prefix = PREFIX  # type: ignore[attr-defined]

    def check(self, **kwargs: Any) -> list[Any]:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> Any:
        if path == f"{PREFIX}/{PLOTLY_JS}" and (PLOTLY_DIR / PLOTLY_JS).exists():
            match = str(PLOTLY_DIR / PLOTLY_JS)
            return [match] if find_all else match
        return [] if find_all else None

    def list(self, ignore_patterns: Any) -> Any:
        yield PLOTLY_JS, self.storage
