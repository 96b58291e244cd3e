"""GET /models, POST /models/{version}/activate and GET /detectors."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from app.errors import (
    UNAUTHORIZED_RESPONSE,
    UnknownModelVersion,
    UnusableModelVersion,
    problem_responses,
)
from app.model_store import VERSION_PATTERN, ModelStoreError
from app.schemas.models import DetectorList, ModelInfo, ModelList
from app.security import RequireApiKey
from app.state import EngineDep, StateDep

router = APIRouter(tags=["models"])


def _info(manifest: dict[str, Any], active: str | None) -> ModelInfo:
    return ModelInfo(
        version=manifest["version"],
        created_at=manifest["created_at"],
        source=manifest.get("source", "unknown"),
        rows=manifest.get("rows", 0),
        services=manifest.get("services", 0),
        parameters=manifest.get("parameters", {}),
        library_versions=manifest.get("library_versions", {}),
        checksum=manifest.get("checksum", ""),
        active=manifest["version"] == active,
    )


@router.get(
    "/models",
    responses={
        200: {
            "description": "Stored versions, oldest first.",
            # Activating the oldest stored version is a rollback.
            "links": {
                "ActivateOldestModel": {
                    "operationId": "models-activate_model",
                    "parameters": {"version": "$response.body#/versions/0/version"},
                }
            },
        }
    },
)
async def list_models(state: StateDep) -> ModelList:
    """Stored model versions, oldest first, and which one is serving."""
    active = state.engine.model.version
    infos = []
    for version in state.store.versions():
        try:
            infos.append(_info(state.store.manifest(version), active))
        except ModelStoreError:
            continue  # damaged versions are not offered; the store logs why when loading
    return ModelList(active=active, versions=infos)


@router.post(
    "/models/{version}/activate",
    responses={
        200: {
            "description": "The version now serving.",
            "links": {"ListModels": {"operationId": "models-list_models"}},
        },
        **problem_responses(UnknownModelVersion, UnusableModelVersion),
        **UNAUTHORIZED_RESPONSE,
    },
    dependencies=[RequireApiKey],
)
async def activate_model(version: str, state: StateDep) -> ModelInfo:
    """Serve a stored version from now on; activating an older one is the rollback."""
    if not VERSION_PATTERN.match(version) or version not in state.store.versions():
        raise UnknownModelVersion(f"no model version {version!r}")
    try:
        # Reading the file and building the model's scoring tables takes tens of milliseconds:
        # in a thread, so scoring on the event loop goes on meanwhile.
        model = await asyncio.to_thread(state.store.load, version)
    except ModelStoreError as exc:
        raise UnusableModelVersion(str(exc)) from exc
    await state.trainer.activate(model)
    return _info(model.manifest, version)


@router.get("/detectors")
async def list_detectors(engine: EngineDep) -> DetectorList:
    """Every registered detector: its parameters, weight, and whether it contributes to scores."""
    return DetectorList(detectors=engine.detector_infos())
