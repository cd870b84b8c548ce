"""The Celery side: the app from the one settings object, thin tasks, worker lifecycle."""
