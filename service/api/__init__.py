"""The HTTP API: ``create_app()`` in :mod:`service.api.app`; routes in :mod:`service.api.routes`."""
