"""Build script: maps the top-level folders onto the one import root ``unetrt``.

``engine/`` is ``unetrt`` (the runtime), ``export/`` is ``unetrt.export``,
``benchmarks/`` is ``unetrt.benchmarks``; ``cpp_ext/`` builds ``unetrt._tiling``.
"""

from setuptools import setup

PACKAGE_DIR = {
    "unetrt": "engine",
    "unetrt.backends": "engine/backends",
    "unetrt.stream": "engine/stream",
    "unetrt.export": "export",
    "unetrt.benchmarks": "benchmarks",
}

setup(
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"unetrt": ["models/*.onnx", "models/*.pt", "models/*.json", "samples/*.mp4", "py.typed"]},
)
