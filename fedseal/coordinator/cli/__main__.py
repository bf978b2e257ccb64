"""`python -m fedseal.coordinator.cli`: the same as `fl-coordinator`."""

from fedseal.coordinator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
