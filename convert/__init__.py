"""Conversion of the Keras WLASL20c model to ONNX (needs the `convert` extra: TensorFlow, tf2onnx)."""
