"""Silence transformers' loading chatter while loading a known model.

Loading a classifier always reports the freshly initialised head ("newly initialized weights") and
draws a progress bar; both are expected here and would bury real warnings in every site's log.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from transformers.utils import logging as hf_logging

__all__ = ["quiet_transformers"]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Lower transformers' verbosity and hide its progress bars, restoring both afterwards."""
    verbosity = hf_logging.get_verbosity()
    bars_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_enabled:
            hf_logging.enable_progress_bar()
