"""A DICOM application entity on the network, as job requests and the DIMSE client name it.

Its own small module (pydantic only) because two layers need it: a DIMSE job request
(:mod:`service.jobs.requests`) carries its destination node, and :mod:`service.pacs.dimse` sends
to one. Neither layer may import the other's side for it: ``jobs/`` never imports ``pacs/``, and
submitting a job must not load pynetdicom.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

AE_TITLE = r"^[^\\]{1,16}$"  # 16 characters of the default repertoire, no backslash


class DicomNode(BaseModel):
    """A DICOM application entity on the network: AE title, host, port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aet: str = Field(pattern=AE_TITLE, description="its AE title (the called AE for a C-STORE)")
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"
