"""Per-client state: the stream, the bounded frame queue, the reply order, rate limits and opt-in
options; and the server-wide counters /healthz and /metrics report."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from service.signs import SignDebouncer
from service.stream import StreamState

FrameId = int | str | None  # a frame's optional `id`, echoed in its reply


@dataclass
class ClientStats:
    frames: int = 0
    predictions: int = 0
    dropped: int = 0
    errors: int = 0
    errors_suppressed: int = 0
    unsent: int = 0


class TokenBucket:
    """At most `rate` events per second on average, in bursts of at most `rate` (one second's worth)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class OptionsError(ValueError):
    """A `subscribe` / connect `auth` payload with options the server cannot use."""


@dataclass(frozen=True)
class ClientOptions:
    """Opt-in extensions; the defaults are the reference protocol."""

    topk: int = 0
    signs: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"topk": self.topk, "signs": self.signs}


def parse_options(payload: Any, current: ClientOptions, max_topk: int) -> ClientOptions:
    """Options from a `subscribe` / `auth` payload; keys it does not name keep their current value,
    unknown keys are ignored (an `auth` payload may carry other things)."""
    if payload is None:
        return current
    if not isinstance(payload, dict):
        raise OptionsError('options must be an object like {"topk": 3, "signs": true}')
    topk, signs = current.topk, current.signs
    if "topk" in payload:
        value = payload["topk"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise OptionsError("'topk' must be a non-negative integer")
        topk = min(value, max_topk)
    if "signs" in payload:
        if not isinstance(payload["signs"], bool):
            raise OptionsError("'signs' must be true or false")
        signs = payload["signs"]
    return ClientOptions(topk, signs)


@dataclass
class Client:
    sid: str
    ip: str
    stream: StreamState
    queue_size: int
    error_rate: TokenBucket
    frame_rate: TokenBucket
    stats: ClientStats = field(default_factory=ClientStats)
    options: ClientOptions = field(default_factory=ClientOptions)
    signs: SignDebouncer | None = None  # present while the client subscribes to `sign` events
    connected_at: float = field(default_factory=time.monotonic)
    # (frame id, image bytes, arrival time, its reply turn); the oldest is dropped when a frame arrives on a
    # full queue.
    pending: deque[tuple[FrameId, bytes, float, Turn]] = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    busy: bool = False  # the worker holds a frame it has not answered yet
    # The turn of the newest frame: replies go out in the order the frames came.
    last_turn: Turn | None = None

    def __post_init__(self) -> None:
        self.pending = deque()

    def next_turn(self) -> Turn:
        turn = Turn(self.last_turn)
        self.last_turn = turn
        return turn

    def enqueue(self, frame_id: FrameId, data: bytes, arrived: float, turn: Turn) -> None:
        if len(self.pending) == self.queue_size:
            self.stats.dropped += 1
            self.pending.popleft()[3].skip()
        self.pending.append((frame_id, data, arrived, turn))
        self.wake.set()

    @property
    def answering(self) -> bool:
        """A frame received from this client has not had its turn yet (answered, or given up): the
        worker's frames, and those answered outside it (not sampled: decoded, then answered with the
        newest window once fresh and in turn), which `pending` and `busy` do not show."""
        return self.last_turn is not None and not self.last_turn.done

    def end_turns(self) -> None:
        """The client is gone: nothing it sent will be answered, so no reply waits for one."""
        while self.pending:
            self.pending.popleft()[3].skip()


class Turn:
    """One frame's place in its client's reply order: a reply waits until the frame before has been
    answered (or dropped), so replies go out in the order frames came, as from the reference server,
    even when a frame that is not sampled is decoded faster than the one before it is encoded."""

    def __init__(self, previous: Turn | None) -> None:
        self._previous = previous
        self._done = asyncio.Event()

    async def wait(self) -> None:
        if self._previous is not None:
            await self._previous._done.wait()
            self._previous = None  # the chain behind it is released

    def finish(self) -> None:
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def skip(self) -> None:
        """This frame gets no reply: its turn ends when the one before it ends."""
        previous = self._previous
        if previous is None or previous._done.is_set():
            self._done.set()
            return

        async def after() -> None:
            await self.wait()
            self._done.set()

        task = asyncio.get_running_loop().create_task(after())
        _SKIPPED.add(task)
        task.add_done_callback(_SKIPPED.discard)


_SKIPPED: set[asyncio.Task[None]] = set()  # held so that they are not garbage-collected while waiting


@dataclass
class Totals:
    """Server-wide counters (reported by /healthz)."""

    frames: int = 0
    predictions: int = 0
    dropped: int = 0
    unsent: int = 0  # replies not sent because the client was not reading them
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    # Freshness: how much older the newest embedding behind a prediction is than the frame answered.
    staleness_max_s: float = 0.0
    staleness_sum_s: float = 0.0
    stale: int = 0  # replies whose newest embedding was older than MAX_STALENESS_MS

    def record_staleness(self, seconds: float, limit: float) -> None:
        self.staleness_max_s = max(self.staleness_max_s, seconds)
        self.staleness_sum_s += seconds
        self.stale += seconds > limit
