"""``medrobust-pacs`` (or ``python -m service.pacs.cli``): PACS work from the command line.

- ``analyze-study``: the DICOMweb round trip for one study, run here and now (no queue, no API):
  QIDO-RS, WADO-RS, the model, STOW-RS of the SR + SC; prints the summary as JSON, with the
  runtime that computed the probabilities (``--runtime``, default ``MEDROBUST_SERVE_RUNTIME``,
  behind the same parity gate and fallback as a worker's).
- ``submit``: the same as a job through a running API (``POST /jobs/pacs-study``); prints the
  job id, or with ``--wait`` the finished job.

It lives on the service side because it talks to networks; ``medrobust`` (``training/cli.py``)
stays free of ``service`` imports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, get_args

from service.config import Settings, get_settings

#: the runtimes the service can be configured with (without importing Keras to list them)
SERVE_RUNTIMES = get_args(Settings.model_fields["serve_runtime"].annotation)

TERMINAL = ("succeeded", "failed", "cancelled")


def _dicomweb_url(pacs: str) -> str:
    """``pacs`` is a base URL, or a PACS name from the settings (MEDROBUST_PACS_DICOMWEB)."""
    if pacs.startswith(("http://", "https://")):
        return pacs
    configured = get_settings().pacs_dicomweb
    if pacs not in configured:
        names = ", ".join(sorted(configured)) or "none"
        raise SystemExit(f"error: {pacs!r} is neither a URL nor a configured PACS ({names})")
    return configured[pacs]


def analyze_study_command(args: argparse.Namespace) -> int:
    from service.pacs.dicomweb import PacsError, analyze_study, dicomweb_client
    from training.model_ref import ModelRef
    from training.runtimes import ServingModel, runtime_summary, serving_forward
    from training.store import ModelStore, ModelStoreError

    settings = get_settings()
    store = ModelStore(args.store or settings.store_dir)
    try:
        ref = ModelRef.parse(args.model)
        loaded = store.load(ref.name, ref.selector)
    except (ModelStoreError, ValueError, OSError) as exc:
        print(f"error: cannot load model {args.model!r}: {exc}", file=sys.stderr)
        return 1
    manifest = loaded.manifest
    runtime = args.runtime or settings.serve_runtime
    forward = serving_forward(loaded, runtime, store.root / manifest.name / str(manifest.version))
    served = ServingModel(loaded.model, manifest, forward)
    client = dicomweb_client(_dicomweb_url(args.pacs), args.timeout)

    def progress(done: int, total: int) -> None:
        print(f"[medrobust-pacs] {done}/{total} instance(s)", file=sys.stderr, flush=True)

    try:
        summary = analyze_study(
            client,
            args.study,
            served,
            args.method,
            check_modality=not args.allow_modality_mismatch,
            max_instances=settings.pacs_max_instances,
            progress=progress,
        )
    except PacsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**summary.model_dump(mode="json"), **runtime_summary(served)}, indent=2))
    return 0


def submit_command(args: argparse.Namespace) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    body: dict[str, Any] = {
        "pacs": args.pacs,
        "study_uid": args.study,
        "model": args.model,
        "method": args.method,
        "allow_modality_mismatch": args.allow_modality_mismatch,
    }
    try:
        with httpx.Client(base_url=args.api, headers=headers, timeout=30) as client:
            response = client.post("/jobs/pacs-study", json=body)
            if response.status_code not in (200, 202):
                return _http_error(response)
            job_id = response.json()["job_id"]
            if not args.wait:
                print(json.dumps(response.json()))
                return 0
            while True:
                polled = client.get(f"/jobs/{job_id}")
                if polled.status_code != 200:  # e.g. the token lost its scope meanwhile
                    return _http_error(polled)
                job = polled.json()
                if job["state"] in TERMINAL:
                    print(json.dumps(job, indent=2))
                    return 0 if job["state"] == "succeeded" else 1
                time.sleep(1.0)
    except httpx.HTTPError as exc:  # the API is not running, or went away
        print(f"error: the API at {args.api} is unreachable: {exc}", file=sys.stderr)
        return 1


def _http_error(response: Any) -> int:
    print(f"error: HTTP {response.status_code}: {response.text}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medrobust-pacs", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(command: argparse.ArgumentParser, pacs_help: str) -> None:
        command.add_argument("--pacs", required=True, help=pacs_help)
        command.add_argument("--study", required=True, help="Study Instance UID")
        command.add_argument("--model", required=True, help="model ref NAME[:VERSION|ALIAS]")
        command.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"])
        command.add_argument(
            "--allow-modality-mismatch",
            action="store_true",
            help="analyse images whose modality/body part the model does not declare",
        )

    analyze = commands.add_parser("analyze-study", help="run the DICOMweb round trip here")
    common(analyze, "DICOMweb base URL (http://host:8042/dicom-web) or a configured PACS name")
    analyze.add_argument("--store", help="model store (default: MEDROBUST_STORE_DIR)")
    analyze.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    analyze.add_argument(
        "--runtime",
        choices=SERVE_RUNTIMES,
        help="runtime for the probabilities (default: MEDROBUST_SERVE_RUNTIME)",
    )
    analyze.set_defaults(run=analyze_study_command)

    submit = commands.add_parser("submit", help="queue it as a job through the API")
    common(submit, "a PACS name configured on the service (MEDROBUST_PACS_DICOMWEB)")
    submit.add_argument("--api", default="http://127.0.0.1:8000", help="the service's URL")
    submit.add_argument("--token", help="a bearer token with the 'jobs' scope")
    submit.add_argument("--wait", action="store_true", help="wait and print the finished job")
    submit.set_defaults(run=submit_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
