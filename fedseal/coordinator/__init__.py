"""Coordinator: the ServerApp round loop, aggregation, registry and operator CLIs (no torch)."""
