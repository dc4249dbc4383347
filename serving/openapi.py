"""`/docs.json` as a valid OpenAPI 3.0 document that says what the services really answer.

BentoML's generated document is kept for its infrastructure routes (`/livez`, `/readyz`,
`/metrics`), but each `@endpoint` is described again from its pydantic request and answer types
with every status the one error map (`serving.endpoints.ERRORS`) can give and the body of each.
Pydantic writes JSON Schema 2020-12; `to_openapi_30` rewrites what OpenAPI 3.0 lacks
(`anyOf [.., {type: null}]` -> `nullable`, `const`, numeric `exclusiveMinimum`) and drops
BentoML's private `root_input` marker, which validators refuse.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/{model}"
_TEXT = {"type": "string"}
ERROR_SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {**_TEXT, "description": "What was wrong, in a sentence"}},
    },
    "InvalidRequest": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {**_TEXT, "description": "One line naming every bad field"},
            "detail": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "loc", "msg"],
                    "properties": {
                        "type": {**_TEXT, "description": "Pydantic error type"},
                        "loc": {
                            "type": "array",
                            "items": {"anyOf": [_TEXT, {"type": "integer"}]},
                            "description": "Path of the field in the body",
                        },
                        "msg": _TEXT,
                    },
                },
            },
        },
    },
    "NotFoundError": {
        "type": "object",
        "required": ["error", "kind", "ids"],
        "properties": {
            "error": _TEXT,
            "kind": {**_TEXT, "description": "What was not found (product, category, ...)"},
            "ids": {"type": "array", "items": _TEXT, "description": "The unknown ids"},
        },
    },
    "ConflictError": {
        "type": "object",
        "required": ["error", "field"],
        "properties": {"error": _TEXT, "field": {**_TEXT, "description": "The field in conflict"}},
    },
}
STATUSES: dict[int, tuple[str, str]] = {
    400: ("InvalidRequest", "Invalid JSON or a field out of its schema (each one named)"),
    401: ("Error", "Missing or wrong bearer token (`Authorization: Bearer <token>`)"),
    403: ("Error", "Switched off on this server (no token configured for it, or beyond loopback)"),
    404: ("NotFoundError", "An unknown product, category or other id, named"),
    409: ("ConflictError", "Contradicts an earlier request with the same id"),
    413: ("Error", "Body larger than this server's limit (SHOPML_MAX_BODY_BYTES)"),
    415: ("Error", "Content-Type other than application/json"),
    422: ("Error", "Well-formed but not answerable (e.g. a time outside the accepted window)"),
    500: ("Error", "A bug: logged on the server without the request"),
    503: ("Error", "The service cannot answer this route now (model or store unavailable)"),
}


def openapi_document(base: dict, endpoints, protected: set[str]) -> dict:
    """BentoML's document `base` with each of `endpoints` (serving.endpoints.Endpoint)
    described from its types; `protected` routes need the bearer token."""
    doc = copy.deepcopy(base)
    doc.pop("servers", None)  # BentoML's "." is not a URL
    schemas: dict[str, Any] = dict(ERROR_SCHEMAS)
    for declared in endpoints:
        operation = doc["paths"].get(declared.route, {}).get("post", {})
        doc["paths"][declared.route] = {
            "post": _operation(declared, operation, declared.route in protected, schemas)
        }
    doc["components"] = {
        "schemas": {**_referenced(doc, base.get("components", {}).get("schemas", {})), **schemas}
    }
    if protected or any(e.headers for e in endpoints):
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return to_openapi_30(doc)


def _operation(declared, bentoml_op: dict, protected: bool, schemas: dict) -> dict:
    responses = {
        "200": _json("The answer", _schema_ref(declared.answers, schemas, "serialization"))
    }
    for status, (name, text) in sorted(STATUSES.items()):
        responses[str(status)] = _json(text, {"$ref": REF.format(model=name)})
    doc = inspect.getdoc(declared.handler) or ""
    operation = {
        "operationId": bentoml_op.get("operationId", declared.route.strip("/").replace("/", "_")),
        "tags": bentoml_op.get("tags", ["Service APIs"]),
        "summary": doc.split("\n\n")[0].replace("\n", " "),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _schema_ref(declared.request, schemas, "validation")}
            },
        },
        "responses": responses,
    }
    if protected or declared.headers:
        operation["security"] = [{"bearer": []}]
    return operation


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _schema_ref(model: type[BaseModel], schemas: dict, mode: str) -> dict:
    """Add `model` (and the models it uses) to `schemas`; a `$ref` to it."""
    schema = model.model_json_schema(ref_template=REF, mode=mode)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _referenced(doc: dict, available: dict) -> dict:
    """The components of `available` that `doc`'s paths still refer to (BentoML's own)."""
    found: dict[str, Any] = {}
    pending = [doc["paths"]]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name in available and name not in found:
                    found[name] = available[name]
                    pending.append(available[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def to_openapi_30(node):
    """Rewrite JSON Schema 2020-12 constructs into their OpenAPI 3.0 forms (recursively)."""
    if isinstance(node, list):
        return [to_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: to_openapi_30(v) for k, v in node.items() if k != "root_input"}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = {**rest[0], **node}
        elif len(rest) == 1:
            node["allOf"] = rest
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[flag] = node.pop(bound)
            node[bound] = True
    if node.get("default", 0) is None and not node.get("nullable"):
        del node["default"]
    if isinstance(node.get("examples"), list) and "type" in node:
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    return node
