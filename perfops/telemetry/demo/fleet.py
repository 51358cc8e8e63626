"""The demo fleet: departments, teams, agents, and how each kind of agent spends a request.

Plain data and arithmetic (no Django models), so the trace generator can run in worker
processes. An agent's behaviour (speed, error rate, traffic) comes from its slug alone, so
`simulate` rebuilds the same agents without knowing the seed that made the history (plan.py).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

PHASES = ("auth", "preprocess", "retrieval", "llm", "postprocess")
AUTH, PRE, RET, LLM, POST = range(len(PHASES))
ENVIRONMENTS = ("production", "staging", "development")
PRODUCTION, STAGING, DEVELOPMENT = range(len(ENVIRONMENTS))
# Error types as the generator codes them (0: no error); the strings are ErrorType values.
ERROR_TYPES = ("", "timeout", "validation", "llm_error", "dependency_error", "rate_limited", "other")
E_NONE, E_TIMEOUT, E_VALIDATION, E_LLM, E_DEPENDENCY, E_RATE_LIMITED, E_OTHER = range(len(ERROR_TYPES))
# The order of Archetype.error_mix.
MIX_TYPES = (E_VALIDATION, E_LLM, E_DEPENDENCY, E_RATE_LIMITED, E_OTHER)
PROFILES = ("business", "consumer", "batch")

# Staging runs on smaller instances and development on laptops-grade ones; both fail more often.
ENV_LATENCY = (1.0, 1.12, 1.3)
ENV_ERROR = (1.0, 1.6, 3.0)
ENV_SHARE = (0.8, 0.13, 0.07)

US_PER_S = 1_000_000
US_PER_MIN = 60 * US_PER_S
US_PER_H = 60 * US_PER_MIN
US_PER_DAY = 24 * US_PER_H

# ms to the first token and per output token; the LLM phase is ttft + tokens * tpot.
MODELS: dict[str, tuple[float, float]] = {
    "gpt-4o": (450.0, 10.0),
    "gpt-4o-mini": (300.0, 6.0),
    "claude-sonnet-4": (600.0, 12.0),
    "claude-haiku-4": (350.0, 6.0),
    "llama-3.1-70b": (250.0, 15.0),
    "mistral-large": (400.0, 11.0),
}
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
CUSTOMER_TIERS = ("free", "pro", "enterprise")


@dataclass(frozen=True, slots=True)
class Call:
    """A dependency call inside a phase, placed by fractions of that phase's duration."""

    name: str  # "{model}" and "{api}" stand for the agent's model and its department's API
    kind: str
    phase: int
    start: float
    dur_lo: float
    dur_hi: float


@dataclass(frozen=True, slots=True)
class Archetype:
    """How one kind of agent spends a request: phases, calls, tokens, cache and failure habits."""

    key: str
    phase_ms: tuple[float, float, float, float, float]  # medians; 0 = no such phase, llm is token-driven
    calls: tuple[Call, ...]
    in_tokens: float
    out_tokens: float
    cache_rate: float
    timeout_ms: float
    error_mix: tuple[float, float, float, float, float]  # shares of MIX_TYPES
    dependency_slot: int  # the call a dependency_error breaks
    channels: tuple[str, str, str, str]

    @property
    def uses_llm(self) -> bool:
        return self.in_tokens > 0

    @property
    def llm_slot(self) -> int:
        """The first LLM call, which an llm_error or a rate limit breaks (-1 without one)."""
        return next((i for i, call in enumerate(self.calls) if call.kind == "llm"), -1)


MAX_CALLS = 6
ARCHETYPES: dict[str, Archetype] = {
    archetype.key: archetype
    for archetype in (
        Archetype(
            "support",
            (6.0, 60.0, 0.0, 1.0, 25.0),
            (
                Call("redis", "db", PRE, 0.03, 0.08, 0.15),
                Call("{api}", "http", PRE, 0.2, 0.55, 0.75),
                Call("{model}", "llm", LLM, 0.01, 0.33, 0.36),
                Call("kb-lookup", "tool", LLM, 0.38, 0.12, 0.16),
                Call("{model}", "llm", LLM, 0.56, 0.40, 0.43),
                Call("postgres", "db", POST, 0.1, 0.5, 0.8),
            ),
            in_tokens=1800,
            out_tokens=120,
            cache_rate=0.22,
            timeout_ms=20_000,
            error_mix=(0.25, 0.35, 0.2, 0.1, 0.1),
            dependency_slot=1,
            channels=("web", "mobile", "email", "voice"),
        ),
        Archetype(
            "rag",
            (6.0, 40.0, 180.0, 1.0, 15.0),
            (
                Call("redis", "db", PRE, 0.05, 0.1, 0.2),
                Call("{api}", "http", PRE, 0.3, 0.5, 0.65),
                Call("search-api", "http", RET, 0.03, 0.55, 0.65),
                Call("postgres", "db", RET, 0.72, 0.2, 0.26),
                Call("{model}", "llm", LLM, 0.02, 0.93, 0.97),
            ),
            in_tokens=4500,
            out_tokens=180,
            cache_rate=0.15,
            timeout_ms=25_000,
            error_mix=(0.2, 0.35, 0.25, 0.1, 0.1),
            dependency_slot=1,
            channels=("web", "slack", "api", "mobile"),
        ),
        Archetype(
            "codegen",
            (8.0, 120.0, 0.0, 1.0, 300.0),
            (
                Call("{api}", "http", PRE, 0.05, 0.4, 0.6),
                Call("postgres", "db", PRE, 0.68, 0.2, 0.3),
                Call("{model}", "llm", LLM, 0.01, 0.45, 0.48),
                Call("run-tests", "tool", LLM, 0.51, 0.22, 0.26),
                Call("{model}", "llm", LLM, 0.79, 0.18, 0.2),
                Call("lint", "tool", POST, 0.05, 0.5, 0.8),
            ),
            in_tokens=6000,
            out_tokens=350,
            cache_rate=0.03,
            timeout_ms=60_000,
            error_mix=(0.3, 0.3, 0.15, 0.15, 0.1),
            dependency_slot=0,
            channels=("ide", "cli", "ci", "chat"),
        ),
        Archetype(
            "analytics",
            (7.0, 90.0, 0.0, 1.0, 900.0),
            (
                Call("{api}", "http", PRE, 0.05, 0.3, 0.4),
                Call("postgres", "db", PRE, 0.5, 0.35, 0.45),
                Call("{model}", "llm", LLM, 0.02, 0.94, 0.96),
                Call("sql-executor", "tool", POST, 0.03, 0.7, 0.9),
            ),
            in_tokens=2500,
            out_tokens=120,
            cache_rate=0.1,
            timeout_ms=45_000,
            error_mix=(0.3, 0.25, 0.25, 0.05, 0.15),
            dependency_slot=0,
            channels=("web", "slack", "scheduled", "api"),
        ),
        Archetype(
            "summarizer",
            (6.0, 150.0, 0.0, 1.0, 20.0),
            (
                Call("{api}", "http", PRE, 0.05, 0.7, 0.85),
                Call("{model}", "llm", LLM, 0.02, 0.95, 0.97),
                Call("redis", "db", POST, 0.2, 0.1, 0.3),
            ),
            in_tokens=9000,
            out_tokens=200,
            cache_rate=0.08,
            timeout_ms=45_000,
            error_mix=(0.3, 0.3, 0.2, 0.1, 0.1),
            dependency_slot=0,
            channels=("web", "email", "api", "scheduled"),
        ),
        Archetype(
            "search",
            (4.0, 12.0, 55.0, 0.0, 10.0),
            (
                Call("redis", "db", PRE, 0.05, 0.3, 0.5),
                Call("search-api", "http", RET, 0.02, 0.85, 0.95),
                Call("postgres", "db", POST, 0.1, 0.5, 0.8),
            ),
            in_tokens=0,
            out_tokens=0,
            cache_rate=0.35,
            timeout_ms=2_000,
            error_mix=(0.45, 0.0, 0.4, 0.05, 0.1),
            dependency_slot=1,
            channels=("web", "mobile", "api", "internal"),
        ),
    )
}
ARCHETYPE_KEYS = tuple(ARCHETYPES)
# What else an agent of each kind is asked, besides its main intent.
SECONDARY_INTENT = {
    "support": "document_qa",
    "rag": "summarization",
    "codegen": "summarization",
    "analytics": "summarization",
    "summarizer": "document_qa",
    "search": "",
}


@dataclass(frozen=True, slots=True)
class TeamSpec:
    slug: str
    name: str
    reports_deploys: bool  # its deploy tool reports versions through the API (else ingest sees them first)


@dataclass(frozen=True, slots=True)
class DepartmentSpec:
    slug: str
    name: str
    api: str  # the system of record its agents call (a shared dependency that can fail for all of them)
    teams: tuple[TeamSpec, ...]


DEPARTMENTS = (
    DepartmentSpec(
        "customer-experience",
        "Customer Experience",
        "crm-api",
        (
            TeamSpec("support-automation", "Support Automation", False),
            TeamSpec("order-care", "Order Care", True),
            TeamSpec("voice-of-customer", "Voice of Customer", False),
        ),
    ),
    DepartmentSpec(
        "engineering",
        "Engineering Productivity",
        "git-api",
        (
            TeamSpec("developer-tools", "Developer Tools", True),
            TeamSpec("platform-reliability", "Platform Reliability", True),
            TeamSpec("qa-automation", "QA Automation", True),
        ),
    ),
    DepartmentSpec(
        "finance",
        "Finance",
        "erp-api",
        (
            TeamSpec("accounts-payable", "Accounts Payable", False),
            TeamSpec("financial-planning", "Financial Planning", False),
        ),
    ),
    DepartmentSpec(
        "sales-marketing",
        "Sales & Marketing",
        "sales-crm-api",
        (
            TeamSpec("sales-enablement", "Sales Enablement", True),
            TeamSpec("growth-marketing", "Growth Marketing", False),
            TeamSpec("market-intelligence", "Market Intelligence", False),
        ),
    ),
    DepartmentSpec(
        "people-legal",
        "People & Legal",
        "hris-api",
        (
            TeamSpec("people-ops", "People Operations", False),
            TeamSpec("talent-acquisition", "Talent Acquisition", False),
            TeamSpec("legal-ops", "Legal Operations", True),
        ),
    ),
    DepartmentSpec(
        "data-platform",
        "Data & Analytics",
        "warehouse-api",
        (
            TeamSpec("analytics-engineering", "Analytics Engineering", True),
            TeamSpec("knowledge-management", "Knowledge Management", True),
            TeamSpec("data-science", "Data Science", True),
        ),
    ),
)
DEPARTMENT_SLUGS = tuple(department.slug for department in DEPARTMENTS)

# The base fleet, by department: team, agent slug, main intent, archetype, model ("-": no LLM),
# traffic tier and daily profile. Parsed once at import.
_CATALOG_TABLE = """
[customer-experience]
order-care            refund-assistant           customer_support support    gpt-4o          high   consumer
order-care            order-status-bot           customer_support support    gpt-4o-mini     high   consumer
order-care            returns-helper             customer_support support    gpt-4o-mini     medium consumer
order-care            shipping-tracker           search           search     -               medium consumer
support-automation    faq-responder              customer_support support    gpt-4o-mini     high   consumer
support-automation    complaint-triage           customer_support support    claude-haiku-4  medium consumer
support-automation    chat-handoff-router        customer_support support    gpt-4o-mini     medium consumer
support-automation    loyalty-concierge          customer_support support    claude-sonnet-4 low    consumer
support-automation    help-center-qa             document_qa      rag        gpt-4o          medium consumer
voice-of-customer     review-summarizer          summarization    summarizer claude-haiku-4  medium batch
voice-of-customer     survey-analyst             data_analysis    analytics  gpt-4o          low    business
[engineering]
developer-tools       code-review-assistant      code_generation  codegen    claude-sonnet-4 high   business
developer-tools       pr-description-writer      summarization    summarizer gpt-4o-mini     medium business
developer-tools       commit-message-bot         code_generation  codegen    llama-3.1-70b   medium business
developer-tools       migration-helper           code_generation  codegen    claude-sonnet-4 low    business
developer-tools       api-doc-writer             document_qa      rag        gpt-4o          low    business
qa-automation         test-generator             code_generation  codegen    gpt-4o          medium business
qa-automation         flaky-test-detective       data_analysis    analytics  gpt-4o-mini     low    batch
platform-reliability  incident-summarizer        summarization    summarizer claude-sonnet-4 low    consumer
platform-reliability  log-explainer              data_analysis    analytics  gpt-4o          medium consumer
platform-reliability  runbook-search             search           rag        gpt-4o-mini     medium consumer
platform-reliability  oncall-copilot             document_qa      rag        claude-sonnet-4 low    consumer
[finance]
accounts-payable      invoice-extractor          document_qa      summarizer gpt-4o          high   business
accounts-payable      expense-auditor            data_analysis    analytics  gpt-4o-mini     medium business
accounts-payable      vendor-risk-screener       search           rag        claude-haiku-4  low    business
accounts-payable      payment-anomaly-detector   data_analysis    analytics  llama-3.1-70b   medium batch
accounts-payable      tax-doc-summarizer         summarization    summarizer mistral-large   low    business
financial-planning    forecast-analyst           data_analysis    analytics  claude-sonnet-4 medium batch
financial-planning    revenue-reconciler         data_analysis    analytics  gpt-4o          low    batch
financial-planning    budget-variance-explainer  summarization    summarizer gpt-4o-mini     low    business
financial-planning    contract-clause-qa         document_qa      rag        claude-sonnet-4 low    business
[sales-marketing]
sales-enablement      lead-qualifier             data_analysis    analytics  gpt-4o-mini     high   business
sales-enablement      email-drafter              summarization    summarizer gpt-4o          medium business
sales-enablement      proposal-writer            document_qa      rag        claude-sonnet-4 medium business
sales-enablement      call-notes-summarizer      summarization    summarizer gpt-4o-mini     medium business
sales-enablement      crm-enricher               search           search     -               medium batch
sales-enablement      pricing-qa                 document_qa      rag        gpt-4o-mini     low    business
growth-marketing      product-search             search           search     -               high   consumer
growth-marketing      seo-brief-generator        summarization    summarizer gpt-4o          low    business
growth-marketing      campaign-analyst           data_analysis    analytics  gpt-4o          low    business
market-intelligence   competitor-monitor         summarization    summarizer claude-haiku-4  low    batch
market-intelligence   market-research-qa         document_qa      rag        claude-sonnet-4 low    business
[people-legal]
people-ops            benefits-helper            customer_support support    claude-haiku-4  medium business
people-ops            policy-qa                  document_qa      rag        gpt-4o-mini     high   business
people-ops            onboarding-buddy           customer_support support    gpt-4o-mini     medium business
talent-acquisition    resume-screener            document_qa      summarizer gpt-4o-mini     medium business
talent-acquisition    interview-scheduler        customer_support support    gpt-4o-mini     medium business
talent-acquisition    job-description-writer     summarization    summarizer claude-haiku-4  low    business
legal-ops             contract-reviewer          document_qa      rag        claude-sonnet-4 medium business
legal-ops             nda-checker                document_qa      summarizer gpt-4o          low    business
legal-ops             compliance-search          search           rag        gpt-4o-mini     medium business
legal-ops             regulatory-digest          summarization    summarizer mistral-large   low    batch
[data-platform]
analytics-engineering sql-copilot                code_generation  codegen    gpt-4o          high   business
analytics-engineering dashboard-narrator         summarization    summarizer gpt-4o-mini     medium business
analytics-engineering metrics-explainer          data_analysis    analytics  claude-sonnet-4 medium business
analytics-engineering data-quality-monitor       data_analysis    analytics  llama-3.1-70b   medium batch
knowledge-management  wiki-search                search           rag        gpt-4o-mini     high   business
knowledge-management  catalog-search             search           search     -               high   business
knowledge-management  meeting-summarizer         summarization    summarizer claude-haiku-4  high   business
knowledge-management  research-digest            summarization    summarizer claude-sonnet-4 low    batch
data-science          churn-analyst              data_analysis    analytics  gpt-4o          low    business
data-science          experiment-reporter        data_analysis    analytics  gpt-4o-mini     low    batch
"""


def _parse_catalog(table: str) -> dict[str, tuple[tuple[str, str, str, str, str, str, str], ...]]:
    """{department: ((slug, team, intent, archetype, model, tier, profile), ...)} from the table."""
    catalog: dict[str, list[tuple[str, str, str, str, str, str, str]]] = {}
    current = ""
    for line in table.strip().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
            catalog[current] = []
            continue
        team, slug, intent, archetype, model, tier, profile = line.split()
        catalog[current].append((slug, team, intent, archetype, "" if model == "-" else model, tier, profile))
    return {department: tuple(rows) for department, rows in catalog.items()}


_CATALOG = _parse_catalog(_CATALOG_TABLE)
# Regional copies make the larger fleets of a benchmark (--agents 200).
_REGION_SUFFIXES = ("emea", "apac", "latam", "na-east", "na-west", "anz", "india", "nordics", "dach", "japan", "uk")
_TIER_WEIGHT = {"high": 3.0, "medium": 1.0, "low": 0.35}
_LOWER_TIER = {"high": "medium", "medium": "low", "low": "low"}
_ACRONYMS = {"faq": "FAQ", "pr": "PR", "sql": "SQL", "api": "API", "seo": "SEO", "qa": "QA", "nda": "NDA", "crm": "CRM"}

# The agents the story is about; they are always in the fleet, whatever its size.
LATENCY_REGRESSION_AGENT = "order-status-bot"
ERROR_REGRESSION_AGENT = "invoice-extractor"
RATE_LIMITED_AGENT = "refund-assistant"
OUTAGE_DEPARTMENT = "customer-experience"
SLOWDOWN_MODEL = "claude-sonnet-4"
VALIDATION_AGENT = "email-drafter"
PARITY_AGENT = "compliance-search"
NEAR_CAPACITY_AGENT = "product-search"
# The agents `simulate` serves over HTTP (fast search, cached FAQ, an LLM bot).
SERVED_AGENTS = ("catalog-search", "faq-responder", "order-status-bot")


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent of the fleet and the numbers that shape its traffic."""

    slug: str
    name: str
    department: str
    team: str
    intent: str
    secondary_intent: str
    archetype: str
    model: str
    profile: str
    weight: float  # relative traffic
    speed: float  # latency multiplier
    error_rate: float  # base probability of a failed request in production
    cache_rate: float
    tail_rate: float  # share of requests that hit a slow provider queue
    headroom: float  # production capacity over the busiest hour's rate

    @property
    def description(self) -> str:
        kind = f"{self.archetype} agent on {self.model}" if self.model else f"{self.archetype} service (no LLM)"
        return f"Demo fleet: {kind}."


def _title(slug: str) -> str:
    return " ".join(_ACRONYMS.get(word, word.capitalize()) for word in slug.split("-"))


def _spec(row: tuple[str, str, str, str, str, str, str], department: str, suffix: str = "") -> AgentSpec:
    slug, team, intent, archetype, model, tier, profile = row
    if suffix:
        slug, tier = f"{slug}-{suffix}", _LOWER_TIER[tier]
    # Behaviour comes from the slug alone, so simulate and seed_demo agree without sharing a seed.
    rng = np.random.default_rng(zlib.crc32(slug.encode()))
    name = _title(row[0]) + (f" ({suffix.upper()})" if suffix else "")
    return AgentSpec(
        slug=slug,
        name=name,
        department=department,
        team=team,
        intent=intent,
        secondary_intent=SECONDARY_INTENT[archetype],
        archetype=archetype,
        model=model,
        profile=profile,
        weight=_TIER_WEIGHT[tier] * float(np.exp(rng.normal(0.0, 0.3))),
        speed=float(np.exp(rng.normal(0.0, 0.2))),
        error_rate=float(np.clip(0.005 * np.exp(rng.normal(0.0, 0.5)), 0.001, 0.03)),
        cache_rate=float(np.clip(ARCHETYPES[archetype].cache_rate * np.exp(rng.normal(0.0, 0.3)), 0.0, 0.6)),
        tail_rate=float(0.015 + 0.03 * rng.random()),
        headroom=1.1 if slug == NEAR_CAPACITY_AGENT else float(1.6 + 1.4 * rng.random()),
    )


def catalog(size: int | None = None) -> list[AgentSpec]:
    """The first `size` agents of the fleet (all of the base catalog first, then regional copies)."""
    return list(_full_catalog()[: max_agents() if size is None else size])


@functools.cache
def _full_catalog() -> tuple[AgentSpec, ...]:
    base = [(row, department) for department, rows in _CATALOG.items() for row in rows]
    agents = [_spec(row, department) for row, department in base]
    for suffix in _REGION_SUFFIXES:
        agents.extend(_spec(row, department, suffix) for row, department in base)
    return tuple(agents)


def base_size() -> int:
    return sum(len(rows) for rows in _CATALOG.values())


def max_agents() -> int:
    return base_size() * (1 + len(_REGION_SUFFIXES))


def department(slug: str) -> DepartmentSpec:
    return next(d for d in DEPARTMENTS if d.slug == slug)


def reports_deploys(agent: AgentSpec) -> bool:
    return next(t.reports_deploys for t in department(agent.department).teams if t.slug == agent.team)
