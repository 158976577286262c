"""The CDS service interface: what every service behind ``/cds-services/{id}`` implements.

The route (:mod:`serving.cds_hooks`) authenticates the EHR, parses the hook request
strictly, checks the hook, then asks the service for its :class:`Answer`; the pipeline
commits the audit row before the cards leave. A service fills in the exchange's model,
cards and input hash; it never authenticates, parses or audits on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request

from serving.cds_models import CdsRequest, CdsService
from serving.http.audit import Exchange
from serving.http.caller import Caller

if TYPE_CHECKING:
    from serving.http.pipeline import Answer
    from serving.runtime import Runtime

__all__ = ["CdsCall", "CdsHandler"]


@dataclass
class CdsCall:
    """One authenticated, parsed hook call.

    Attributes:
        hook: the strictly parsed request (its ``hook`` is the service's).
        caller: the EHR (its tenant from configuration).
        lang: the card language negotiated for this call.
        exchange: the audit facts; the service sets model, cards and input hash.
        runtime: the running service.
        request: the HTTP request (headers only; its body is already read).
    """

    hook: CdsRequest
    caller: Caller
    lang: str
    exchange: Exchange
    runtime: Runtime
    request: Request


class CdsHandler(Protocol):
    """A CDS Hooks service: its discovery entry and how it answers a call."""

    @property
    def definition(self) -> CdsService:
        """The discovery entry (id, hook, title, prefetch templates)."""
        ...

    async def answer(self, call: CdsCall) -> Answer:
        """The cards for ``call`` (or no advice, with its reason).

        Raises:
            serving.body.BadRequest: the request cannot be answered as sent (audited
                as refused).
        """
        ...
