"""Named errors of shopml. Every message names the offending table, field or value."""

from __future__ import annotations


class ShopmlError(Exception):
    """Base class of every error shopml raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(ShopmlError, ValueError):
    """A configuration file or object is invalid."""


class DataError(ShopmlError, ValueError):
    """Input data breaks the data contract (missing column, wrong type, null key, ...)."""


class SchemaMismatch(DataError):
    """Data has different columns or features than the model expects."""


class UnknownEntity(ShopmlError, KeyError):
    """An id (product, customer, run, model) that the model or registry has never seen."""

    def __init__(self, kind: str, ids):
        ids = list(ids)
        self.kind = kind
        self.ids = ids
        shown = ", ".join(repr(i) for i in ids[:10])
        more = f" (and {len(ids) - 10} more)" if len(ids) > 10 else ""
        super().__init__(f"unknown {kind}: {shown}{more}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class NotFittedError(ShopmlError, RuntimeError):
    """A model was used before fit() or load()."""


class RegistryError(ShopmlError, RuntimeError):
    """The model registry has no usable model for a request (e.g. no champion yet)."""
