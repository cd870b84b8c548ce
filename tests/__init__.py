"""The test suite, a package so that ``tests.support`` is importable (see ``conftest.py``)."""
