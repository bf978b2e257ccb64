"""Alembic environment and revisions of the registry schema (run via ``upgrade_to_head``)."""
