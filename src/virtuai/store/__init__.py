"""Persistent state: SQLAlchemy tables, engine set-up and Alembic migrations.

SQLite (the embedded default) and PostgreSQL.
"""
