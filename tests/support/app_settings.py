"""Settings of an in-process app (``TestClient(create_app(settings))``) whose every file lies under
one temporary folder, whatever the environment running the tests sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.config import Settings


def local_settings(root: Path, **settings: Any) -> Settings:
    """``root/models`` the model store, ``root/state`` the state (SQLite job database, embedded
    broker: the ``make run`` setup), ``root/data`` the data root, and no Redis nor database
    server even where ``REDIS_URL`` / ``DATABASE_URL`` are set, so no other test's Redis flush
    interferes; ``settings`` are further fields of :class:`~service.config.Settings`."""
    return Settings(
        store_dir=root / "models",
        state_dir=root / "state",
        data_dir=root / "data",
        redis_url=None,
        database_url=None,
        **settings,
    )
