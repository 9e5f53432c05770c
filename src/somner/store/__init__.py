"""Persistent state: users, API keys (hashed) and usage records, in SQLite by default or PostgreSQL."""
