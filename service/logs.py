"""Logging set-up shared by the CLI commands."""

from __future__ import annotations

import logging

TRACE = 5


def configure_logging(level: str) -> None:
    logging.addLevelName(TRACE, "TRACE")
    numeric = TRACE if level == "trace" else getattr(logging, level.upper())
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
