"""Where the benchmark scripts read and write by default, in a checkout and in an installed package."""

from __future__ import annotations

from pathlib import Path

import pytest

from unetrt.benchmarks import camvid_val_frames, in_checkout, results_dir

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_writes_the_results_the_documents_cite() -> None:
    assert in_checkout(ROOT / "benchmarks")
    assert results_dir(ROOT / "benchmarks") == ROOT / "benchmarks" / "results"
    assert camvid_val_frames(ROOT / "benchmarks") == ROOT.parent / "shared" / "data" / "camvid" / "val"


def test_an_installed_package_writes_to_the_current_folder_not_into_site_packages(tmp_path: Path) -> None:
    # Installed from the wheel, the scripts wrote site-packages/unetrt/benchmarks/results/: pip uninstall left it,
    # and the unetrt folder holding it then imported as an empty namespace package ('cannot import name Segmenter').
    installed = tmp_path / "lib" / "python3.11" / "site-packages" / "unetrt" / "benchmarks"
    installed.mkdir(parents=True)
    assert not in_checkout(installed)
    assert results_dir(installed) == Path("benchmark-results")
    # Not lib/python3.11/shared/..., which no install has.
    assert camvid_val_frames(installed) == Path("..") / "shared" / "data" / "camvid" / "val"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py")))
def test_no_script_places_its_files_by_its_own_location(script: str) -> None:
    assert "__file__" not in (ROOT / "benchmarks" / script).read_text(), \
        f"{script}: take the default folders from unetrt.benchmarks (results_dir, camvid_val_frames)"
