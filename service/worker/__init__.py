"""The Celery worker: its app (``celery_app``, the only importer of the task modules), thin
tasks, worker lifecycle. Nothing outside this package imports it; senders use
:mod:`service.jobs.dispatch`."""
