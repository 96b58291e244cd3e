"""The model a service starts with: the active stored version, or a bootstrap one on first start."""

from __future__ import annotations

import logging

from app.model import Model, bootstrap_training_data, fit_model
from app.model_store import ModelStore
from app.settings import Settings

log = logging.getLogger(__name__)


def forest_parameters(settings: Settings) -> dict[str, float | int]:
    return {
        "contamination": settings.if_contamination,
        "n_estimators": settings.if_n_estimators,
        "max_samples": settings.if_max_samples,
        "random_state": settings.if_random_state,
    }


def load_or_bootstrap(store: ModelStore, settings: Settings) -> Model:
    model = store.load_active()
    if model is not None:
        return model
    log.info("no usable model in %s: fitting the bootstrap model", store.root)
    result = fit_model(
        bootstrap_training_data(), forest_parameters(settings), settings.baseline_warmup_events
    )
    model = store.save(result)
    store.activate(model.version)
    return model
