"""Caviar's Alembic migrations: a package, so that a wheel ships them with the code."""
