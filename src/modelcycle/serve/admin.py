"""The admin API (bearer token from ``MODELCYCLE_ADMIN_TOKEN``): promote a version, send a share of traffic to
a canary, mirror traffic to a shadow, roll back. Each route checks the token and calls the served model's
transition of the same name (``modelcycle.serve.served``), which swaps versions in process with no failed
request and records the change in the registry; a version that fails to load changes nothing."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from modelcycle.errors import AuthError
from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.served import ServedModel
from modelcycle.serve.state import ServerState, Transition, serving_state
from modelcycle.serve.transport import token_digest
from modelcycle.serve.versions import LoadedVersion

ACTOR = "modelcycle serve (admin API)"


def admin_state(request: Request) -> ServerState:
    """The server state, once the bearer token checks out (compared in constant time)."""
    state = serving_state(request)
    if state.admin_digest is None:
        raise AuthError(
            "the admin API is disabled",
            hint="start a single server process (one worker) with MODELCYCLE_ADMIN_TOKEN set",
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token_digest(token), state.admin_digest):
        raise AuthError("a valid 'Authorization: Bearer <token>' header is required")
    return state


Admin = Annotated[ServerState, Depends(admin_state)]
router = APIRouter(prefix="/admin/models", tags=["admin"], route_class=ProtocolRoute)


class VersionBody(BaseModel):
    version: int = Field(ge=1)


class CanaryBody(BaseModel):
    version: int = Field(ge=1)
    percent: float = Field(ge=0, le=100)


class ShadowBody(BaseModel):
    version: int | None = Field(default=None, ge=1)


def status(served: ServedModel) -> dict[str, Any]:
    def describe(loaded: LoadedVersion | None) -> dict[str, Any] | None:
        return None if loaded is None else {"version": loaded.version, "variant": loaded.variant}

    gateway = served.gateway
    return {
        "name": served.name,
        "primary": describe(gateway.primary),
        "canary": describe(gateway.canary),
        "canary_percent": gateway.canary_percent if gateway.canary else 0.0,
        "shadow": describe(gateway.shadow),
        "shadow_requests": gateway.shadow_requests,
        "shadow_disagreements": gateway.shadow_disagreements,
        "previous": served.previous,
    }


async def changed(state: ServerState, name: str, transition: Transition) -> dict[str, Any]:
    """Run ``transition`` on model ``name`` and answer its status, once every replica of a cluster has the
    change (``propagated``: whether they all took it; absent on a single server)."""
    propagated = await state.change(name, transition)
    answer = status(state.model(name))
    if propagated is not None:
        answer["propagated"] = propagated
    return answer


@router.get("/{name}")
def model_status(name: str, state: Admin) -> dict[str, Any]:
    return status(state.model(name))


@router.post("/{name}/promote")
async def promote(name: str, body: VersionBody, state: Admin) -> dict[str, Any]:
    return await changed(state, name, lambda served: served.promote(body.version, actor=ACTOR))


@router.post("/{name}/canary")
async def canary(name: str, body: CanaryBody, state: Admin) -> dict[str, Any]:
    return await changed(state, name, lambda served: served.canary(body.version, body.percent, actor=ACTOR))


@router.post("/{name}/shadow")
async def shadow(name: str, body: ShadowBody, state: Admin) -> dict[str, Any]:
    return await changed(state, name, lambda served: served.shadow(body.version, actor=ACTOR))


@router.post("/{name}/rollback")
async def rollback(name: str, state: Admin) -> dict[str, Any]:
    """Back to the version that was primary before the last promotion (and no canary)."""
    return await changed(state, name, lambda served: served.rollback(actor=ACTOR))
