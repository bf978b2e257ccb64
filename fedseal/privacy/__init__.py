"""Differential-privacy arithmetic shared by the sites (who spend ε) and the auditor (who
recomputes it): DP-SGD events, their composition, ε under one accountant enum (Opacus), and a
second opinion on the same events from an independent library (dp-accounting)."""
