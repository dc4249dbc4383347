"""The services, declared once: the families each serves, its Bento, its source and port.

`shopml build` builds one Bento per service from its families' champions; `shopml serve`, the
main job and the load benchmark start them (`serving.runner`). Every model family is served by
exactly one service (tests/test_serving.py fails when a family has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from shopml.errors import ShopmlError


@dataclass(frozen=True)
class Service:
    """One BentoML service and its Bento."""

    name: str
    bento: str  # the Bento's name in the BentoML store
    source: str  # "module:Class" that `bentoml build` / `bentoml serve` load
    requires: tuple[str, ...]  # families without whose model the service is not built
    port: int  # default port of `shopml serve`
    optional: tuple[str, ...] = ()  # families it also serves when their model exists

    @property
    def families(self) -> tuple[str, ...]:
        return (*self.requires, *self.optional)


SERVICES = MappingProxyType(
    {
        "recommend": Service(
            "recommend",
            "shopml-recommend",
            "serving.recommend_service:RecommendService",
            requires=("recommender",),
            optional=("forecast",),
            port=3001,
        ),
        "fraud": Service(
            "fraud",
            "shopml-fraud",
            "serving.fraud_service:FraudService",
            requires=("fraud",),
            port=3002,
        ),
    }
)
SERVICE_OF_FAMILY = MappingProxyType({f: s.name for s in SERVICES.values() for f in s.families})


def service(name: str) -> Service:
    """The service called `name`; ShopmlError listing the known ones for anything else."""
    try:
        return SERVICES[name]
    except KeyError:
        raise ShopmlError(f"unknown service {name!r}; expected one of {sorted(SERVICES)}") from None
