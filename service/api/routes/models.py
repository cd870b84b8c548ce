"""``/models``: what the store holds, each version's manifest, and aliases (admin).

A manifest records the training spec, whose paths say where the server keeps its data; only an
``admin`` token sees them as stored, every other caller sees them relative to their root
(``<data>/ham10000_200x150``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.auth import AdminCaller, Authenticated, authenticated_route
from service.api.deps import PathsDep, RegistryDep
from service.api.errors import ErrorResponse, Unprocessable
from service.api.models_registry import check_name
from training.model_ref import LATEST, NAME_PATTERN, ModelRef
from training.store import ModelManifest

# any valid token before the body is parsed (the alias PUT then also needs admin)
router = APIRouter(prefix="/models", tags=["models"], route_class=authenticated_route(None))

ERRORS: dict[int | str, dict] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse, "description": "no such model, version or alias"},
}


class ModelFamily(BaseModel):
    name: str
    versions: list[int]
    latest: int
    aliases: dict[str, int] = Field(description="alias -> version")
    loaded_versions: list[int] = Field(description="versions this process holds in memory")


class ModelList(BaseModel):
    models: list[ModelFamily]


class VersionSummary(BaseModel):
    version: int
    created_at: str
    architecture: str
    input_size: int
    class_names: list[str]
    weights_sha256: str
    aliases: list[str]
    loaded: bool


class ModelVersions(BaseModel):
    name: str
    aliases: dict[str, int]
    versions: list[VersionSummary]


class ManifestResponse(ModelManifest):
    """The stored manifest (config, metrics, sha256, provenance) and whether it is loaded."""

    loaded: bool


class AliasUpdate(BaseModel):
    version: int = Field(ge=1, description="the version the alias should point at")


class AliasResponse(BaseModel):
    name: str
    alias: str
    version: int
    previous: int | None = Field(description="the version it pointed at before, if any")
    weights_sha256: str


def _family(registry: RegistryDep, name: str) -> ModelFamily:
    versions = registry.store.versions(name)
    loaded = sorted(m.version for m in registry.loaded() if m.name == name)
    return ModelFamily(
        name=name,
        versions=versions,
        latest=versions[-1],
        aliases=registry.store.aliases(name),
        loaded_versions=loaded,
    )


@router.get("", response_model=ModelList, responses=ERRORS, summary="Stored models")
def list_models(_: Authenticated, registry: RegistryDep) -> ModelList:
    return ModelList(models=[_family(registry, name) for name in registry.store.names()])


@router.get(
    "/{name}", response_model=ModelVersions, responses=ERRORS, summary="One model's versions"
)
def show_model(name: str, _: Authenticated, registry: RegistryDep) -> ModelVersions:
    check_name(name)
    registry.store.resolve(name)  # 404 naming the stored models if absent
    loaded = {m.version for m in registry.loaded() if m.name == name}
    summaries = []
    for version in registry.store.versions(name):
        manifest = registry.store.manifest(name, str(version))
        summaries.append(
            VersionSummary(
                version=version,
                created_at=manifest.created_at,
                architecture=manifest.architecture.architecture,
                input_size=manifest.preprocess.input_size,
                class_names=manifest.class_names,
                weights_sha256=manifest.weights_sha256,
                aliases=manifest.aliases,
                loaded=version in loaded,
            )
        )
    return ModelVersions(name=name, aliases=registry.store.aliases(name), versions=summaries)


@router.get(
    "/{name}/{selector}",
    response_model=ManifestResponse,
    responses=ERRORS,
    summary="One version's manifest (by number, alias or 'latest')",
)
def show_version(
    name: str, selector: str, caller: Authenticated, registry: RegistryDep, paths: PathsDep
) -> ManifestResponse:
    ref = ModelRef.parse(f"{check_name(name)}:{selector}")  # ModelRefError → 404
    manifest = registry.store.manifest(ref.name, ref.selector)
    loaded = any(m.ref == manifest.ref for m in registry.loaded())
    fields = manifest.model_dump()
    if "admin" not in caller.scopes and fields["training_spec"] is not None:
        fields["training_spec"] = paths.redact_values(fields["training_spec"])
    return ManifestResponse(**fields, loaded=loaded)


@router.put(
    "/{name}/aliases/{alias}",
    response_model=AliasResponse,
    responses={**ERRORS, 422: {"model": ErrorResponse}},
    summary="Point an alias at a version (admin)",
)
async def set_alias(
    name: str, alias: str, update: AliasUpdate, _: AdminCaller, registry: RegistryDep
) -> AliasResponse:
    """The target version is loaded (and its sha256 verified) before the alias moves, so the
    next request by this alias is served by the new version without a cold start."""
    check_name(name)
    if alias == LATEST or alias.isdigit() or not NAME_PATTERN.match(alias):
        raise Unprocessable(f"alias {alias!r} must be a name other than 'latest', not a number")
    served = await registry.get(f"{name}:{update.version}")
    previous = registry.store.aliases(name).get(alias)
    try:
        await asyncio.to_thread(registry.store.set_alias, name, alias, update.version)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    return AliasResponse(
        name=name,
        alias=alias,
        version=update.version,
        previous=previous,
        weights_sha256=served.manifest.weights_sha256,
    )
