"""fl-demo: a whole federation as local processes on 127.0.0.1."""
