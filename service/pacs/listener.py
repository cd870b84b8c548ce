"""The DIMSE "AI node": a C-STORE SCP that queues an analysis job for every association.

``python -m service.pacs.listener`` (``make run`` starts it when ``MEDROBUST_DIMSE_ENABLED`` is
true) listens on ``dimse_host:dimse_port`` as ``dimse_ae_title``. A modality or PACS pushes
images to it; when the association ends, the images it carried become one job (queue ``pacs``)
whose worker runs the model and C-STOREs the SR + Secondary Capture to the configured
destination.

- Only calling AE titles in ``dimse_allowed_calling_aets`` may associate (pynetdicom rejects the
  rest with "calling AE title not recognised"), and only when they call our AE title.
- Only image storage SOP classes (and C-ECHO) are accepted, in every transfer syntax this
  installation can decode (uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, RLE: pydicom's
  decoders and the pylibjpeg plugins), so nothing is accepted that the job could not read.
- Each instance is spooled as a reduced copy: the patient/study values the results must repeat,
  the UIDs they reference, and the pixel data with the attributes needed to render it. Everything
  else (institution, operators, private tags ...) is dropped before anything touches the disk.
  The job deletes the spooled files when it ends.
- Our own result objects (Manufacturer "medrobust") sent back, e.g. by a routing rule, are
  acknowledged and ignored, so a PACS that forwards everything cannot make us loop.
- Logs name AE titles, addresses, SOP classes, counts and job ids; never patient values.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.association import Association

# pynetdicom 3 creates its SOP class names (``Verification`` among them) with ``globals()`` at
# import time: the name is real at runtime, but pynetdicom's own type information cannot show it.
from pynetdicom.sop_class import _STORAGE_CLASSES, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from service.config import Settings, get_settings
from service.pacs.results import MANUFACTURER, SOURCE_KEYWORDS, STUDY_KEYWORDS

log = logging.getLogger("medrobust.dimse")

#: What a spooled copy keeps besides groups 0028 (pixel description, LUTs, windowing) and
#: 7FE0 (pixel data): the values the results repeat or reference, and what the model's
#: acceptance check and the decoder read.
SPOOL_KEYWORDS = (
    *SOURCE_KEYWORDS,
    *STUDY_KEYWORDS,
    "Modality",
    "BodyPartExamined",
    "InstanceNumber",
    "PatientOrientation",
    "Laterality",
    "ImageLaterality",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)
_KEPT_GROUPS = (0x0028, 0x7FE0)

#: A SOP Instance UID fit to name a spooled file: dot-separated digits (PS3.5 9.1; leading zeros,
#: which some devices write, are let through). Nothing else may reach a path.
SPOOLABLE_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

#: Submits one job for the files spooled from one association: (files, calling AE, key) → job id.
Submit = Callable[[list[Path], str, str], str]


def image_storage_classes() -> list[str]:
    """The SOP Class UIDs of every image storage SOP class pynetdicom knows."""
    return [uid for name, uid in _STORAGE_CLASSES.items() if "Image" in name]


def decodable_transfer_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data pydicom can decode here (plugins included)."""
    found = []
    for uid in AllTransferSyntaxes:
        try:
            available = get_decoder(UID(uid)).is_available
        except NotImplementedError:
            continue
        if available:
            found.append(str(uid))
    return found


def spool_copy(ds: Dataset) -> Dataset:
    """The reduced copy of a received instance that the analysis job needs (see module doc)."""
    kept = Dataset()
    for keyword in SPOOL_KEYWORDS:
        if keyword in ds:
            kept[keyword] = ds[keyword]
    for element in ds:
        if element.tag.group in _KEPT_GROUPS:
            kept[element.tag] = element
    return kept


@dataclass
class _Received:
    calling_aet: str
    folder: Path
    files: list[Path] = field(default_factory=list)


class Listener:
    """The C-STORE SCP. ``submit`` is called once per association that delivered images."""

    def __init__(self, settings: Settings, submit: Submit) -> None:
        if not settings.dimse_allowed_calling_aets:
            raise ValueError(
                "MEDROBUST_DIMSE_ALLOWED_CALLING_AETS is empty: name the AE titles of the "
                "modalities/PACS that may send images, e.g. '[\"ORTHANC\"]'"
            )
        self.settings = settings
        self.submit = submit
        self.spool_dir = settings.resolved_dimse_spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._received: dict[int, _Received] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title=settings.dimse_ae_title)
        self.ae.require_called_aet = True
        self.ae.require_calling_aet = list(settings.dimse_allowed_calling_aets)
        syntaxes = decodable_transfer_syntaxes()
        for sop_class in image_storage_classes():
            self.ae.add_supported_context(sop_class, syntaxes)
        self.ae.add_supported_context(Verification)  # C-ECHO: how a PACS admin tests a node
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Listen in background threads (returns at once)."""
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_CLOSE, self._on_close),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, self._on_accepted),
        ]
        address = (self.settings.dimse_host, self.settings.dimse_port)
        self._server = self.ae.start_server(address, block=False, evt_handlers=handlers)
        log.info(
            "DIMSE node %s listening on %s:%d; allowed calling AE titles: %s",
            self.settings.dimse_ae_title,
            *address,
            ", ".join(self.settings.dimse_allowed_calling_aets),
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ---- event handlers (pynetdicom runs each association in its own thread) -----------

    def _on_accepted(self, event: evt.Event) -> None:
        log.info("association from %s accepted", _peer(event.assoc))

    def _on_rejected(self, event: evt.Event) -> None:
        log.warning(
            "association from %s rejected (calling AE title not allowed, or wrong called AE)",
            _peer(event.assoc),
        )

    def _on_store(self, event: evt.Event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception:  # noqa: BLE001 - undecodable bytes from the network: refuse them
            log.warning("C-STORE from %s: dataset could not be parsed", _peer(event.assoc))
            return STATUS_CANNOT_UNDERSTAND
        if ds.get("Manufacturer") == MANUFACTURER:
            log.info("C-STORE from %s: our own result object, ignored", _peer(event.assoc))
            return STATUS_SUCCESS
        if not SPOOLABLE_UID.fullmatch(str(ds.get("SOPInstanceUID", ""))):
            # it names the spooled file: anything but digits and dots could leave the folder
            log.warning(
                "C-STORE from %s: missing or malformed SOP Instance UID", _peer(event.assoc)
            )
            return STATUS_CANNOT_UNDERSTAND
        received = self._association(event.assoc)
        try:
            path = _write_atomically(spool_copy(ds), ds.file_meta, received.folder)
        except OSError:
            log.exception("spooling an instance from %s failed", _peer(event.assoc))
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            received.files.append(path)
        log.info(
            "C-STORE from %s: %s stored (%d in this association)",
            _peer(event.assoc),
            UID(ds.SOPClassUID).name,
            len(received.files),
        )
        return STATUS_SUCCESS

    def _on_close(self, event: evt.Event) -> None:
        with self._lock:
            received = self._received.pop(id(event.assoc), None)
        if received is None or not received.files:
            return
        key = f"dimse-{received.folder.name}"
        try:
            job_id = self.submit(list(received.files), received.calling_aet, key)
        except Exception:  # noqa: BLE001 - log and keep the files for a retry by hand
            log.exception(
                "queueing %d instance(s) from %s failed; they stay in %s",
                len(received.files),
                received.calling_aet,
                received.folder,
            )
            return
        log.info(
            "queued job %s: %d instance(s) from %s",
            job_id,
            len(received.files),
            received.calling_aet,
        )

    def _association(self, assoc: Association) -> _Received:
        with self._lock:
            received = self._received.get(id(assoc))
            if received is None:
                folder = self.spool_dir / uuid.uuid4().hex
                folder.mkdir(parents=True)
                calling = str(assoc.requestor.ae_title).strip()
                received = self._received[id(assoc)] = _Received(calling, folder)
            return received


def _write_atomically(ds: Dataset, file_meta: FileMetaDataset, folder: Path) -> Path:
    """Write ``ds`` as a Part 10 file named by its SOP Instance UID; never a partial file."""
    ds.file_meta = file_meta
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    partial = folder / f".{path.name}.partial"
    ds.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
    return path


def _peer(assoc: Association) -> str:
    requestor = assoc.requestor
    return f"{str(requestor.ae_title).strip()!r}@{requestor.address}"


def job_submitter(settings: Settings) -> tuple[Submit, Callable[[], None]]:
    """Submit through the job layer (one runtime for the process); returns (submit, close)."""
    from service.jobs.runtime import JobRuntime
    from service.pacs.submit import submit_dimse_job

    runtime = JobRuntime(settings, sweep=False)

    def submit(files: list[Path], calling_aet: str, key: str) -> str:
        return submit_dimse_job(
            settings, files, calling_aet=calling_aet, runtime=runtime, idempotency_key=key
        )

    return submit, runtime.close


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.pacs.listener", description=__doc__.split("\n")[0]
    )
    parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [dimse] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug output shows datasets
    settings = get_settings()
    missing = [
        name
        for name, value in (
            ("MEDROBUST_DIMSE_DESTINATION_AE", settings.dimse_destination_ae),
            ("MEDROBUST_DIMSE_DESTINATION_PORT", settings.dimse_destination_port),
            ("MEDROBUST_DIMSE_MODEL", settings.dimse_model),
        )
        if not value
    ]
    if missing:
        log.error("the DIMSE node needs %s", ", ".join(missing))
        return 2
    submit, close = job_submitter(settings)
    try:
        listener = Listener(settings, submit)
    except ValueError as exc:
        log.error("%s", exc)
        close()
        return 2
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    listener.start()
    stop.wait()
    log.info("stopping the DIMSE node")
    listener.stop()
    close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
