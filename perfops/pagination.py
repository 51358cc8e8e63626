"""Limit/offset pagination that refuses a limit or offset that is not a whole number in range.

DRF's own falls back to the defaults on `?limit=abc` or `?offset=-1`, so a client's mistake answers a
different page than it asked for, with a 200; and it hands an offset past the database's integers to SQL.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

MINIMUM = {"limit": 1, "offset": 0}
MAXIMUM = 2**31 - 1  # every database's OFFSET and LIMIT take this


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    def get_limit(self, request: Request) -> int | None:
        if self.limit_query_param not in request.query_params:
            return self.default_limit
        return _whole(request, self.limit_query_param, MINIMUM["limit"])

    def get_offset(self, request: Request) -> int:
        if self.offset_query_param not in request.query_params:
            return 0
        return _whole(request, self.offset_query_param, MINIMUM["offset"])

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            kind = "limit" if parameter["name"] == self.limit_query_param else "offset"
            parameter["schema"].update(minimum=MINIMUM[kind], maximum=MAXIMUM)
        return parameters


def _whole(request: Request, name: str, minimum: int) -> int:
    raw = request.query_params[name]
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not minimum <= int(raw) <= MAXIMUM:
        raise ValidationError({name: [f"A whole number from {minimum} to {MAXIMUM}."]})
    return int(raw)
