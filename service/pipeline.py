"""Frame -> prediction for one stream: decode, preprocess, encode (batched), window, classify.

Used the same way by the Socket.IO server, `cli predict` and `cli evaluate`, so all three see
exactly the same stream state and engine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from service.batcher import MicroBatcher
from service.engine import Recognizer
from service.frames import decode_image
from service.preprocess import ImageBGR
from service.settings import Settings
from service.stream import NOT_READY, Prediction, StreamState, decide


class Pipeline:
    def __init__(
        self,
        recognizer: Recognizer,
        settings: Settings,
        max_streams: int,
        on_encoder_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.settings = settings
        # CPU work (JPEG decode, resize) runs in its own small pool; OpenCV releases the GIL.
        self._cpu_pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="decode")
        # One inference thread: ONNX Runtime parallelises inside a call (intra-op threads).
        self._inference_pool = ThreadPoolExecutor(1, thread_name_prefix="onnx")
        self.encoder = MicroBatcher(
            "encoder",
            recognizer.encode_core,
            self._inference_pool,
            settings.encoder_max_batch,
            settings.encoder_max_wait_ms / 1e3,
            max_pending=max_streams + 1,
            on_batch=on_encoder_batch,
        )
        self.head = MicroBatcher(
            "head", recognizer.classify, self._inference_pool, 32, 0.0, max_pending=max_streams + 1
        )

    def start(self) -> None:
        self.encoder.start()
        self.head.start()

    @property
    def running(self) -> bool:
        return self.encoder.running and self.head.running

    async def stop(self) -> None:
        await self.encoder.stop()
        await self.head.stop()
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
        self._inference_pool.shutdown(wait=False, cancel_futures=True)

    def new_stream(self) -> StreamState:
        stream = StreamState(
            self.recognizer.window_size,
            self.recognizer.embedding_dim,
            self.settings.window_seconds,
            self.settings.embeddings_per_second,
        )
        stream.tracker = self.recognizer.new_tracker()
        return stream

    async def decode(self, data: bytes) -> ImageBGR:
        """JPEG/PNG bytes -> BGR image, off the event loop. Raises FrameError."""
        limit = self.settings.max_frame_pixels
        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, decode_image, data, limit)

    async def predict(self, image: ImageBGR, stream: StreamState, timestamp: float) -> Prediction:
        """Answer the next frame of a clip: encode it if the stream's sampling rate takes it, else
        repeat the newest window's prediction (`cli predict` / `cli evaluate`)."""
        if not stream.take(timestamp):
            return stream.last
        return await self.encode_and_classify(image, stream, timestamp)

    async def encode_and_classify(self, image: ImageBGR, stream: StreamState, timestamp: float) -> Prediction:
        """Encode a scheduled frame, add it to the stream, classify the window ending at it."""
        loop = asyncio.get_running_loop()
        inputs = await loop.run_in_executor(self._cpu_pool, self.recognizer.encode_pre, image, stream.tracker)
        embedding = await self.encoder.submit(inputs)
        stream.add(embedding, timestamp)
        window = stream.window()
        if window is None:
            return NOT_READY
        probabilities = await self.head.submit(window)
        stream.last = decide(probabilities, self.recognizer.labels, self.settings.threshold)
        return stream.last
