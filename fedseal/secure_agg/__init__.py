"""The secure-aggregation protocol's mathematics: pure functions, no Flower, no database, no I/O.

Modules, one job each (see docs/protocol.md):

* `params`: protocol parameters, the headroom planner (no wrap mod t) and their text form;
* `bfv_params`: BFV parameters (128-bit security table, batching prime) and the noise model;
* `quantise`: clipping, stochastic rounding, signed integers in Z_t;
* `prg`: ChaCha20 masks uniform mod t, domain-separated by purpose, run and round;
* `keys`: Ed25519 signatures bound to run/round/stage/sender, X25519 pairwise seeds, sealed boxes;
* `shamir`: 32-byte secrets shared with threshold k, reconstructions checked against commitments;
* `bfv`: seeded symmetric BFV uploads, parameters-only sums, guarded ciphertext loading;
* `masking`: SecAgg masks and the residual to remove after dropouts;
* `messages`: wire formats and the signed envelope;
* `recipe`: the stages of a round in modes plain, he and he+ss, for client/ and coordinator/;
* `errors`: the exception hierarchy.
"""
