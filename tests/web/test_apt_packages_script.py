"""``scripts/apt-packages.sh``'s ``ensure_packages``, which ``ensure-browser.sh`` and
``ensure-pacs-tools.sh`` call under ``set -euo pipefail`` before `make test` runs pytest: a
failed apt-get (no network, a locked dpkg) warns and returns 0, so the run goes on and the
browser and PACS tests skip naming what is missing, instead of `make test` stopping there.
apt-get and ``id`` (root) are stubs on ``PATH``: nothing is installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "apt-packages.sh"
CALLER = f"""
set -euo pipefail
. {SCRIPT}
after_install() {{ echo "after_install ran"; }}
ensure_packages "browser" "chromium, chromium-driver" "the browser tests" chromium chromium-driver
echo "the caller carried on"
"""


def run_with_apt_get(tmp_path: Path, apt_get_status: int) -> subprocess.CompletedProcess:
    """The caller above as root, with an apt-get that exits ``apt_get_status``."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in (("id", "echo 0"), ("apt-get", f"exit {apt_get_status}")):
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    path = f"{stubs}:/usr/bin:/bin"
    return subprocess.run(
        ["bash", "-c", CALLER], env={"PATH": path}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("status", [1, 100])
def test_a_failed_install_warns_and_the_caller_goes_on(tmp_path: Path, status: int) -> None:
    done = run_with_apt_get(tmp_path, status)

    assert done.returncode == 0, done.stderr
    assert "the caller carried on" in done.stdout
    assert "after_install ran" not in done.stdout
    assert "warning: apt-get could not install chromium chromium-driver" in done.stderr
    assert "the browser tests will skip" in done.stderr
    assert "install them with: sudo apt-get install chromium chromium-driver" in done.stderr


def test_a_successful_install_runs_the_callers_after_install(tmp_path: Path) -> None:
    done = run_with_apt_get(tmp_path, 0)

    assert done.returncode == 0, done.stderr
    assert "after_install ran" in done.stdout and "the caller carried on" in done.stdout
    assert "warning" not in done.stderr
