from django.apps import AppConfig


class AccessConfig(AppConfig):
    """Roles (managers, engineers, viewers), department scoping and API tokens."""

    name = "perfops.access"
    label = "access"
    verbose_name = "Access"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from perfops import strictness
        from perfops.access import audit, schema  # noqa: F401  (auditlog and OpenAPI registration)
        from perfops.access.roles import sync_role_groups

        strictness.install()

        post_migrate.connect(sync_role_groups, dispatch_uid="perfops.access.sync_role_groups")
