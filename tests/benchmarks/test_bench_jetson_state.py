"""``unet-bench`` on a Jetson names what its figures depend on: the L4T release, the nvpmodel power mode and whether
jetson_clocks locked the clocks (a warning line when not), read from stand-in files of the paths a Jetson has; and a
TensorRT plan that takes a range of shapes is timed at its opt shape, which the report states."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fakes.cuda import FakeGpu

from unetrt import jetson as jetson_module
from unetrt.benchmarks.bench import main
from unetrt.jetson import JetsonState, cpu_clocks_locked, gpu_clock_locked, l4t_release, power_mode

pytestmark = pytest.mark.gpu_contract
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from plan_fixtures import install_fake_jetson  # noqa: E402

FAST = ["--iterations", "2", "--trials", "1", "--warmup", "1"]
SIZE = ["--size", "32x32"]  # the fixed-shape plans below take 32x32 alone
# nvpmodel.conf of an Orin Nano (JetPack 6.2): the mode ids are not in the order of their speed.
NVPMODEL_CONF = """< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=25W >
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
< POWER_MODEL ID=3 NAME=7W >
< PM_CONFIG DEFAULT=2 >
"""


@pytest.fixture
def jetson(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGpu:
    """A fake Orin with TensorRT and pycuda; torch, if importable at all, sees no GPU."""
    return install_fake_jetson(monkeypatch, tmp_path / "engines")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_jetson_files(root: Path, monkeypatch: pytest.MonkeyPatch, gpu_locked: bool = True,
                      cpu_locked: bool = True, mode: str = "pmode:0002 fmode:quiet\n") -> None:
    """The files an Orin with JetPack 6.2 has, under ``root``: its L4T release, nvpmodel's state, the GPU's devfreq
    device (beside another devfreq device) and three CPUs, the third offline."""
    _write(root / "nv_tegra_release",
           "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan 8\n")
    _write(root / "nvpmodel" / "status", mode)
    _write(root / "nvpmodel.conf", NVPMODEL_CONF)
    devfreq = root / "devfreq"
    _write(devfreq / "15340000.vic" / "device" / "of_node" / "name", "vic\x00")
    _write(devfreq / "15340000.vic" / "min_freq", "115200000\n")
    _write(devfreq / "15340000.vic" / "max_freq", "729600000\n")
    gpu = devfreq / "17000000.gpu"
    _write(gpu / "device" / "of_node" / "name", "gpu\x00")
    _write(gpu / "min_freq", "1020000000\n" if gpu_locked else "306000000\n")
    _write(gpu / "max_freq", "1020000000\n")
    cpus = root / "cpu"
    for index in range(3):
        cpu = cpus / f"cpu{index}"
        _write(cpu / "online", "0\n" if index == 2 else "1\n")
        if index < 2:
            _write(cpu / "cpufreq" / "scaling_min_freq", "1728000\n" if cpu_locked else "729600\n")
            _write(cpu / "cpufreq" / "scaling_max_freq", "1728000\n")
    monkeypatch.setattr(jetson_module, "L4T_RELEASE", root / "nv_tegra_release")
    monkeypatch.setattr(jetson_module, "NVPMODEL_STATUS", root / "nvpmodel" / "status")
    monkeypatch.setattr(jetson_module, "NVPMODEL_CONF", root / "nvpmodel.conf")
    monkeypatch.setattr(jetson_module, "DEVFREQ", devfreq)
    monkeypatch.setattr(jetson_module, "CPUS", cpus)


def _plan(onnx: Path, folder: Path, *profile: str) -> Path:
    from unetrt.export.tensorrt import main as unet_build

    folder.mkdir()
    plan = folder / "unet.plan"
    assert unet_build([str(onnx), "-o", str(plan), "--precision", "fp16", "--no-progress", *profile]) == 0
    return plan


def test_the_report_names_the_l4t_release_the_power_mode_the_locked_clocks_and_tensorrt(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the header said 'GPU: Orin' alone, so figures from a 7 W mode and from MAXN with locked clocks (2x
    and more apart) could not be told apart, and no TensorRT version was named (JetPack's bindings are no pip
    distribution)."""
    fake_jetson_files(tmp_path / "jetson", monkeypatch)
    plan = _plan(tiny_model_files["onnx"], tmp_path / "plan", "--min-shape", "1x3x32x32", "--max-shape", "1x3x32x32")
    report_file, markdown = tmp_path / "report.json", tmp_path / "report.md"
    capsys.readouterr()
    assert main(["--engine", str(plan), *FAST, *SIZE, "--json", str(report_file), "--markdown", str(markdown)]) == 0
    out, err = capsys.readouterr()
    report = json.loads(report_file.read_text())
    assert report["machine"]["jetson"] == {
        "l4t": "R36.4.3", "power_mode": "MAXN_SUPER (mode 2)", "gpu_clock_locked": True, "cpu_clocks_locked": True,
        "clocks_locked": True,
        "description": "Jetson: L4T R36.4.3, power mode MAXN_SUPER (mode 2), clocks locked (jetson_clocks)"}
    assert report["versions"]["tensorrt"] == "10.3.0" and report["warnings"] == []
    for text in (out, markdown.read_text()):
        assert "Jetson: L4T R36.4.3, power mode MAXN_SUPER (mode 2), clocks locked (jetson_clocks)" in text
        assert f"GPU: {jetson.name}, TensorRT 10.3.0;" in text
    assert "warning" not in err


@pytest.mark.parametrize(("gpu_locked", "cpu_locked", "floating"), [(False, True, "GPU"), (True, False, "CPU"),
                                                                    (False, False, "GPU and CPU")])
def test_clocks_that_are_not_locked_give_a_warning_line(gpu_locked: bool, cpu_locked: bool, floating: str,
                                                        jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    fake_jetson_files(tmp_path / "jetson", monkeypatch, gpu_locked=gpu_locked, cpu_locked=cpu_locked)
    plan = _plan(tiny_model_files["onnx"], tmp_path / "plan", "--min-shape", "1x3x32x32", "--max-shape", "1x3x32x32")
    report_file = tmp_path / "report.json"
    capsys.readouterr()
    assert main(["--engine", str(plan), *FAST, *SIZE, "--json", str(report_file)]) == 0
    out, err = capsys.readouterr()
    warning = (f"the Jetson's {floating} clocks are not locked: DVFS changes them with the load, so these figures "
               "can be 2x off and do not compare with other runs; lock them first (sudo nvpmodel -m <mode> && sudo "
               "jetson_clocks)")
    assert [line for line in err.splitlines() if "warning" in line] == [f"unet-bench: warning: {warning}"]
    report = json.loads(report_file.read_text())
    assert report["warnings"] == [warning] and report["machine"]["jetson"]["clocks_locked"] is False
    assert f"**Warning:** {warning}" in out and "clocks NOT locked (DVFS)" in out


def test_off_a_jetson_nothing_is_claimed(jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetson_module, "L4T_RELEASE", tmp_path / "no_nv_tegra_release")
    plan = _plan(tiny_model_files["onnx"], tmp_path / "plan", "--min-shape", "1x3x32x32", "--max-shape", "1x3x32x32")
    report_file = tmp_path / "report.json"
    assert main(["--engine", str(plan), *FAST, *SIZE, "--json", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    assert report["machine"]["jetson"] is None and report["warnings"] == []


def test_the_jetson_files_are_read_without_guessing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mode the configuration does not name keeps its id; files that are missing or unreadable (no cpufreq, a GPU
    not found in devfreq) leave the state unknown, never 'locked'."""
    fake_jetson_files(tmp_path, monkeypatch, mode="pmode:0007\n")
    assert l4t_release(tmp_path / "nv_tegra_release") == "R36.4.3"
    assert power_mode(tmp_path / "nvpmodel" / "status", tmp_path / "nvpmodel.conf") == "mode 7"
    assert power_mode(tmp_path / "missing", tmp_path / "nvpmodel.conf") is None
    assert l4t_release(tmp_path / "nvpmodel.conf") is None
    assert gpu_clock_locked(tmp_path / "missing") is None and cpu_clocks_locked(tmp_path / "missing") is None
    (tmp_path / "devfreq" / "17000000.gpu" / "max_freq").unlink()
    assert gpu_clock_locked(tmp_path / "devfreq") is None
    (tmp_path / "cpu" / "cpu1" / "cpufreq" / "scaling_max_freq").unlink()
    assert cpu_clocks_locked(tmp_path / "cpu") is None
    state = JetsonState("R36.4.3", None, None, True)
    assert state.clocks_locked is None and state.warning() is None
    assert state.describe() == "Jetson: L4T R36.4.3, power mode unknown, clock lock unknown"



def test_a_garbled_clock_file_leaves_the_lock_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock file that holds no number says nothing about the lock: unknown, not 'NOT locked'."""
    fake_jetson_files(tmp_path, monkeypatch)
    (tmp_path / "devfreq" / "17000000.gpu" / "min_freq").write_text("busy\n")
    assert gpu_clock_locked(tmp_path / "devfreq") is None


@pytest.mark.parametrize("node", ["ga10b", "gv11b", "gp10b"])
def test_the_gpu_is_found_under_the_device_tree_names_of_older_l4t_releases(
        node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Orin, Xavier and TX2 name their GPU's devfreq node ga10b, gv11b and gp10b where newer L4T says 'gpu'.
    fake_jetson_files(tmp_path, monkeypatch, gpu_locked=False)
    (tmp_path / "devfreq" / "17000000.gpu" / "device" / "of_node" / "name").write_text(f"{node}\x00")
    assert gpu_clock_locked(tmp_path / "devfreq") is False


def test_one_floating_cpu_makes_the_cpu_clocks_unlocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_jetson_files(tmp_path, monkeypatch)
    (tmp_path / "cpu" / "cpu1" / "cpufreq" / "scaling_min_freq").write_text("729600\n")
    assert cpu_clocks_locked(tmp_path / "cpu") is False


def test_a_cpu_without_an_online_file_counts_as_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A core that cannot be taken offline has no 'online' file; its clock counts like any other online core's.
    fake_jetson_files(tmp_path, monkeypatch)
    (tmp_path / "cpu" / "cpu0" / "online").unlink()
    (tmp_path / "cpu" / "cpu0" / "cpufreq" / "scaling_min_freq").write_text("729600\n")
    assert cpu_clocks_locked(tmp_path / "cpu") is False


def test_an_offline_cpu_is_left_out_even_where_its_cpufreq_files_remain(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # nvpmodel's low-power modes turn cores off; a core that is off has no clock to lock, whatever its files say.
    fake_jetson_files(tmp_path, monkeypatch)
    _write(tmp_path / "cpu" / "cpu2" / "cpufreq" / "scaling_min_freq", "729600\n")
    _write(tmp_path / "cpu" / "cpu2" / "cpufreq" / "scaling_max_freq", "1728000\n")
    assert cpu_clocks_locked(tmp_path / "cpu") is True


def test_the_warning_names_only_the_clocks_known_to_float() -> None:
    warning = JetsonState("R36.4.3", None, None, False).warning()
    assert warning is not None and warning.startswith("the Jetson's CPU clocks are not locked:")


def test_a_plan_with_a_range_of_shapes_is_timed_at_its_opt_shape_and_says_so(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """Before: a model without a working size was timed at 512x512 whatever its plan takes, so a plan built for
    32..128 ran nothing ('no variant could run here: input shape 1x3x512x512 is outside the engine's optimisation
    profile'), and a plan that takes 512x512 was timed there without saying that the engine was tuned for another
    shape."""
    plan = _plan(tiny_model_files["onnx"], tmp_path / "plan", "--min-shape", "1x3x32x32", "--opt-shape",
                 "2x3x64x96", "--max-shape", "4x3x128x128")
    report_file = tmp_path / "report.json"
    assert main(["--engine", str(plan), *FAST, "--json", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    (row,) = [r for r in report["results"] if r["variant"] == "tensorrt"]
    assert row["status"] == "ok" and row["network_input_hw"] == [64, 96] and row["batch"] == 1
    assert ("the TensorRT plan takes a range of shapes (min 1x3x32x32, opt 2x3x64x96, max 4x3x128x128); frames "
            "timed at 96x64 (WxH): the height and width of the profile's opt shape (choose with --size)"
            ) in report["notes"]
    assert main(["--engine", str(plan), *FAST, "--size", "128x32", "--json", str(report_file), "--overwrite"]) == 0
    report = json.loads(report_file.read_text())
    assert any(note.endswith("frames timed at 128x32 (WxH): as asked") for note in report["notes"])
