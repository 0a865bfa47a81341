"""Streaming runner: sources, sinks and the capture/inference/write pipeline."""
