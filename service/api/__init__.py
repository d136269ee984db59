"""The REST API's routers and their shared dependencies."""
