"""drf-spectacular's AutoSchema, plus what DRF's introspection leaves out of the OpenAPI schema.

- Every operation documents the errors DRF answers with: 400 (bad data), 401 (no token, or a bad one), 403
  (a missing scope or role), and 404 when the path names an object.
  An operation that describes one of these itself keeps its own; one described only in words gets the
  `{"detail": ...}` body DRF answers it with.
- A read-only field of a ModelSerializer says what its column allows: DRF drops `allow_null` and
  `allow_blank` from fields listed in `read_only_fields`, so a null `decided_by` or a blank `end_reason`
  would answer outside the schema. A nullable relation in a request also takes "", which DRF reads as null.
- A filter's query parameter also takes "": django-filter reads an empty value as no filter, and so do the
  views that say `blank_parameters_are_absent` (the metrics endpoints, whose parameters the dashboard's
  forms also send).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from drf_spectacular import openapi
from drf_spectacular.plumbing import force_instance
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

_DETAIL = inline_serializer("Error", fields={"detail": serializers.CharField()})
ERRORS = {
    "400": OpenApiResponse(OpenApiTypes.OBJECT, description="Bad data: the errors, by field (or `detail`)."),
    "401": OpenApiResponse(_DETAIL, description="No token, or an unknown, expired or revoked one."),
    "403": OpenApiResponse(_DETAIL, description="The token lacks the scope, or its person the role."),
    "404": OpenApiResponse(_DETAIL, description="No such object, or not in one of your departments."),
}


class AutoSchema(openapi.AutoSchema):
    """The project's schema class (REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"])."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        places = {parameter["in"] for parameter in operation.get("parameters", [])}
        codes = ["400"]  # a bad body or parameter, and anywhere a NUL in the URL (perfops.strictness.RefuseNul)
        if any(requirement for requirement in operation.get("security", [{}])) and {} not in operation["security"]:
            codes += ["401", "403"]
        if "path" in places:
            codes.append("404")
        responses = operation["responses"]
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(ERRORS[code], code)
        for code, response in responses.items():
            # A 404 or 409 described in words still answers DRF's {"detail": ...}.
            if code >= "400" and "content" not in response:
                response["content"] = self._get_response_for_code(_DETAIL, code)["content"]
        return operation

    def _get_filter_parameters(self) -> list[dict[str, Any]]:
        parameters = super()._get_filter_parameters()
        for parameter in parameters:
            parameter["schema"] = _or_empty(parameter["schema"])
        return parameters

    def _get_parameters(self) -> list[dict[str, Any]]:
        parameters = super()._get_parameters()
        if getattr(self.view, "blank_parameters_are_absent", False):
            for parameter in parameters:
                if parameter["in"] == "query" and not parameter.get("required"):
                    parameter["schema"] = _or_empty(parameter["schema"], blank=True)
        return parameters

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        serializer = force_instance(serializer)
        model = getattr(getattr(serializer, "Meta", None), "model", None)
        changed: list[tuple[Any, str, Any]] = []
        for field in serializer.fields.values():
            if field.read_only and model is not None:
                allowed = _what_the_column_allows(field, model)
            elif direction == "request" and isinstance(field, serializers.RelatedField) and field.allow_null:
                allowed = {"allow_blank": True}  # DRF reads "" as null for a relation
            else:
                continue
            for name, value in allowed.items():
                changed.append((field, name, getattr(field, name, None)))
                setattr(field, name, value)
        try:
            return super()._map_basic_serializer(serializer, direction)
        finally:
            for field, name, value in changed:
                setattr(field, name, value)


def _what_the_column_allows(field: serializers.Field[Any, Any, Any, Any], model: type[models.Model]) -> dict[str, bool]:
    """allow_null / allow_blank for a read-only field whose model column is nullable or blank."""
    if not field.source or "." in field.source or field.source == "*":
        return {}
    try:
        column = model._meta.get_field(field.source)
    except FieldDoesNotExist:
        return {}
    if not column.concrete or column.many_to_many:  # lists (reverse and many-to-many relations) are never null
        return {}
    allowed = {}
    if getattr(column, "null", False):
        allowed["allow_null"] = True
    if getattr(column, "blank", False) and isinstance(column, models.CharField) and hasattr(field, "allow_blank"):
        allowed["allow_blank"] = True
    return allowed


def _or_empty(schema: dict[str, Any], blank: bool = False) -> dict[str, Any]:
    """A parameter's schema that also takes "" (with `blank`, only white space), which is read as not given."""
    kind = schema.get("type")
    if kind == "array" or (kind == "string" and not {"enum", "format", "pattern", "minLength"} & schema.keys()):
        return schema
    if blank:
        return {"oneOf": [schema, {"type": "string", "pattern": r"^\s*$"}]}
    if kind == "string" and "enum" in schema and not {"format", "pattern", "minLength"} & schema.keys():
        return {**schema, "enum": [*schema["enum"], ""]} if "" not in schema["enum"] else schema
    return {"oneOf": [schema, {"type": "string", "maxLength": 0}]}
