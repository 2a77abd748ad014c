"""The admin API (bearer token from ``MODELCYCLE_ADMIN_TOKEN``): promote a version, send a share of traffic to
a canary, mirror traffic to a shadow, roll back. Each change swaps versions in process with no failed
request and is recorded as an event in the registry; a version that fails to load changes nothing."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from modelcycle.errors import AuthError, ConfigError, NotFoundError
from modelcycle.registry.lookup import PRODUCTION
from modelcycle.serve.app import ServerState, serving_state
from modelcycle.serve.versions import LoadedVersion, ServedModel

ACTOR = "modelcycle serve (admin API)"


def admin_state(request: Request) -> ServerState:
    """The server state, once the bearer token checks out (compared in constant time)."""
    state = serving_state(request)
    if state.admin_token is None:
        raise AuthError(
            "the admin API is disabled",
            hint="start one server process (no --workers) with MODELCYCLE_ADMIN_TOKEN set",
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), state.admin_token.encode()):
        raise AuthError("a valid 'Authorization: Bearer <token>' header is required")
    return state


Admin = Annotated[ServerState, Depends(admin_state)]
router = APIRouter(prefix="/admin/models", tags=["admin"])


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

    return {
        "name": served.name,
        "primary": describe(served.primary),
        "canary": describe(served.canary),
        "canary_percent": served.canary_percent if served.canary else 0.0,
        "shadow": describe(served.shadow),
        "shadow_requests": served.shadow_requests,
        "shadow_disagreements": served.shadow_disagreements,
        "previous": served.previous,
    }


async def _loaded(state: ServerState, served: ServedModel, version: int) -> LoadedVersion:
    """The version in memory if this server holds it already, else freshly loaded and warmed."""
    for loaded in served.versions():
        if loaded.version == version:
            return loaded
    return await state.load(f"{served.name}@{version}", state.settings.variant)


@router.get("/{name}")
def model_status(name: str, state: Admin) -> dict[str, Any]:
    return status(state.model(name))


@router.post("/{name}/promote")
async def promote(name: str, body: VersionBody, state: Admin) -> dict[str, Any]:
    served = state.model(name)
    incoming = await _loaded(state, served, body.version)
    outgoing = served.primary
    if incoming is not outgoing:
        served.primary = incoming  # new requests go to it from here on
        served.previous.append(outgoing.version)
        if served.canary is incoming:
            served.canary, served.canary_percent = None, 0.0
        served.retire(outgoing)
    state.registry.set_alias(
        f"{name}@{body.version}", PRODUCTION, actor=ACTOR, reason="promoted on the server"
    )
    state.describe()
    return status(served)


@router.post("/{name}/canary")
async def canary(name: str, body: CanaryBody, state: Admin) -> dict[str, Any]:
    served = state.model(name)
    if body.version == served.primary.version:
        raise ConfigError(f"version {body.version} is already the primary of '{name}'")
    old = served.canary
    if body.percent == 0:
        served.canary, served.canary_percent = None, 0.0
    else:
        served.canary, served.canary_percent = await _loaded(state, served, body.version), body.percent
    served.retire(old)
    state.registry.log_event(
        name, "canary", version=body.version, actor=ACTOR, details={"percent": body.percent}
    )
    state.describe()
    return status(served)


@router.post("/{name}/shadow")
async def shadow(name: str, body: ShadowBody, state: Admin) -> dict[str, Any]:
    served = state.model(name)
    old = served.shadow
    served.shadow = None if body.version is None else await _loaded(state, served, body.version)
    served.shadow_requests = served.shadow_disagreements = 0
    served.retire(old)
    state.registry.log_event(name, "shadow", version=body.version, actor=ACTOR)
    state.describe()
    return status(served)


@router.post("/{name}/rollback")
async def rollback(name: str, state: Admin) -> dict[str, Any]:
    """Back to the version that was primary before the last promotion (and no canary)."""
    served = state.model(name)
    if not served.previous:
        raise NotFoundError(f"'{name}' has no earlier primary on this server to roll back to")
    target = served.previous[-1]
    incoming = await _loaded(state, served, target)
    outgoing, old_canary = served.primary, served.canary
    served.primary, served.canary, served.canary_percent = incoming, None, 0.0
    served.previous.pop()
    served.retire(outgoing)
    served.retire(old_canary)
    state.registry.set_alias(f"{name}@{target}", PRODUCTION, actor=ACTOR, reason="rolled back on the server")
    state.registry.log_event(
        name, "rollback", version=target, actor=ACTOR, details={"from_version": outgoing.version}
    )
    state.describe()
    return status(served)
