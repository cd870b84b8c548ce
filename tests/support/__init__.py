"""Helpers shared by the tests and the bench scripts: real servers, tiny models, generated files.

Plain modules, imported by dotted name (``from tests.support.images import png_bytes``). The
pytest fixtures built on them live in :mod:`tests.support.fixtures`, which ``tests/conftest.py``
registers once for the whole suite.
"""
