"""The secure-aggregation protocol's mathematics: pure functions, no Flower, no database, no I/O."""
