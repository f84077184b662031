"""The HTTP API described: `/openapi.json` (OpenAPI 3.1, every route of the app) and `/docs` (Swagger UI).

Request and answer bodies are pydantic models declared here once; the decoding options come from the
GenerationOptions dataclass itself, each with its docstring line (s2s_runtime.docstrings), so the description cannot
drift from what the server accepts (tests/serving/http/test_openapi.py checks the fields against the parsers).
Validation stays in requests.py and v2.py, whose error messages name the field at fault.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ... import __version__
from ...config import GenerationOptions
from ...docstrings import field_help

SWAGGER_UI = """<!doctype html>
<html><head><title>s2s-runtime API</title><meta charset="utf-8">
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div><script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"})</script></body></html>"""


def models() -> dict[str, Any]:
    """The body models, by schema name."""
    from pydantic import BaseModel, ConfigDict, Field, create_model

    helps = field_help(GenerationOptions)
    Options = create_model(  # type: ignore[call-overload]
        "GenerationOptions",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Decoding options (s2s_runtime.GenerationOptions); every one optional.",
        **{
            f.name: (f.type, Field(default=f.default, description=helps[f.name]))
            for f in dataclasses.fields(GenerationOptions)
        },
    )

    class GenerateBody(BaseModel):
        """POST /v1/generate."""

        model_config = ConfigDict(extra="forbid")
        inputs: str | list[str | list[str]] = Field(description="one text, or a list of texts or token lists")
        options: Options | None = None  # type: ignore[valid-type]
        target_prefix: list[str | list[str] | None] | None = Field(None, description="one prefix (or null) per input")
        stream: bool = Field(False, description="server-sent events of one input's tokens")

    class Hypothesis(BaseModel):
        text: str
        tokens: list[str]
        ids: list[int]
        score: float
        normalized_score: float
        finished: bool
        attention: list[list[float]] | None = None

    class Result(Hypothesis):
        unknown_source_tokens: int
        hypotheses: list[Hypothesis]

    class GenerateAnswer(BaseModel):
        results: list[Result]

    class ErrorDetail(BaseModel):
        type: str
        message: str
        request_id: str

    class Error(BaseModel):
        """An error of /v1 and the service routes."""

        error: ErrorDetail

    class Tensor(BaseModel):
        name: str
        shape: list[int]
        datatype: str
        data: list[Any] | None = None
        parameters: dict[str, Any] | None = None

    class InferRequest(BaseModel):
        """Open Inference Protocol v2: one input, `text_input` (BYTES, shape [n]); decoding options as parameters."""

        id: str | None = None
        parameters: dict[str, Any] | None = None
        inputs: list[Tensor]
        outputs: list[dict[str, Any]] | None = None

    class InferResponse(BaseModel):
        model_name: str
        model_version: str
        id: str | None = None
        outputs: list[Tensor]

    class V2Error(BaseModel):
        """An error of the /v2 routes."""

        error: str
        request_id: str

    class GenerateRequest(BaseModel):
        """Triton's generate extension."""

        id: str | None = None
        text_input: str
        parameters: dict[str, Any] | None = None

    class GenerateResponse(BaseModel):
        model_name: str
        model_version: str
        text_output: str

    bodies = (GenerateBody, GenerateAnswer, Error, InferRequest, InferResponse, V2Error, GenerateRequest)
    return {m.__name__: m for m in (*bodies, GenerateResponse)}


def document(routes: list[Any]) -> dict:
    """The OpenAPI document of an app's `routes` (each path and method; every one is described)."""
    from pydantic.json_schema import models_json_schema

    bodies = models()
    _, schemas = models_json_schema(
        [(model, "validation") for model in bodies.values()], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict] = {}
    for route in routes:
        for method in sorted(route.methods - {"HEAD"}):
            operation = OPERATIONS[(method, route.path)]
            paths.setdefault(route.path, {})[method.lower()] = _operation(route.path, *operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "s2s-runtime", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {})},
    }


def _operation(path: str, summary: str, request: str | None, answer: str | None, errors: str) -> dict:
    def body(name: str | None, media: str = "application/json") -> dict:
        return {media: {"schema": {"$ref": f"#/components/schemas/{name}"}}} if name else {media: {}}

    responses: dict[str, Any] = {"200": {"description": "the answer", "content": body(answer)}}
    if answer == "events":
        responses["200"]["content"] = {"text/event-stream": {}}
    elif answer is None:
        responses["200"]["content"] = {"text/plain": {}}
    for status in STATUSES[errors]:
        responses[str(status)] = {"description": DESCRIPTIONS[status], "content": body(errors)}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if request:
        operation["requestBody"] = {"required": True, "content": body(request)}
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    if names:
        operation["parameters"] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
    return operation


DESCRIPTIONS = {
    400: "a bad request or input (the message names it)",
    404: "no such route or model",
    405: "method not allowed",
    408: "the request did not arrive in time",
    413: "too large: body, inputs or the answer's bound",
    503: "overloaded, not ready, or shutting down",
    504: "the request's deadline passed",
}
DECODING = (400, 404, 405, 408, 413, 503, 504)
STATUSES = {"Error": DECODING, "V2Error": DECODING, "none": ()}
# (method, path) → summary, request schema, answer schema ("events": server-sent events, None: text), error schema
OPERATIONS: dict[tuple[str, str], tuple[str, str | None, str | None, str]] = {
    ("POST", "/v1/generate"): ("decode inputs (or stream one)", "GenerateBody", "GenerateAnswer", "Error"),
    ("GET", "/healthz"): ("the process is up", None, "", "none"),
    ("GET", "/readyz"): ("ready to decode (503 while starting or draining)", None, "", "none"),
    ("GET", "/metrics"): ("Prometheus metrics", None, None, "none"),
    ("GET", "/openapi.json"): ("this document", None, "", "none"),
    ("GET", "/docs"): ("interactive documentation", None, None, "none"),
    ("GET", "/v2/health/live"): ("OIP v2: live", None, "", "none"),
    ("GET", "/v2/health/ready"): ("OIP v2: ready", None, "", "none"),
    ("GET", "/v2"): ("OIP v2: server metadata", None, "", "none"),
    ("GET", "/v2/models/{model}"): ("OIP v2: model metadata", None, "", "V2Error"),
    ("GET", "/v2/models/{model}/versions/{version}"): ("OIP v2: model metadata", None, "", "V2Error"),
    ("GET", "/v2/models/{model}/ready"): ("OIP v2: model ready", None, "", "V2Error"),
    ("GET", "/v2/models/{model}/versions/{version}/ready"): ("OIP v2: model ready", None, "", "V2Error"),
    ("POST", "/v2/models/{model}/infer"): ("OIP v2: infer", "InferRequest", "InferResponse", "V2Error"),
    ("POST", "/v2/models/{model}/versions/{version}/infer"): (
        "OIP v2: infer",
        "InferRequest",
        "InferResponse",
        "V2Error",
    ),
    ("POST", "/v2/models/{model}/generate"): ("Triton generate", "GenerateRequest", "GenerateResponse", "V2Error"),
    ("POST", "/v2/models/{model}/generate_stream"): (
        "Triton generate, streamed",
        "GenerateRequest",
        "events",
        "V2Error",
    ),
}
