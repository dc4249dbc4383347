"""Job config sections made from an estimator's own `__init__`, so its defaults exist once.

`params_config(FraudScorer, ...)` is a ConfigModel whose fields are the constructor's keyword
parameters with their annotations and defaults; a job adds only range checks (`checks`) and
leaves out what it sets itself (`exclude`, e.g. feature names or the seed). Sections that
name a kind and its parameters (`kind = "ease"`, `params = {...}`) keep the constructor's
defaults by leaving them out; `check_kind_params` checks the names given.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import create_model
from pydantic.fields import FieldInfo

from models.base import Estimator
from shopml.config import ConfigModel


def params_config(
    estimator: type,
    *,
    exclude: tuple[str, ...] = (),
    checks: dict[str, FieldInfo] | None = None,
    name: str | None = None,
) -> type[ConfigModel]:
    """A ConfigModel of `estimator`'s constructor parameters (all but `exclude`), each with the
    constructor's default and annotation, narrowed by `checks` (name -> `Field(ge=1)` etc.)."""
    checks = dict(checks or {})
    hints = typing.get_type_hints(estimator.__init__)
    fields: dict[str, Any] = {}
    for param in inspect.signature(estimator.__init__).parameters.values():
        if param.name == "self" or param.name in exclude:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        if param.name in checks:
            annotation = Annotated[annotation, checks.pop(param.name)]
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    if checks:
        raise TypeError(f"{estimator.__name__} has no parameters {sorted(checks)} to check")
    doc = f"The parameters of {estimator.__name__} (defaults are the constructor's)."
    model = create_model(name or f"{estimator.__name__}Params", __base__=ConfigModel, **fields)
    model.__doc__ = doc
    return model


def check_kind_params(
    kinds: Mapping[str, type[Estimator]], kind: str, params: Mapping[str, Any]
) -> None:
    """ValueError naming the entries of `params` that the constructor of `kinds[kind]` does
    not take (so a typo fails when the config is read, not after the data has loaded)."""
    known = kinds[kind].param_names()  # models.base.Estimator: the `__init__` parameters
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"{kinds[kind].__name__} (kind {kind!r}) has no parameter {', '.join(unknown)}; "
            f"its parameters are {', '.join(known)}"
        )
