"""Audit: people, their roles and their tokens, and the rules every audit entry follows.

- One entry per object per unit of work (a request, a command): a form that saves an object and then
  adds and removes members of its many-to-many fields leaves one entry, with each member list
  before and after, not one entry per save, addition and removal (`one_entry_per_object`).
- A secret (a password, a webhook secret) never appears; when one changes, the entry says so and
  shows "(hidden)" for its value (`audit_secret_changes`). Token hashes never change after issue.
- Writes that auditlog's signals do not see are recorded too: conditional `update()`s and exports
  (`record_update`, `record_access`), and what a delete does to the audited objects that pointed at
  the deleted one or held it in a many-to-many set (`audit_detachments`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from auditlog.context import auditlog_disabled
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from auditlog.signals import post_log
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import SET_NULL, Model
from django.db.models.signals import post_save, pre_delete, pre_save
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.encoding import smart_str

from perfops.access.models import AllowedHost, ApiToken

HIDDEN = "(hidden)"
# The secret fields whose changes are recorded hidden, by model.
SECRET_FIELDS: dict[type[Model], list[str]] = defaultdict(list)


def hidden(value: Any) -> str:
    """A secret as the audit log shows it: whether there is one, never what it is."""
    return "" if value in (None, "") else HIDDEN


def audit_secret_changes(model: type[Model], name: str) -> None:
    """Record a change of the secret field `name` (excluded from auditlog's diff) in the save's entry, hidden.

    Adding an object records no secret; changing one adds `name: ["(hidden)", "(hidden)"]` to the entry
    auditlog wrote for the same save, or writes one when the secret was all that changed.
    """
    unread = object()
    before_key, entry_key = f"_audit_{name}_before", f"_audit_{name}_entry"

    def read_before(sender: type[Model], instance: Any, raw: bool = False, update_fields: Any = None, **_: Any) -> None:
        if raw or instance._state.adding or instance.pk is None:
            return
        if update_fields is not None and name not in update_fields:
            return
        instance.__dict__[before_key] = sender._base_manager.filter(pk=instance.pk).values_list(name, flat=True).first()

    def entry_written(sender: type[Model], instance: Any, log_entry: Any = None, **_: Any) -> None:
        if log_entry is not None and log_entry.action == LogEntry.Action.UPDATE:
            instance.__dict__[entry_key] = log_entry

    def add_to_entry(sender: type[Model], instance: Any, created: bool, raw: bool = False, **_: Any) -> None:
        before = instance.__dict__.pop(before_key, unread)
        entry = instance.__dict__.pop(entry_key, None)
        after = getattr(instance, name)
        if created or raw or before is unread or before == after or auditlog_disabled.get():
            return
        change = {name: [hidden(before), hidden(after)]}
        if entry is not None:
            LogEntry.objects.filter(pk=entry.pk).update(changes={**(entry.changes or {}), **change})
        else:
            LogEntry.objects.log_create(instance, force_log=True, action=LogEntry.Action.UPDATE, changes=change)

    SECRET_FIELDS[model].append(name)
    uid = f"perfops.audit.secret.{model._meta.label}.{name}"
    pre_save.connect(read_before, sender=model, weak=False, dispatch_uid=uid)
    post_log.connect(entry_written, sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(add_to_entry, sender=model, weak=False, dispatch_uid=uid)


def _audited(model: type[Model], name: str) -> bool:
    options = auditlog.get_model_fields(model)
    return name not in options["exclude_fields"] and (
        not options["include_fields"] or name in options["include_fields"]
    )


def audit_detachments(*models: type[Model]) -> None:
    """Give an entry to each object of `models` that a delete elsewhere changes behind auditlog's back.

    Deleting a team empties the team of its agents (SET_NULL), deleting a channel takes it out of the
    rules that notify it (a many-to-many set): Django writes both with an UPDATE or a bulk delete that
    sends no signal, so without this no entry would say so. Call after registering `models`.
    """
    for model in models:
        m2m = auditlog._registry[model]["m2m_fields"]  # not in get_model_fields
        for field in model._meta.fields:
            nulled = field.many_to_one and getattr(field.remote_field, "on_delete", None) is SET_NULL
            if nulled and _audited(model, field.name):
                _watch_deletes(field.related_model, model, field.name, many=False)
        for name in m2m:
            _watch_deletes(model._meta.get_field(name).related_model, model, name, many=True)


def _watch_deletes(target: Any, holder: type[Model], name: str, *, many: bool) -> None:
    def detach(sender: Any, instance: Any, **_: Any) -> None:
        if auditlog_disabled.get():
            return
        for obj in holder._base_manager.filter(**{name: instance}):
            # A removal as auditlog writes one: the unit turns it into the set before and after.
            change: Any = {"type": "m2m", "operation": "delete", "objects": [str(instance)]}
            LogEntry.objects.log_create(
                obj,
                force_log=True,
                action=LogEntry.Action.UPDATE,
                changes={name: change if many else [_text(instance), "None"]},
            )

    uid = f"perfops.audit.detach.{holder._meta.label}.{name}"
    pre_delete.connect(detach, sender=target, weak=False, dispatch_uid=uid)


auditlog.register(ApiToken, exclude_fields=["token_hash", "last_used_at"])
# Who holds which role, which permissions, and who is a superuser, decides what everyone else may see and do.
auditlog.register(
    get_user_model(), m2m_fields={"groups", "user_permissions"}, exclude_fields=["password", "last_login"]
)
audit_secret_changes(get_user_model(), "password")
auditlog.register(Group, m2m_fields={"permissions"})
# Which hosts perfops may call is a security decision.
auditlog.register(AllowedHost)
audit_detachments(get_user_model(), Group)


def record_update(instance: Any, actor: Any, changes: dict[str, tuple[Any, Any]]) -> None:
    """One audit entry for a change written with a conditional `update()`, which auditlog's signals do not see.

    `changes` names every audited field the update wrote, as (before, after); the values are written
    as auditlog writes those of a save (a related object by its id, a time in naive UTC), so both kinds
    of entry read alike. `actor` None (or not a saved user) records the system as the actor.
    """
    LogEntry.objects.log_create(
        instance,
        force_log=True,
        action=LogEntry.Action.UPDATE,
        changes={
            field: [_text(before), _text(after)]
            for field, (before, after) in changes.items()
            if _text(before) != _text(after)
        },
        actor=actor if getattr(actor, "pk", None) else None,
    )


def _text(value: Any) -> str:
    """A value as auditlog's diff renders it."""
    if isinstance(value, Model):
        value = value.pk
    if isinstance(value, datetime) and timezone.is_aware(value):
        value = timezone.make_naive(value, UTC)
    return smart_str(value)


def record_access(instance: Any, actor: Any, what: str) -> None:
    """An audit entry for something a person generated or looked at that changes nothing (A4.9)."""
    LogEntry.objects.log_create(
        instance,
        force_log=True,
        action=LogEntry.Action.ACCESS,
        changes={"generated": ["", what]},
        actor=actor if getattr(actor, "pk", None) else None,
    )


# --- one entry per object per unit of work ---------------------------------------------------------------

# The ids of the entries written in the current unit (None outside one).
_unit: ContextVar[list[int] | None] = ContextVar("perfops_audit_unit", default=None)


def _entry_saved(sender: type[LogEntry], instance: LogEntry, created: bool, **_: Any) -> None:
    written = _unit.get()
    if created and written is not None:
        written.append(instance.pk)


post_save.connect(_entry_saved, sender=LogEntry, dispatch_uid="perfops.audit.unit")


@contextmanager
def one_entry_per_object() -> Iterator[None]:
    """Within the block, the entries written for one object become one, many-to-many sets as before and after.

    auditlog writes an entry per save and per many-to-many addition or removal (a form that moves a
    person from one role to another: three). When the block ends they are folded into the first,
    which keeps its actor and time. A nested block leaves the folding to the outer one.
    """
    if _unit.get() is not None:
        yield
        return
    written: list[int] = []
    token = _unit.set(written)
    try:
        yield
    finally:
        _unit.reset(token)
    if written:
        _fold_all(written)


class OneEntryPerObjectMiddleware:
    """Each request is one unit of audit: one entry per object it changed (after AuditlogMiddleware)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with one_entry_per_object():
            response: HttpResponse = self.get_response(request)
        return response


def _is_m2m(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "m2m"


def _fold_all(ids: list[int]) -> None:
    groups: dict[tuple[int, str], list[LogEntry]] = defaultdict(list)
    for entry in (
        LogEntry.objects.filter(pk__in=ids).exclude(action=LogEntry.Action.ACCESS).select_related("content_type")
    ).order_by("pk"):
        groups[(entry.content_type_id, entry.object_pk)].append(entry)
    for entries in groups.values():
        if len(entries) > 1 or any(_is_m2m(value) for value in (entries[0].changes or {}).values()):
            with transaction.atomic():
                _fold(entries)


def _fold(entries: list[LogEntry]) -> None:
    """Make the first entry say everything the entries say about their object, and drop the others."""
    actions = {entry.action for entry in entries}
    if {LogEntry.Action.CREATE, LogEntry.Action.DELETE} <= actions:
        return  # made and removed in one unit: each entry tells its part
    action = next((a for a in (LogEntry.Action.CREATE, LogEntry.Action.DELETE) if a in actions), LogEntry.Action.UPDATE)
    changes: dict[str, list[Any]] = {}
    added: dict[str, Counter[str]] = defaultdict(Counter)
    removed: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in entries:
        for field, value in (entry.changes or {}).items():
            if _is_m2m(value):
                (added if value["operation"] == "add" else removed)[field].update(value["objects"])
            elif field in changes:
                changes[field][1] = value[1]
            else:
                changes[field] = list(value)
    model, instance = entries[0].content_type.model_class(), None
    if (added or removed) and action != LogEntry.Action.DELETE and model is not None:
        instance = model._base_manager.filter(pk=entries[0].object_pk).first()
    if instance is not None:
        for field in added.keys() | removed.keys():
            now = Counter(str(member) for member in getattr(instance, field).all())
            before = now - added[field] + removed[field]
            changes[field] = [json.dumps(sorted(before.elements())), json.dumps(sorted(now.elements()))]
    changes = {field: pair for field, pair in changes.items() if pair[0] != pair[1]}
    first, rest = entries[0], [entry.pk for entry in entries[1:]]
    if not changes and action == LogEntry.Action.UPDATE:
        rest.append(first.pk)  # undone within the unit: nothing changed
    else:
        actor = next((entry.actor_id for entry in entries if entry.actor_id is not None), None)
        LogEntry.objects.filter(pk=first.pk).update(action=action, changes=changes, actor_id=actor)
    LogEntry.objects.filter(pk__in=rest).delete()
