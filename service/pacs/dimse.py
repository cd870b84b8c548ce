"""DIMSE out: send our result objects to a DICOM node by C-STORE (pynetdicom as the SCU).

A PACS or viewer that only speaks classic DICOM networking gets the SR and the Secondary Capture
this way. One association carries every dataset of one call; a refused association or a
non-success status raises :class:`DimseError` naming the node and the status, so a job fails
with a message an integrator can act on (wrong AE title, port, or the node refuses the SOP class).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from service.dicom_node import DicomNode

log = logging.getLogger(__name__)

#: C-STORE statuses that mean "stored": success, and the warnings for coerced / discarded elements
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


class DimseError(RuntimeError):
    """A C-STORE did not go through: association refused/aborted or a failure status."""


def send_datasets(
    datasets: Sequence[Dataset],
    destination: DicomNode,
    calling_aet: str = "MEDROBUST",
    timeout_s: float = 30.0,
) -> list[str]:
    """C-STORE ``datasets`` to ``destination`` over one association; returns the SOP Instance UIDs.

    Each dataset is offered in its own transfer syntax (from its file meta) and in both
    uncompressed little-endian syntaxes, so the receiver can pick what it accepts.
    """
    if not datasets:
        return []
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    offered: dict[str, list[str]] = {}
    for dataset in datasets:
        syntaxes = offered.setdefault(str(dataset.SOPClassUID), [])
        own = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        for syntax in (own, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if syntax is not None and str(syntax) not in syntaxes:
                syntaxes.append(str(syntax))
    for sop_class, syntaxes in offered.items():
        ae.add_requested_context(sop_class, syntaxes)

    association = ae.associate(destination.host, destination.port, ae_title=destination.aet)
    if not association.is_established:
        raise DimseError(
            f"the DICOM node {destination} refused or did not answer the association "
            f"(calling AE {calling_aet!r}); check its AE title, host, port and allow-list"
        )
    sent: list[str] = []
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code not in STORED_STATUSES:
                reason = "no answer (association aborted or timed out)" if code is None else ""
                raise DimseError(
                    f"C-STORE of a {dataset.SOPClassUID.name} to {destination} failed: "
                    f"{reason or f'status 0x{code:04X}'}"
                )
            sent.append(str(dataset.SOPInstanceUID))
    finally:
        if association.is_established:
            association.release()
    log.info("C-STORE: %d object(s) sent to %s", len(sent), destination)
    return sent
