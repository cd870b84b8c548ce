#!/usr/bin/env bash
# Make sure the PACS tests' tools are installed: Orthanc with its DICOMweb plugin (the real PACS
# the round-trip tests start on loopback ports), dcmtk (storescu, the modality that pushes images)
# and dicom3tools (dciodvfy, which validates the SR and SC we write). Installs the missing Debian
# packages with apt-get when run as root; otherwise, or when apt-get fails (offline, no such
# package), it only says what is missing and those tests skip, naming it. `make test` runs this first.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/apt-packages.sh"

missing=()
[ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)

# the Debian package starts a system-wide Orthanc on :8042/:4242; the tests start their own
after_install() {
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
        echo "pacs tools: note: the system Orthanc service is running (the tests do not use it)"
    fi
}

ensure_packages "pacs tools" "orthanc, orthanc-dicomweb, dcmtk, dicom3tools" "the PACS tests" \
    "${missing[@]}"
