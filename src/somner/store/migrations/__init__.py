"""Alembic migrations, run by `somner.store.db.Database.migrate` at start (and by the offline CLI)."""
