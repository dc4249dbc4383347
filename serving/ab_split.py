"""The A/B split of the storefront: which customers get the recommender challenger's lists.

A customer's variant is a stable hash of the salt and their `customer_id` (BLAKE2b, 64 bits,
mapped onto [0, 1)): the same customer sees the same variant in every request, on every worker
and after every restart, and a share `s` of customers falls below `s`. A new salt draws a new
set of customers (a new experiment). A visitor without a customer id always gets the champion:
they cannot be followed from one request to the next.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from shopml.config import ConfigModel, parse_config
from shopml.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
_SCALE = float(1 << 64)


class ABSplitConfig(ConfigModel):
    """The share of customers served the challenger, and the salt of the hash."""

    share: float = Field(0.0, ge=0.0, le=1.0)
    salt: str = Field("shopml-ab", min_length=1, max_length=64)

    @classmethod
    def of(cls, settings: Settings) -> ABSplitConfig:
        """The split the settings configure (SHOPML_AB_SHARE, SHOPML_AB_SALT); ConfigError
        naming a bad one."""
        data = {"share": settings.ab_share, "salt": settings.ab_salt}
        return parse_config(data, cls, source="SHOPML_AB_SHARE / SHOPML_AB_SALT")


class ABSplit:
    """Variant of a customer: `challenger` for a configured share of them, else `champion`."""

    def __init__(self, config: ABSplitConfig) -> None:
        self.share = config.share
        self._key = config.salt.encode()[:64]

    @property
    def active(self) -> bool:
        return self.share > 0.0

    def variant(self, customer_id: str | None) -> str:
        if not customer_id or self.share <= 0.0:
            return CHAMPION
        digest = hashlib.blake2b(customer_id.encode(), digest_size=8, key=self._key).digest()
        return CHALLENGER if int.from_bytes(digest, "big") / _SCALE < self.share else CHAMPION
