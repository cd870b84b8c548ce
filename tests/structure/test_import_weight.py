"""What the light processes load: job submission and the DIMSE listener stay off the ML stack,
and the API's image routes off the job queue.

Each check runs in a fresh interpreter (the test process itself has long imported everything)
and reads ``sys.modules`` there. Submitting a job needs the job database and the broker, not
Keras/TensorFlow (seconds of start-up and hundreds of MB per process) and not the worker's task
modules, which exist to call ``training/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = ("keras", "tensorflow", "pynetdicom", "service.worker")
QUEUE = ("celery", "kombu")  # Celery and its broker client


def loaded_after(code: str, names: tuple[str, ...] = NAMES) -> set[str]:
    """Which of ``names`` are in ``sys.modules`` after running ``code``."""
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted(n for n in {names!r} if n in sys.modules)))\n"
    )
    # the settings come from the probe, not from whatever the developer's shell exports
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MEDROBUST_") and key not in ("REDIS_URL", "DATABASE_URL")
    }
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_job_submission_loads_no_ml_stack_no_worker_and_no_dimse() -> None:
    assert loaded_after("import service.pacs.submit") == set()


def test_the_dimse_listener_with_its_job_runtime_loads_no_ml_stack_and_no_worker(
    tmp_path: Path,
) -> None:
    code = (
        "from pathlib import Path\n"
        "from service.config import Settings\n"
        "from service.pacs.listener import job_submitter\n"
        f"root = Path({str(tmp_path)!r})\n"
        "settings = Settings(state_dir=root / 'state', store_dir=root / 'models')\n"
        "submit, close = job_submitter(settings)  # job database + broker app, as main() does\n"
        "close()\n"
    )
    # pynetdicom is the listener's own network side; the rest must stay out
    assert loaded_after(code) == {"pynetdicom"}


def test_a_dimse_submission_loads_no_ml_stack(tmp_path: Path) -> None:
    spooled = tmp_path / "1.2.3.4.dcm"
    spooled.write_bytes(b"")  # submission checks that the file is there, not what it holds
    code = (
        "from pathlib import Path\n"
        "from service.config import Settings\n"
        "from service.jobs.errors import JobSpecError\n"
        "from service.pacs.submit import submit_dimse_job\n"
        f"root = Path({str(tmp_path)!r})\n"
        "settings = Settings(state_dir=root / 'state', store_dir=root / 'models',\n"
        "    dimse_destination_ae='DEST', dimse_destination_port=104, dimse_model='absent')\n"
        "try:\n"
        f"    submit_dimse_job(settings, [Path({str(spooled)!r})])\n"
        "except JobSpecError:\n"
        "    pass  # no model 'absent' in the store: refused, as the listener would be\n"
        "else:\n"
        "    raise SystemExit('a submission naming a missing model was accepted')\n"
    )
    assert loaded_after(code) == set()


@pytest.mark.parametrize("module", ["service.api.images", "service.api.upload"])
def test_the_image_route_helpers_load_no_job_queue(module: str) -> None:
    # they import the API's error mapper, which names the job-submission errors: those live
    # apart from the job runtime, so mapping them needs no Celery
    assert loaded_after(f"import {module}", QUEUE) == set()
