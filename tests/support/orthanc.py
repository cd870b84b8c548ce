"""A real Orthanc PACS for the PACS tests: Debian's ``/usr/sbin/Orthanc`` as a subprocess.

Use the ``orthanc`` fixture of ``tests/pacs/conftest.py``, or :func:`running_orthanc`. Each
server gets its own JSON configuration and temporary storage, HTTP and DICOM ports that were free
on 127.0.0.1 (Orthanc 1.10 has no bind-address option: it listens on all interfaces, but answers
HTTP for loopback clients only), authentication off, the DICOMweb plugin (Debian
``orthanc-dicomweb``) under ``/dicom-web/``, and the DICOM modalities it is told about (our AI
node among them) so that Orthanc can C-STORE to them. It accepts C-STOREs from any calling AE
title (``DicomAlwaysAllowStore``: the tests' senders need no registration) but only when called
by its own AE title (``DicomCheckCalledAet``: a wrong destination fails).

Nothing here is mocked: the tests talk DICOMweb, REST and DIMSE to the real server.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.net import free_port

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    *sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")),
)
ORTHANC_AET = "ORTHANC"
START_TIMEOUT_S = 30.0


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's shared library, or ``None`` when ``orthanc-dicomweb`` is absent."""
    return next((path for path in DICOMWEB_PLUGIN_CANDIDATES if path.is_file()), None)


def missing_tools() -> list[str]:
    """What the PACS tests need and this machine lacks (Debian package names)."""
    missing = []
    if not ORTHANC_BINARY.is_file():
        missing.append("orthanc")
    if dicomweb_plugin() is None:
        missing.append("orthanc-dicomweb")
    if shutil.which("storescu") is None:
        missing.append("dcmtk")
    return missing


def require_pacs_tools() -> None:
    """Skip, naming the packages, where Orthanc, its DICOMweb plugin or dcmtk is missing."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"PACS tools not installed: {' '.join(missing)} "
            "(run scripts/ensure-pacs-tools.sh as root, or apt-get install them)"
        )


@dataclass(frozen=True)
class Modality:
    """A DICOM node Orthanc may send to (C-STORE SCU) and accept from: AE title, host, port."""

    aet: str
    host: str
    port: int

    def as_config(self) -> list[Any]:
        return [self.aet, self.host, self.port]


@dataclass
class Orthanc:
    """A running Orthanc: its URLs, DICOM address, storage folder and REST helpers."""

    http_port: int
    dicom_port: int
    workdir: Path
    process: subprocess.Popen
    aet: str = ORTHANC_AET
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO-RS, WADO-RS and STOW-RS live under it)."""
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def get(self, path: str, **params: Any) -> Any:
        """GET a REST resource (``/studies``, ``/instances/{id}/tags?simplify``) as JSON."""
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def upload(self, dicom: bytes | Path) -> dict[str, Any]:
        """Store one Part 10 file through REST ``POST /instances``; returns Orthanc's answer."""
        body = dicom.read_bytes() if isinstance(dicom, Path) else dicom
        response = httpx.post(
            f"{self.url}/instances",
            content=body,
            headers={"Content-Type": "application/dicom"},
            timeout=60,
        )
        response.raise_for_status()
        return response.json()

    def storescu(self, *files: Path, calling_aet: str = "STORESCU") -> subprocess.CompletedProcess:
        """Push files to Orthanc's DICOM port with dcmtk's ``storescu`` (a real modality's way)."""
        command = [
            "storescu",
            "-aet",
            calling_aet,
            "-aec",
            self.aet,
            self.host,
            str(self.dicom_port),
            *map(str, files),
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    def put_modality(self, name: str, modality: Modality) -> None:
        """Tell the running Orthanc about one more DICOM node (REST ``PUT /modalities/{name}``)."""
        response = httpx.put(
            f"{self.url}/modalities/{name}",
            json={"AET": modality.aet, "Host": modality.host, "Port": modality.port},
            timeout=10,
        )
        response.raise_for_status()

    def study_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of one study with its main tags simplified (Orthanc ``/tools/find``)."""
        response = httpx.post(
            f"{self.url}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def orthanc_config(
    workdir: Path,
    http_port: int,
    dicom_port: int,
    modalities: Mapping[str, Modality],
    aet: str = ORTHANC_AET,
) -> dict[str, Any]:
    """The whole configuration: nothing is read from ``/etc/orthanc``."""
    plugin = dicomweb_plugin()
    return {
        "Name": "medrobust-test-pacs",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpDescribeErrors": True,
        "RemoteAccessAllowed": False,  # HTTP answers loopback clients only
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomCheckModalityHost": False,
        "DicomModalities": {name: modality.as_config() for name, modality in modalities.items()},
        "DicomModalitiesInDatabase": False,
        "DicomScuTimeout": 10,
        "SaveJobs": False,
        "StableAge": 2,
        "OverwriteInstances": False,
        "DeidentifyLogs": True,
        "Plugins": [str(plugin)] if plugin else [],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
    }


def _wait_until_ready(server: Orthanc, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with status {server.process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/system", timeout=2).status_code == 200:
                plugins = httpx.get(f"{server.url}/plugins", timeout=2).json()
                if "dicom-web" not in plugins:
                    raise RuntimeError(f"Orthanc runs without the DICOMweb plugin: {plugins}")
                return
        time.sleep(0.1)
    raise TimeoutError(
        f"Orthanc did not answer /system in {START_TIMEOUT_S} s:\n{server.log_tail()}"
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # Orthanc flushes its SQLite index on SIGTERM
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def running_orthanc(
    workdir: Path,
    modalities: Mapping[str, Modality] | None = None,
    aet: str = ORTHANC_AET,
    attempts: int = 3,
) -> Iterator[Orthanc]:
    """Start Orthanc in ``workdir`` (config, storage, log), yield it, stop it.

    Ports are picked free just before the start; if another process takes one in between,
    Orthanc exits and the start is retried with new ports.
    """
    missing = missing_tools()
    if "orthanc" in missing or "orthanc-dicomweb" in missing:
        raise RuntimeError(f"missing Debian packages: {', '.join(missing)}")
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _ in range(attempts):
        http_port, dicom_port = free_port(), free_port()
        if http_port == dicom_port:
            continue
        config_path = workdir / "orthanc.json"
        config = orthanc_config(workdir, http_port, dicom_port, modalities or {}, aet)
        config_path.write_text(json.dumps(config, indent=2))
        with open(workdir / "orthanc.log", "ab") as log:
            process = subprocess.Popen(
                [str(ORTHANC_BINARY), str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,  # a terminal's Ctrl-C goes to pytest, which stops it
            )
        server = Orthanc(http_port, dicom_port, workdir, process, aet)
        try:
            _wait_until_ready(server, time.monotonic() + START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as exc:
            _stop(process)
            last_error = exc
            continue
        try:
            yield server
        finally:
            _stop(process)
        return
    raise RuntimeError(f"Orthanc did not start after {attempts} attempts: {last_error}")
