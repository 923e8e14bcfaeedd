"""The vendored EDC Management API specs (``../shared/specs/edc/``) as validators for the gateway's requests.

- v3: the OpenAPI of Management API 3.1.6, through openapi-core (request and response validation);
- v4: the JSON schemas EDC 0.18 validates v4 bodies with (draft 2019-09, resolved offline with
  ``referencing``), plus the method and path checked against the OpenAPI of 4.1.0 (that file fails
  openapi-core's own spec check: duplicate operation ids, and a ``oneOf`` that every atomic constraint
  matches twice, so its bodies are not validated with it).

The specs' README lists two quirks, handled here: PyYAML's ``value`` tag for a bare ``=`` in 3.1.6,
and 3.1.6 typing ``Criterion.operandLeft``/``operandRight`` as objects where EDC sends strings.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft201909Validator
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT201909

ROOT = Path(__file__).resolve().parent.parent


def specs_dir() -> Path:
    """``$DS4H_EDC_SPECS``, else ``shared/specs/edc`` beside (or above) the checkout."""
    env = os.environ.get("DS4H_EDC_SPECS")
    if env:
        return Path(env)
    for base in (ROOT.parent, *ROOT.parents):
        candidate = base / "shared" / "specs" / "edc"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the vendored EDC specs (../shared/specs/edc/) are missing; set DS4H_EDC_SPECS")


V3_FILE = "edc-management-api-3.1.6.yaml"
V4_FILE = "edc-management-api-4.1.0.yaml"
SCHEMAS = "schemas-v0.18.0"
V4_ID = "https://w3id.org/edc/connector/management/schema/v4/"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


@functools.cache
def _yaml(name: str) -> dict[str, Any]:
    with open(specs_dir() / name, encoding="utf-8") as f:
        doc: dict[str, Any] = yaml.load(f, Loader=_Loader)
    return doc


@functools.cache
def openapi_v3() -> OpenAPI:
    doc = copy.deepcopy(_yaml(V3_FILE))  # a private copy to loosen
    crit = doc["components"]["schemas"]["Criterion_1"]["properties"]
    crit["operandLeft"] = {"type": "string"}  # quirk 2: EDC sends and accepts strings here
    crit["operandRight"] = {}
    return OpenAPI.from_dict(doc)


@functools.cache
def _registry() -> Registry:
    resources = []
    for path in sorted((specs_dir() / SCHEMAS).rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        resources.append((doc["$id"], Resource.from_contents(doc, default_specification=DRAFT201909)))
    return Registry().with_resources(resources)


@functools.cache
def v4_validator(schema: str) -> Draft201909Validator:
    registry = _registry()
    contents = registry.contents(V4_ID + schema)
    return Draft201909Validator(contents, registry=registry)


@functools.cache
def _v4_routes() -> tuple[tuple[re.Pattern[str], frozenset[str]], ...]:
    routes = []
    for template, ops in _yaml(V4_FILE)["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        routes.append((pattern, frozenset(m.upper() for m in ops if m in ("get", "post", "put", "delete"))))
    return tuple(routes)


def v4_request_schema(method: str, path: str) -> str | None:
    """The JSON schema of a v4 request body on the gateway's collections (``None``: no body)."""
    m = re.fullmatch(r"/v4/(assets|policydefinitions|contractdefinitions)(?:/([^/]+))?", path)
    if m is None or method in ("GET", "DELETE"):
        return None
    if m.group(2) == "request":
        return "query-spec-schema.json"
    return {
        "assets": "asset-schema.json",
        "policydefinitions": "policy-definition-schema.json",
        "contractdefinitions": "contract-definition-schema.json",
    }[m.group(1)]


def _errors(validator: Draft201909Validator, body: Any, where: str) -> list[str]:
    return [
        f"{where}: {'/'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}"
        for e in validator.iter_errors(body)
    ]


def request_errors(api: str, method: str, path: str, body: Any) -> list[str]:
    """Why a request does not conform to the vendored spec of ``api`` (empty: it does)."""
    where = f"{method} {path}"
    if api == "v3":
        data = None if body is None else json.dumps(body)
        req = MockRequest("http://edc.test", method.lower(), path, data=data, content_type="application/json")
        try:
            openapi_v3().validate_request(req)
        except Exception as e:  # openapi-core raises a family of errors; any means "does not conform"
            return [f"{where}: {type(e).__name__}: {e}"]
        return []
    if not any(p.match(path) and method in methods for p, methods in _v4_routes()):
        return [f"{where}: no such operation in Management API 4.1.0"]
    schema = v4_request_schema(method, path)
    if schema is None:
        return [] if body is None else [f"{where}: unexpected body"]
    return _errors(v4_validator(schema), body, where)


def response_errors(api: str, method: str, path: str, status: int, body: Any, request_body: Any = None) -> list[str]:
    """Why an answer of the test double does not conform to the spec (v3 OpenAPI; v4 schemas)."""
    where = f"{method} {path} → {status}"
    if api == "v3":
        data = None if request_body is None else json.dumps(request_body)
        req = MockRequest("http://edc.test", method.lower(), path, data=data, content_type="application/json")
        raw = b"" if body is None else json.dumps(body).encode()
        resp = MockResponse(raw, status_code=status, content_type="application/json" if body is not None else "")
        try:
            openapi_v3().validate_response(req, resp)
        except Exception as e:  # see request_errors
            return [f"{where}: {type(e).__name__}: {e}"]
        return []
    if status == 200 and method == "POST" and re.fullmatch(r"/v4/(assets|policydefinitions|contractdefinitions)", path):
        return _errors(v4_validator("id-response-schema.json"), body, where)
    if status == 200 and path.endswith("/validate"):
        return _errors(v4_validator("policy-validation-result-schema.json"), body, where)
    if status >= 400 and body is not None:
        if not isinstance(body, list):
            return [f"{where}: an error answer is a JSON array"]
        return [e for item in body for e in _errors(v4_validator("api-error-schema.json"), item, where)]
    return []
