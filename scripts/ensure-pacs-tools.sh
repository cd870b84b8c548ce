#!/usr/bin/env bash
# Make sure the PACS tests' tools are installed: Orthanc with its DICOMweb plugin (the real PACS
# the round-trip tests start on loopback ports), dcmtk (storescu, the modality that pushes images)
# and dicom3tools (dciodvfy, which validates the SR and SC we write). Installs the missing Debian
# packages with apt-get when run as root; otherwise it only says what is missing, and those tests
# skip, naming it. `make test` runs this first.
set -euo pipefail

missing=()
[ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)

if [ ${#missing[@]} -eq 0 ]; then
    echo "pacs tools: orthanc, orthanc-dicomweb, dcmtk, dicom3tools installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "pacs tools: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # the Debian package starts a system-wide Orthanc on :8042/:4242; the tests start their own
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
        echo "pacs tools: note: the system Orthanc service is running (the tests do not use it)"
    fi
    exit 0
fi

echo "pacs tools: missing ${missing[*]}; the PACS tests will skip." >&2
echo "            install them with: sudo apt-get install ${missing[*]}" >&2
exit 0
