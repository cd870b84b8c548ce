"""The settings the ``medrobust`` CLI and the service share: one name per setting.

Both tools read these through one class (the service's ``service.config.Settings`` extends it),
so ``MEDROBUST_STORE_DIR=/srv/models`` points the CLI's ``models list`` and the API at the same
model store. Every field is an environment variable with the ``MEDROBUST_`` prefix, or a line of a
``.env`` file in the working directory.

Renamed settings keep working under their old names for a while, with a ``FutureWarning`` (the
warning category Python shows to end users), so a deployment that still sets the old name is told
what to change instead of silently getting the default.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "MEDROBUST_"
# old environment variable -> the field it now sets (its new name: MEDROBUST_<FIELD>)
DEPRECATED_NAMES: dict[str, str] = {"MEDROBUST_STORE": "store_dir"}


def current_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


class DeprecatedNames(PydanticBaseSettingsSource):
    """Values from the old variable names, below every current source in priority.

    Warns once per process for each old name found; when the current name is also set, the old
    one is ignored and the warning says so.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the environment directly

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for old, field in DEPRECATED_NAMES.items():
            if not os.environ.get(old):
                continue
            new = current_name(field)
            if os.environ.get(new):
                message = f"{old} is deprecated and ignored, since {new} is set; unset {old}"
            else:
                message = f"{old} is deprecated: set {new} instead (both tools read it)"
                values[field] = os.environ[old]
            warnings.warn(message, FutureWarning, stacklevel=2)
        return values


class CoreSettings(BaseSettings):
    """What both the CLI and the service need: where models are stored and data is read."""

    # an empty variable (MEDROBUST_DATA_DIR=) means unset, not the current directory
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True
    )

    store_dir: Path = Field(
        Path("var/models"),
        description="model store (training.store), read by the CLI, the API and the workers",
    )
    data_dir: Path | None = Field(
        None,
        description="root of datasets named by relative paths; default: ../shared/data beside "
        "the checkout (training.data.registry.data_dir)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            DeprecatedNames(settings_cls),
            file_secret_settings,
        )
