"""The DIMSE node's settings refuse what would only fail later, per association."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_ae_titles_are_stripped_and_at_most_16_characters() -> None:
    settings = Settings(dimse_ae_title=" AI_NODE ", dimse_allowed_calling_aets=["ORTHANC "])
    assert settings.dimse_ae_title == "AI_NODE"
    assert settings.dimse_allowed_calling_aets == ["ORTHANC"]
    for bad in ("", "A" * 17):
        with pytest.raises(ValidationError):
            Settings(dimse_ae_title=bad)


def test_explain_method_is_one_the_worker_runs() -> None:
    assert Settings(dimse_explain_method="gradcam++").dimse_explain_method == "gradcam++"
    with pytest.raises(ValidationError, match="dimse_explain_method"):
        Settings(dimse_explain_method="gradcm")
