"""Caviar's service: the API, the database, the queue, search strategies, the dashboard and the CLI."""
