"""Test doubles of TensorRT, pycuda and the CUDA driver that refuse what the real libraries refuse."""
