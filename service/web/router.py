"""Serve the web viewer at ``/ui/`` from this package's ``static/`` folder, with the API routes
made for it: ``/session`` (the token's scopes) and ``/pacs`` (an image from a PACS study).

Every viewer answer carries a Content-Security-Policy that allows scripts, styles and requests
from this origin only (no ``unsafe-inline``, no ``eval``): the page shows images and text that
came from uploads and model stores, and a policy that forbids inline script makes an injection
inert. Images may also be ``data:`` (the overlays arrive base64-encoded in ``/explain``'s JSON)
and ``blob:`` (the uploaded file, previewed locally, or ``/render``'s PNG of a DICOM file). The
static folder is flat and its file names are matched against a pattern before any path is
built, so a request cannot reach a file outside it.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.api.errors import NotFound
from service.api.routes import pacs, session

STATIC = Path(__file__).resolve().parent / "static"
FILE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(html|css|js|svg)$")
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # revalidate each load (ETag): a new release is seen at once, an unchanged file costs a 304
    "Cache-Control": "no-cache",
}

router = APIRouter()
router.include_router(session.router)
router.include_router(pacs.router)


@router.get("/ui", include_in_schema=False)
def viewer_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/", include_in_schema=False)
def viewer_page() -> FileResponse:
    return _static("index.html")


@router.get("/ui/{name}", include_in_schema=False)
def viewer_file(name: str) -> FileResponse:
    return _static(name)


def _static(name: str) -> FileResponse:
    match = FILE_NAME.match(name)
    path = STATIC / name
    if match is None or not path.is_file():
        raise NotFound(f"the viewer has no file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[match.group(1)], headers=HEADERS)
