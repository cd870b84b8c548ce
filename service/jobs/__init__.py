"""Job records (SQLAlchemy), the repository, recovery rules and the API-side runtime."""
