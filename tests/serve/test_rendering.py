"""Errors rendered by protocol: one conversion, the body in the shape of the protocol the route belongs to
(OpenAI's error object on the OpenAI routes, ``{"error": "..."}`` elsewhere), the status the error carries,
Retry-After on a 503; and every route of the application renders its errors so."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from modelcycle.errors import NotFoundError, OverloadedError, RequestError
from modelcycle.serve.app import ROUTERS
from modelcycle.serve.protocols.openai import OpenAIRoute
from modelcycle.serve.rendering import ProtocolRoute


class Body(BaseModel):
    max_tokens: int = Field(le=10)


def app_raising() -> FastAPI:
    app = FastAPI()
    for prefix, route_class in (("/plain", ProtocolRoute), ("/openai", OpenAIRoute)):
        router = APIRouter(prefix=prefix, route_class=route_class)

        @router.post("/bad")
        def bad(body: Body) -> None:
            raise RequestError("prompt: one prompt per request")

        @router.post("/busy")
        def busy() -> None:
            raise OverloadedError("the queue is full")

        @router.post("/missing")
        def missing() -> None:
            raise NotFoundError("model 'x' is not served here")

        app.include_router(router)
    return app


def test_each_protocol_renders_its_errors_in_its_own_shape() -> None:
    client = TestClient(app_raising())
    plain = client.post("/plain/bad", json={"max_tokens": 1})
    assert (plain.status_code, plain.json()) == (400, {"error": "prompt: one prompt per request"})
    openai = client.post("/openai/bad", json={"max_tokens": 1})
    assert openai.status_code == 400
    assert openai.json() == {
        "error": {
            "message": "prompt: one prompt per request",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    missing = client.post("/openai/missing").json()["error"]
    assert missing["type"] == "not_found_error"
    for prefix in ("/plain", "/openai"):
        busy = client.post(f"{prefix}/busy")
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert "the queue is full" in str(busy.json()["error"])


def test_a_body_that_does_not_validate_is_a_400_naming_the_field() -> None:
    client = TestClient(app_raising())
    plain = client.post("/plain/bad", json={"max_tokens": 99})
    assert plain.status_code == 400
    assert plain.json()["error"].startswith("max_tokens: ")
    openai = client.post("/openai/bad", json={"max_tokens": 99})
    assert openai.status_code == 400
    assert openai.json()["error"]["param"] == "max_tokens"
    assert openai.json()["error"]["type"] == "invalid_request_error"
    empty = client.post("/plain/bad", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 400
    assert empty.json()["error"].startswith("body: ")


def test_every_route_of_the_server_renders_its_errors_by_protocol() -> None:
    routes = [route for router in ROUTERS for route in router.routes]
    assert len(routes) > 20
    assert all(isinstance(route, ProtocolRoute) for route in routes), [
        route.path for route in routes if not isinstance(route, ProtocolRoute)
    ]
    openai = {route.path for route in routes if isinstance(route, OpenAIRoute)}
    assert openai == {"/v1/models", "/v1/completions", "/v1/chat/completions"}
