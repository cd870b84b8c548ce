"""The web viewer: plain HTML, CSS and ES modules served by the API itself (no build step, no
CDN), so it works inside a hospital network without internet. See :mod:`service.web.router`."""

from service.web.router import router

__all__ = ["router"]
