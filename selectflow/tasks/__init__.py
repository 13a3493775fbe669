"""Prefect tasks: thin wrappers over selectflow's stage functions (retries, content cache keys, one per shard)."""
