"""Runtime configuration, read from the environment once and passed through the app factory.

Nothing in opsgate reads the environment at import time: build a :class:`Settings` (for example
``Settings()``, which reads the variables below and an optional ``.env`` file) and hand it to
:func:`bot.app.create_app` or the CLI.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from actions.backends.vault_auth import (
    SERVICE_ACCOUNT_TOKEN,
    AppRoleLogin,
    KubernetesLogin,
    VaultLogin,
)


class Settings(BaseSettings):
    """The variables of README.md's 'Environment variables' table.

    ``slack_bot_token`` and ``slack_signing_secret`` are optional here because ``opsgate migrate``
    and ``opsgate policy`` do not need them; :meth:`require_slack` checks them for ``serve``.
    """

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    database_url: str = Field(
        default="sqlite:///./opsgate.db", validation_alias="OPSGATE_DATABASE_URL"
    )
    policy_path: str = Field(default="./policy.yml", validation_alias="OPSGATE_POLICY")
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias="SLACK_SIGNING_SECRET"
    )
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="SLACK_API_URL")
    kubeconfig: str | None = Field(default=None, validation_alias="KUBECONFIG")
    vault_addr: str | None = Field(default=None, validation_alias="VAULT_ADDR")
    vault_token: SecretStr | None = Field(default=None, validation_alias="VAULT_TOKEN")
    vault_auth: Literal["token", "approle", "kubernetes"] = Field(
        default="token",
        validation_alias="VAULT_AUTH",
        description=(
            "How opsgate gets its Vault token: token (VAULT_TOKEN, never renewed), approle "
            "(VAULT_ROLE_ID, VAULT_SECRET_ID) or kubernetes (VAULT_ROLE and the pod's service "
            "account token); the last two are renewed and acquired again when needed."
        ),
    )
    vault_role: str | None = Field(default=None, validation_alias="VAULT_ROLE")
    vault_role_id: str | None = Field(default=None, validation_alias="VAULT_ROLE_ID")
    vault_secret_id: SecretStr | None = Field(default=None, validation_alias="VAULT_SECRET_ID")
    vault_auth_mount: str | None = Field(
        default=None,
        validation_alias="VAULT_AUTH_MOUNT",
        description="Where the auth method is mounted (default: approle or kubernetes).",
    )
    vault_kubernetes_token_path: str = Field(
        default=SERVICE_ACCOUNT_TOKEN, validation_alias="VAULT_KUBERNETES_TOKEN_PATH"
    )
    vault_renew_interval: float = Field(
        default=60.0,
        gt=0,
        validation_alias="OPSGATE_VAULT_RENEW_INTERVAL",
        description="Seconds between two checks of the Vault token's TTL (approle, kubernetes).",
    )
    kube_request_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias="OPSGATE_KUBE_TIMEOUT",
        description="Seconds to wait for one Kubernetes API call before it counts as failed.",
    )

    rollout_timeout: float = Field(
        default=300.0,
        gt=0,
        validation_alias="OPSGATE_ROLLOUT_TIMEOUT",
        description="Seconds to follow a rollout after a change before reporting it stalled.",
    )
    rollout_poll_interval: float = Field(
        default=2.0,
        gt=0,
        validation_alias="OPSGATE_ROLLOUT_POLL_INTERVAL",
        description="Seconds between two reads of a workload while following its rollout.",
    )
    vault_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias="OPSGATE_VAULT_TIMEOUT",
        description="Seconds to wait for one Vault API call.",
    )
    sweep_interval: float = Field(
        default=30.0,
        gt=0,
        validation_alias="OPSGATE_SWEEP_INTERVAL",
        description="Seconds between sweeps for overdue grants, expired and escalated requests.",
    )
    drift_interval: float = Field(
        default=300.0,
        gt=0,
        validation_alias="OPSGATE_DRIFT_INTERVAL",
        description="Seconds between drift checks of the RoleBindings labelled managed-by opsgate.",
    )
    reminder_before: float = Field(
        default=600.0,
        ge=0,
        validation_alias="OPSGATE_REMINDER_BEFORE",
        description="Seconds before a grant ends that its grantee is reminded.",
    )
    instance: str = Field(
        default_factory=lambda: socket.gethostname(),
        validation_alias="OPSGATE_INSTANCE",
        description=(
            "This bot's name among those sharing the database (default: the host name), in its "
            "logs; its scheduled jobs live in memory, set again from the database at each start, "
            "and any of the replicas sweeps what is overdue."
        ),
    )
    workers: int = Field(
        default=8,
        ge=1,
        le=256,
        validation_alias="OPSGATE_WORKERS",
        description=(
            "Threads that run the work Slack's listeners hand off after their ack (previews, "
            "executions, notifications); separate from the threads that ack."
        ),
    )
    audit_webhook_url: str | None = Field(
        default=None,
        validation_alias="OPSGATE_AUDIT_WEBHOOK_URL",
        description="Where to POST each audit event (a SIEM collector); unset: no delivery.",
    )
    audit_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="OPSGATE_AUDIT_WEBHOOK_SECRET",
        description="The HMAC-SHA256 key of the X-Opsgate-Signature header of each delivery.",
    )
    audit_webhook_format: Literal["jsonl", "cloudevents"] = Field(
        default="jsonl",
        validation_alias="OPSGATE_AUDIT_WEBHOOK_FORMAT",
        description="Body of each delivery: the event object, or a CloudEvents 1.0 envelope.",
    )
    audit_webhook_interval: float = Field(
        default=5.0,
        gt=0,
        validation_alias="OPSGATE_AUDIT_WEBHOOK_INTERVAL",
        description="Seconds between two deliveries of what the webhook sink is owed.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        validation_alias="OPSGATE_LOG_FORMAT",
        description="text (for a terminal) or json (one JSON object per line, bot/logs.py).",
    )
    work_lease: float = Field(
        default=300.0,
        gt=0,
        validation_alias="OPSGATE_WORK_LEASE",
        description=(
            "Seconds a replica keeps the work it acked (a command, a click) before another "
            "replica sharing the database may take it over, if the first has not finished it "
            "(it died); a restart of the same OPSGATE_INSTANCE takes its own over at once."
        ),
    )
    usergroup_cache_ttl: float = Field(
        default=300.0,
        gt=0,
        validation_alias="OPSGATE_USERGROUP_TTL",
        description="Seconds a Slack user group's members are cached.",
    )

    @property
    def socket_mode(self) -> bool:
        """True when ``SLACK_APP_TOKEN`` is set: Slack is reached over Socket Mode, not HTTP."""
        return self.slack_app_token is not None

    def vault_login(self) -> VaultLogin | None:
        """The login of ``VAULT_AUTH`` (None for ``token``). Raises ``ValueError`` naming the
        variables it lacks."""
        if self.vault_auth == "approle":
            if not self.vault_role_id or self.vault_secret_id is None:
                raise ValueError("VAULT_AUTH=approle needs VAULT_ROLE_ID and VAULT_SECRET_ID")
            return AppRoleLogin(
                self.vault_role_id,
                self.vault_secret_id.get_secret_value(),
                mount=self.vault_auth_mount or "approle",
            )
        if self.vault_auth == "kubernetes":
            if not self.vault_role:
                raise ValueError("VAULT_AUTH=kubernetes needs VAULT_ROLE (the Vault role)")
            return KubernetesLogin(
                self.vault_role,
                token_path=self.vault_kubernetes_token_path,
                mount=self.vault_auth_mount or "kubernetes",
            )
        return None

    def require_slack(self) -> None:
        """Raise ``ValueError`` naming each Slack variable that ``opsgate serve`` lacks."""
        missing = []
        if self.slack_bot_token is None:
            missing.append("SLACK_BOT_TOKEN")
        if self.slack_signing_secret is None and not self.socket_mode:
            missing.append("SLACK_SIGNING_SECRET")
        if missing:
            raise ValueError(
                f"{' and '.join(missing)} must be set to serve Slack "
                "(see the README's 'Environment variables')."
            )
