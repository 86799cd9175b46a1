"""Logging set-up shared by the CLI commands and the server's worker processes.

LOG_FORMAT=text (default) or json (one JSON object per line). A line about a client carries its
Socket.IO session id: log with `extra={"sid": sid}`. Frames are never logged, and auth tokens are
redacted from every line (uvicorn's access log would otherwise print `?token=...`).
"""

from __future__ import annotations

import json
import logging
import re
import time

TRACE = 5
_TOKEN = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)


def no_frame_dumps(record: logging.LogRecord) -> bool:
    """At debug level the websockets library (through uvicorn's logger) prints every WebSocket frame,
    `< TEXT '42["frame",{"image":"/9j/...` included; frames never go to the log."""
    return not (record.name.startswith("uvicorn") and isinstance(record.msg, str) and record.msg[:2] in ("< ", "> "))


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _TOKEN.sub(r"\1[redacted]", super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _TOKEN.sub(r"\1[redacted]", record.getMessage()),
        }
        sid = getattr(record, "sid", None)
        if sid is not None:
            line["sid"] = sid
        if record.exc_info:
            line["exception"] = _TOKEN.sub(r"\1[redacted]", self.formatException(record.exc_info))
        return json.dumps(line)


def configure_logging(level: str, log_format: str = "text") -> None:
    logging.addLevelName(TRACE, "TRACE")
    numeric = TRACE if level == "trace" else getattr(logging, level.upper())
    handler = logging.StreamHandler()
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(no_frame_dumps)
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
