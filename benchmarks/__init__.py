"""unetrt.benchmarks: unet-bench and the project's benchmark scripts."""
