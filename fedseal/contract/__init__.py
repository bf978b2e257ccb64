"""What crosses the wire and the ledger, read by every party: message keys and record names,
field readers and size limits, the run plan, the update and ledger codecs, the site's public
identity and the directory codec, the federation manifest."""
