"""Every fixed vocabulary of the telemetry domain, in one place."""

from django.db import models

# Agent, team, department and intent slugs: 1-64 lowercase letters, digits, '-' or '_'.
SLUG_REGEX = r"[a-z0-9][a-z0-9_-]{0,63}"


class Environment(models.TextChoices):
    PRODUCTION = "production", "Production"
    STAGING = "staging", "Staging"
    DEVELOPMENT = "development", "Development"


class TraceStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"
    TIMEOUT = "timeout", "Timeout"


class ErrorType(models.TextChoices):
    TIMEOUT = "timeout", "Timeout"
    VALIDATION = "validation", "Validation"
    LLM_ERROR = "llm_error", "LLM error"
    DEPENDENCY_ERROR = "dependency_error", "Dependency error"
    RATE_LIMITED = "rate_limited", "Rate limited"
    OTHER = "other", "Other"


class DependencyKind(models.TextChoices):
    LLM = "llm", "LLM"
    DB = "db", "Database"
    HTTP = "http", "HTTP"
    TOOL = "tool", "Tool"


class TimingKind(models.TextChoices):
    """What a timing label names: a phase of the request, or a call of one dependency kind."""

    PHASE = "phase", "Phase"
    LLM = "llm", "LLM"
    DB = "db", "Database"
    HTTP = "http", "HTTP"
    TOOL = "tool", "Tool"


class DependencyStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"


class DeploymentSource(models.TextChoices):
    INGEST = "ingest", "Seen by ingest"
    API = "api", "Deploy tool (API)"
    ADMIN = "admin", "Admin"


# Intent categories the demo and the docs use; intents are free slugs, these are just the usual ones.
COMMON_INTENTS = (
    "customer_support",
    "code_generation",
    "data_analysis",
    "search",
    "summarization",
    "document_qa",
)
