"""Frame -> prediction for one stream: decode, encode (the engine batches), window, classify.

Used the same way by the Socket.IO server, `cli predict` and `cli evaluate`, so all three see
exactly the same stream state and engine.
"""

from __future__ import annotations

from service.arrays import ImageBGR
from service.engine import BatchObserver, Engine
from service.frames import check_image, decode_image
from service.recognizer import Recognizer
from service.settings import Settings
from service.stream import NOT_READY, Prediction, StreamState, decide


class Pipeline:
    def __init__(
        self, recognizer: Recognizer, settings: Settings, max_streams: int, on_batch: BatchObserver | None = None
    ) -> None:
        self.recognizer = recognizer
        self.settings = settings
        self.engine = Engine(recognizer, settings, max_streams, on_batch)

    def start(self) -> None:
        self.engine.start()

    @property
    def running(self) -> bool:
        return self.engine.running

    async def stop(self) -> None:
        await self.engine.stop()

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
        return await self.engine.cpu(decode_image, data, self.settings.max_frame_pixels)

    async def check(self, data: bytes) -> None:
        """Raise the FrameError `decode` would raise, without decoding the pixels (a frame not sampled)."""
        await self.engine.cpu(check_image, data, self.settings.max_frame_pixels)

    async def predict(self, image: ImageBGR, stream: StreamState, timestamp: float) -> Prediction:
        """Answer the next frame of a clip: encode it if the stream's sampling rate takes it, else
        repeat the newest window's prediction (`cli predict` / `cli evaluate`)."""
        if not stream.take(timestamp):
            return stream.last
        return await self.encode_and_classify(image, stream, timestamp)

    async def answer(self, data: bytes, stream: StreamState, timestamp: float) -> Prediction:
        """A frame the stream took (`StreamState.take`), as image bytes: decode, encode, classify.
        Raises FrameError for an image that cannot be decoded."""
        try:
            image = await self.decode(data)
        except BaseException:
            stream.release()
            raise
        return await self.encode_and_classify(image, stream, timestamp)

    async def encode_and_classify(self, image: ImageBGR, stream: StreamState, timestamp: float) -> Prediction:
        """Encode a frame the stream took, add it to the stream, classify the window ending at it. The
        stream's schedule is settled either way: `answered` with the prediction, or `release`d."""
        try:
            stream.add(await self.engine.encode(image, stream.tracker), timestamp)
            window = stream.window()
            prediction = NOT_READY
            if window is not None:
                probabilities = await self.engine.classify(window)
                prediction = decide(probabilities, self.recognizer.labels, self.settings.threshold)
        except BaseException:
            stream.release()
            raise
        stream.answered(prediction)
        return prediction
