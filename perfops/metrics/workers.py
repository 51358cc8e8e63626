"""Entry points of catch-up worker processes (no Django import at module level: they set Django up first)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

_state: dict[str, Any] = {}


def init_worker(owner: str, now: datetime) -> None:
    """Pool initializer: set Django up, then hold what every slice of this run needs."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfops.settings")
    django.setup()
    from perfops.metrics.rollup import Lease, Windows, agent_homes

    _state.update(lease=Lease.held_by(owner), windows=Windows.at(now), homes=agent_homes())


def slice_in_worker(piece: tuple[int, int]) -> Any:
    from perfops.metrics.rollup import catch_up_slice

    return catch_up_slice(_state["lease"], piece[0], piece[1], _state["windows"], _state["homes"])
