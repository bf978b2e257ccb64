"""Differential-privacy arithmetic shared by the sites (who spend ε) and the auditor (who
recomputes it): DP-SGD events, their composition, and ε under one accountant enum."""
