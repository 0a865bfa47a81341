"""unetrt.export: the U-Net model, training, ONNX export and engine build (needs torch)."""
