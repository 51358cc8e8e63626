"""Requests are read as strictly as the OpenAPI schema describes them.

DRF coerces JSON values between types: 123 becomes the string "123", "12" the integer 12, 1 the boolean
true. A client that sends a value of the wrong type has made a mistake (swapped fields, a template that did
not render), and the schema says which type each field takes, so such a value is a 400 like any other bad
value. Likewise a boolean filter: django-filter reads `?enabled=maybe` as no filter at all.

And what PostgreSQL cannot take is refused before it gets there (a 400, not a 500): a NUL character in a
path, a query string or a JSON string; a time-zone offset of more than 15:59 in a date filter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import django_filters
from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django_filters.fields import IsoDateTimeField
from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError


def _integral(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


# The JSON values each DRF field takes (bool is an int in Python, and never a number here).
_TAKES: dict[type[serializers.Field[Any, Any, Any, Any]], Callable[[Any], bool]] = {
    serializers.CharField: lambda value: isinstance(value, str),
    serializers.BooleanField: lambda value: isinstance(value, bool),
    serializers.IntegerField: lambda value: not isinstance(value, bool) and _integral(value),
    serializers.FloatField: lambda value: not isinstance(value, bool) and isinstance(value, int | float),
}


def install() -> None:
    """Make DRF's string, boolean, integer and number fields refuse JSON values of another type (once)."""
    for field_class, takes in _TAKES.items():
        original = field_class.to_internal_value
        if getattr(original, "strict", False):
            continue

        def to_internal_value(self: Any, data: Any, original: Any = original, takes: Any = takes) -> Any:
            if not takes(data):
                self.fail("invalid")
            return original(self, data)

        to_internal_value.strict = True  # type: ignore[attr-defined]
        field_class.to_internal_value = to_internal_value  # type: ignore[method-assign]


class StrictBooleanField(forms.NullBooleanField):
    """true or false (1 or 0): any other value is an error, where Django's NullBooleanField reads it as "any"."""

    widget = forms.TextInput  # the value as sent (NullBooleanSelect maps what it does not know to None)

    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]  # None: no filter
        if value in (None, ""):
            return None
        found = {"true": True, "1": True, "false": False, "0": False}.get(str(value).lower())
        if found is None:
            raise forms.ValidationError("Must be true or false.", code="invalid")
        return found


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class JSONParser(parsers.JSONParser):
    """DRF's, refusing a body with a NUL character (\\u0000) in any string: PostgreSQL text cannot hold one."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        pending: list[Any] = [data]
        while pending:
            value = pending.pop()
            if isinstance(value, str):
                if "\x00" in value:
                    raise ParseError("JSON strings may not contain NUL (\\u0000).")
            elif isinstance(value, dict):
                pending.extend(value)
                pending.extend(value.values())
            elif isinstance(value, list):
                pending.extend(value)
        return data


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date and time, as UTC: PostgreSQL refuses an offset past 15:59, which ISO 8601 allows."""

    def to_python(self, value: Any) -> Any:
        found = super().to_python(value)
        if found is None:
            return None
        try:
            return found.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class RefuseNul:
    """Middleware: a NUL character in the path or the query string is a 400, before any view looks it up."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        found = ["path"] if "\x00" in request.path else []
        found += [key for key, values in request.GET.lists() if "\x00" in key + "".join(values)]
        if not found:
            return self.get_response(request)
        if request.path.startswith(("/api/", "/v1/")):
            # The shape of the metrics endpoints' 400 (detail and errors by parameter), which the others' allow.
            errors = {name: ["NUL (\\u0000) is not allowed."] for name in found}
            return JsonResponse({"detail": "Bad parameters.", "errors": errors}, status=400)
        return HttpResponseBadRequest("NUL is not allowed in a URL.")
