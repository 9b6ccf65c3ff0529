"""The policy settings of the ``access`` kind (a rule's keys), validated with the policy file."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actions.durations import Duration, parse_duration
from actions.spec import Loc, RuleSettings, StrList

DEFAULT_DURATION = 3600
"""Seconds a grant lasts when neither the request nor the rule says (capped at max_duration)."""


class VaultGroup(BaseModel):
    """A role's Vault identity group in the long form of ``vault_groups``.

    ``group`` is the internal group's name; ``members_managed_elsewhere`` says the group also has
    members that someone else manages (a shared group): the drift check then leaves its members
    alone. Without it the group is dedicated to opsgate grants, and every member that no active
    grant accounts for is drift (removed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str = Field(min_length=1, max_length=253)
    members_managed_elsewhere: bool = False

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        """A bare group name is ``{group: NAME}``; anything but a name or a mapping is refused
        with the two forms."""
        if isinstance(value, str):
            return {"group": value}
        if isinstance(value, dict | VaultGroup):
            return value
        raise ValueError(
            "a Vault group is a name (opsgate-readers) or "
            "{group: NAME, members_managed_elsewhere: true|false}"
        )


class AccessSettings(RuleSettings):
    """A rule's settings for ``access``: the ``roles`` allowed (None: any ClusterRole; the first
    is the default), ``max_duration`` and ``default_duration`` (``1h``: one hour, capped at
    ``max_duration``, when absent) and ``vault_groups`` (role -> Vault identity group name, or
    :class:`VaultGroup`)."""

    max_duration: Duration | None = None
    default_duration: Duration | None = None
    roles: StrList | None = None
    vault_groups: dict[str, VaultGroup] = {}

    def group_names(self) -> dict[str, str]:
        """Role -> the name of its Vault identity group."""
        return {role: group.group for role, group in self.vault_groups.items()}

    def managed_elsewhere(self) -> dict[str, bool]:
        """Vault identity group name -> whether its members are managed elsewhere (True when
        any of this rule's roles marks it so)."""
        out: dict[str, bool] = {}
        for group in self.vault_groups.values():
            out[group.group] = out.get(group.group, False) or group.members_managed_elsewhere
        return out

    def problems(self) -> list[tuple[Loc, str]]:
        """A default longer than the maximum; a Vault group for a role the rule does not allow."""
        out: list[tuple[Loc, str]] = []
        if (
            self.default_duration is not None
            and self.max_duration is not None
            and parse_duration(self.default_duration) > parse_duration(self.max_duration)
        ):
            out.append((("default_duration",), "default_duration is longer than max_duration"))
        if self.roles is not None:
            for role in self.vault_groups:
                if role not in self.roles:
                    out.append(
                        (
                            ("vault_groups", role),
                            f"role '{role}' is not in the rule's roles ({', '.join(self.roles)})",
                        )
                    )
        marks: dict[str, set[bool]] = {}
        for group in self.vault_groups.values():
            marks.setdefault(group.group, set()).add(group.members_managed_elsewhere)
        for name, seen in marks.items():
            if len(seen) > 1:
                out.append(
                    (
                        ("vault_groups",),
                        f"Vault group '{name}' is marked members_managed_elsewhere for one role "
                        "and not for another; mark it the same way for every role",
                    )
                )
        return out

    def as_settings(self, *, applies: bool) -> dict[str, Any]:
        """``max_duration`` and ``default_duration`` in seconds (the default filled in when the
        rule decides access), ``roles``, ``vault_groups`` (role -> group name)."""
        max_duration = parse_duration(self.max_duration) if self.max_duration else None
        default_duration: int | None = None
        if self.default_duration is not None:
            default_duration = parse_duration(self.default_duration)
        elif applies:
            default_duration = min(DEFAULT_DURATION, max_duration or DEFAULT_DURATION)
        return {
            "roles": list(self.roles) if self.roles is not None else None,
            "max_duration": max_duration,
            "default_duration": default_duration,
            "vault_groups": self.group_names(),
        }
