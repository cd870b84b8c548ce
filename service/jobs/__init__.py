"""Job records (SQLAlchemy), the repository, recovery rules, dispatch (queues, task names,
sending) and the API-side runtime; imports neither the worker nor the PACS adapters."""
