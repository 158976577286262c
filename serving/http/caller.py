"""Who is calling: the one caller type every route sees."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEV_CALLER",
    "OPERATOR_CALLER",
    "Caller",
    "CallerKind",
    "is_loopback",
    "link_caller",
]

CallerKind = Literal["jwt", "api-key", "link", "operator", "dev"]


class Caller(BaseModel):
    """An authenticated caller.

    Attributes:
        iss: the JWT issuer, ``"api-key"``, ``"tonle-link"``, ``"tonle-metrics-token"``
            or ``"dev"``.
        sub: the JWT subject or the API key id.
        tenant: the hospital the caller belongs to, from configuration only (the
            issuer's ``tenant`` or the API key's record), never from the request.
        kind: how the caller proved who it is.
    """

    model_config = ConfigDict(frozen=True)

    iss: str
    sub: str | None
    tenant: str | None
    kind: CallerKind

    def owns(self, iss: str | None, tenant: str | None) -> bool:
        """Whether something made for a caller of ``iss`` / ``tenant`` belongs to this one:
        the same tenant, or, where no tenant is configured, the same issuer."""
        if self.tenant is not None or tenant is not None:
            return self.tenant == tenant
        return self.iss == iss


DEV_CALLER = Caller(iss="dev", sub=None, tenant=None, kind="dev")
# Whoever holds the metrics token (TONLE_METRICS_TOKEN): the scraper or an operator,
# of no tenant; it reads the service's own figures, never a patient's.
OPERATOR_CALLER = Caller(iss="tonle-metrics-token", sub=None, tenant=None, kind="operator")


def link_caller(tenant: str | None = None) -> Caller:
    """Whoever opens a signed link (a browser without credentials). The link names one
    thing; its tenant is that thing's, known once it is found (None before)."""
    return Caller(iss="tonle-link", sub=None, tenant=tenant, kind="link")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an IP address literal) is a loopback address."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
