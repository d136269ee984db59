"""Caviar's worker: leases trials from the service over HTTP and trains them."""
