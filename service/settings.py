"""Settings: environment variables (and an optional `.env`), validated once at start-up.

The names and defaults of the reference server are kept (SPEC section 1); new settings get new names.
Every value is checked here so that a typo fails at start-up with one clear line instead of later.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from service import MAX_PIXELS
from service.registry import RECOGNIZERS

T = TypeVar("T")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")
PROVIDERS = ("auto", "cuda", "cpu")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    # Reference server names and defaults.
    model_path: Path = Path("./model/WLASL20c_model.h5")
    use_dummy_model: bool = False
    inter_op_threads: int = 1
    intra_op_threads: int = 2
    log_level: str = "info"
    max_clients: int = 100
    cors_origins: tuple[str, ...] = ("*",)
    ping_timeout: float = 60.0
    ping_interval: float = 25.0
    # signstream settings.
    # The landmark model measured better on held-out signers (model/MODEL_CARD.md), so it is the default.
    model: str = "landmarks"
    execution_provider: str = "auto"
    encoder_variant: str = "auto"
    threshold: float = 0.5
    window_seconds: float = 2.0
    embeddings_per_second: float = 8.0
    max_staleness_ms: float = 200.0
    frame_queue_size: int = 4
    encoder_max_batch: int = 8
    encoder_max_wait_ms: float = 2.0
    inference_threads: int = 0  # ONNX Runtime calls at once (0: cores / a call's intra-op threads)
    max_frame_bytes: int = 2_000_000
    max_frame_pixels: int = MAX_PIXELS  # checked from the image header, before decoding
    errors_per_second: float = 2.0
    shutdown_timeout: float = 5.0
    log_format: str = "text"
    # Abuse limits (each answered with a coded `error`, itself rate-limited by ERRORS_PER_SECOND).
    max_fps: float = 30.0  # frames per second per client (token bucket, burst of one second)
    max_connections_per_ip: int = 32
    # Optional token auth: empty means open. repr=False keeps tokens out of any log of the settings.
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    auth_tokens_file: Path | None = None
    # Opt-in `sign` events (service/signs.py).
    sign_enter_frames: int = 6
    sign_exit_frames: int = 6
    sign_min_score: float = 0.6
    sign_transcript_length: int = 10

    @property
    def model_dir(self) -> Path:
        """The converted ONNX files live next to the h5 that MODEL_PATH names."""
        return self.model_path.parent

    @property
    def max_message_bytes(self) -> int:
        """The transport's bound on one Engine.IO message (a websocket message, or a polling request
        body): 8 x MAX_FRAME_BYTES, at least 1 MB. Frames up to it reach the app, which answers the ones
        over MAX_FRAME_BYTES with `frame_too_large` (base64 and polling's own base64 of binary frames
        cost 4/3); a larger message is refused by the transport and closes the connection."""
        return max(8 * self.max_frame_bytes, 1_000_000)


# env name -> (field name, parser)
def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected 0 or 1")


def _positive(parse: Callable[[str], T]) -> Callable[[str], T]:
    def parser(value: str) -> T:
        parsed = parse(value)
        if parsed <= 0:  # type: ignore[operator]
            raise ValueError("must be positive")
        return parsed

    return parser


def _non_negative_float(value: str) -> float:
    parsed = float(value)
    if parsed < 0:
        raise ValueError("must not be negative")
    return parsed


def _non_negative_int(value: str) -> int:
    parsed = int(value)
    if parsed < 0:
        raise ValueError("must not be negative")
    return parsed


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parser(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return lowered

    return parser


def _origins(value: str) -> tuple[str, ...]:
    origins = tuple(part.strip() for part in value.split(",") if part.strip())
    if not origins:
        raise ValueError("expected '*' or a comma-separated list of origins")
    return origins


def _pixels(value: str) -> int:
    parsed = int(value)
    if not 0 < parsed <= MAX_PIXELS:
        raise ValueError(f"must be in 1..{MAX_PIXELS} (OpenCV's own limit is set to {MAX_PIXELS})")
    return parsed


def _tokens(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _optional_path(value: str) -> Path | None:
    """A file name; empty means unset (as `.env.example` lists it)."""
    return Path(value) if value.strip() else None


def _read_tokens(path: Path) -> tuple[str, ...]:
    """One token per line; blank lines and lines starting with '#' are ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SettingsError(f"AUTH_TOKENS_FILE={str(path)!r} cannot be read: {exc.strerror}") from None
    tokens = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not tokens:
        raise SettingsError(f"AUTH_TOKENS_FILE={str(path)!r} holds no token")
    return tokens


def _probability(value: str) -> float:
    parsed = float(value)
    if not 0.0 <= parsed < 1.0:
        raise ValueError("must be in [0, 1)")
    return parsed


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "MODEL_PATH": ("model_path", Path),
    "USE_DUMMY_MODEL": ("use_dummy_model", _bool),
    "TF_INTER_OP_THREADS": ("inter_op_threads", _positive(int)),
    "TF_INTRA_OP_THREADS": ("intra_op_threads", _positive(int)),
    "LOG_LEVEL": ("log_level", _choice(LOG_LEVELS)),
    "MAX_CLIENTS": ("max_clients", _positive(int)),
    "CORS_ORIGINS": ("cors_origins", _origins),
    "SOCKETIO_PING_TIMEOUT": ("ping_timeout", _positive(float)),
    "SOCKETIO_PING_INTERVAL": ("ping_interval", _positive(float)),
    "MODEL": ("model", _choice(tuple(RECOGNIZERS))),
    "EXECUTION_PROVIDER": ("execution_provider", _choice(PROVIDERS)),
    "ENCODER_VARIANT": ("encoder_variant", _choice(("auto", "fp32", "int8", "fp16"))),
    "PREDICTION_THRESHOLD": ("threshold", _probability),
    "WINDOW_SECONDS": ("window_seconds", _non_negative_float),
    "EMBEDDINGS_PER_SECOND": ("embeddings_per_second", _non_negative_float),
    "MAX_STALENESS_MS": ("max_staleness_ms", _positive(float)),
    "FRAME_QUEUE_SIZE": ("frame_queue_size", _positive(int)),
    "ENCODER_MAX_BATCH": ("encoder_max_batch", _positive(int)),
    "ENCODER_MAX_WAIT_MS": ("encoder_max_wait_ms", _non_negative_float),
    "INFERENCE_THREADS": ("inference_threads", _non_negative_int),
    "MAX_FRAME_BYTES": ("max_frame_bytes", _positive(int)),
    "MAX_FRAME_PIXELS": ("max_frame_pixels", _pixels),
    "ERRORS_PER_SECOND": ("errors_per_second", _positive(float)),
    "SHUTDOWN_TIMEOUT": ("shutdown_timeout", _positive(float)),
    "LOG_FORMAT": ("log_format", _choice(LOG_FORMATS)),
    "MAX_FPS": ("max_fps", _positive(float)),
    "MAX_CONNECTIONS_PER_IP": ("max_connections_per_ip", _positive(int)),
    "AUTH_TOKENS": ("auth_tokens", _tokens),
    "AUTH_TOKENS_FILE": ("auth_tokens_file", _optional_path),
    "SIGN_ENTER_FRAMES": ("sign_enter_frames", _positive(int)),
    "SIGN_EXIT_FRAMES": ("sign_exit_frames", _positive(int)),
    "SIGN_MIN_SCORE": ("sign_min_score", _probability),
    "SIGN_TRANSCRIPT_LENGTH": ("sign_transcript_length", _positive(int)),
}
assert {name for name, _ in _ENV.values()} == {f.name for f in fields(Settings)}


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Read settings from `env_file` (if present) overlaid by `environ` (default: os.environ)."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    kwargs: dict[str, Any] = {}
    for env_name, (field_name, parse) in _ENV.items():
        if env_name not in values:
            continue
        raw = values[env_name]
        try:
            kwargs[field_name] = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{env_name}={raw!r} is not valid: {exc}") from None
    if kwargs.get("auth_tokens_file") is not None:
        kwargs["auth_tokens"] = kwargs.get("auth_tokens", ()) + _read_tokens(kwargs["auth_tokens_file"])
    settings = Settings(**kwargs)
    if settings.use_dummy_model:
        raise SettingsError(
            "USE_DUMMY_MODEL=1 is not supported: signstream serves only the real model (unset it, or set it to 0)"
        )
    return settings
