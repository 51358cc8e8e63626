"""Audit registration for the telemetry models that people change (traces are data, not changes)."""

from auditlog.registry import auditlog

from perfops.access.audit import audit_detachments
from perfops.telemetry.models import Agent, AgentCapacity, Department, Deployment, Team

auditlog.register(Department, m2m_fields={"members"})
auditlog.register(Team)
auditlog.register(Agent, exclude_fields=["updated_at"])
auditlog.register(AgentCapacity)
auditlog.register(Deployment)
# A deleted team or person leaves its agents without a team or owner, a deleted person their departments.
audit_detachments(Department, Agent)
