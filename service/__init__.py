"""signstream: real-time ASL sign recognition served by ONNX Runtime over Socket.IO."""

__version__ = "0.1.0"
