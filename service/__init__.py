"""Caviar's service: the API, the database, the queue, the search, the dashboard, the CLI."""
