"""Registry schema revisions, oldest first; each one reversible."""
