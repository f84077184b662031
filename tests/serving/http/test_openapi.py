"""/openapi.json: a valid OpenAPI document that lists every route of the app, with bodies that match the parsers."""

import dataclasses

import httpx
import pytest

import s2s_runtime
from s2s_runtime import GenerationOptions
from s2s_runtime.serving.http import create_app
from s2s_runtime.serving.http.requests import FIELDS
from tests.support.background_server import BackgroundServer

validator = pytest.importorskip("openapi_spec_validator")
pytest.importorskip("pydantic")


@pytest.fixture(scope="module")
def served(small_bundle):
    app = create_app(s2s_runtime.load(small_bundle, device="cpu"))
    with BackgroundServer(app) as running:
        yield app, httpx.get(f"{running.url}/openapi.json").json(), running


def test_the_document_is_valid_and_lists_every_route(served):
    app, document, _ = served
    validator.validate(document)
    for route in app.routes:
        for method in route.methods - {"HEAD"}:
            assert method.lower() in document["paths"][route.path], (method, route.path)


def test_the_bodies_are_the_parsers_fields(served):
    _, document, _ = served
    schemas = document["components"]["schemas"]
    assert set(schemas["GenerateBody"]["properties"]) == set(FIELDS)
    options = schemas["GenerationOptions"]["properties"]
    assert set(options) == {f.name for f in dataclasses.fields(GenerationOptions)}
    assert "beam" in options["strategy"]["description"]  # the docstring line of the option


def test_interactive_docs_are_served(served):
    _, _, server = served
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
