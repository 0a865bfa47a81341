"""What a Jetson's speed depends on beyond its GPU's name: the L4T release, the nvpmodel power mode and
whether jetson_clocks has locked the clocks, read from plain files without root.

A Jetson's CPU and GPU clocks follow the load (DVFS: cpufreq and devfreq governors) within the ceilings of the
nvpmodel power mode, so the same engine gives figures 2x and more apart between a 15 W mode with floating clocks
and MAXN with locked clocks. NVIDIA's benchmarking guidance asks that the clock settings be recorded with every
measurement (TensorRT, "Hardware/Software Environment for Performance Measurements": "Performance measurements are
influenced by many factors, including ... software environment differences like GPU clock settings"); its
``nvidia-smi`` tools do not exist on a Jetson ("the items involving nvidia-smi are only supported on dGPU systems,
not mobile ones"), so the state is read from sysfs and nvpmodel's own files:

* ``/etc/nv_tegra_release``: the L4T release (``# R36 (release), REVISION: 4.3, ...``), which names the JetPack;
* ``/var/lib/nvpmodel/status``: the mode nvpmodel set last (``pmode:0002``), named in ``/etc/nvpmodel.conf``
  (``< POWER_MODEL ID=2 NAME=15W >``); ``nvpmodel -q`` itself is not run (it needs root on some releases);
* ``jetson_clocks`` locks a clock by raising its floor to its ceiling, so a clock counts as locked when its
  ``min_freq`` equals its ``max_freq``: the GPU's devfreq device and every online CPU's cpufreq policy (the EMC's
  state is in debugfs, which only root can read).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

L4T_RELEASE = Path("/etc/nv_tegra_release")
NVPMODEL_STATUS = Path("/var/lib/nvpmodel/status")
NVPMODEL_CONF = Path("/etc/nvpmodel.conf")
DEVFREQ = Path("/sys/class/devfreq")
CPUS = Path("/sys/devices/system/cpu")
# The device-tree names of Jetson GPUs in devfreq (gp10b: TX2, gv11b: Xavier, ga10b: Orin; 'gpu' on newer L4T).
GPU_NODE_NAMES = ("gpu", "ga10b", "gv11b", "gp10b")
LOCK_CLOCKS = "sudo nvpmodel -m <mode> && sudo jetson_clocks"


@dataclass(frozen=True)
class JetsonState:
    """The settings a Jetson figure depends on; None where a file could not be read.

    Attributes:
        l4t: the L4T release, e.g. 'R36.4.3'.
        power_mode: the nvpmodel mode's name and id, e.g. 'MAXN (mode 0)'.
        gpu_clock_locked: whether the GPU's devfreq floor equals its ceiling.
        cpu_clocks_locked: whether every online CPU's cpufreq floor equals its ceiling.
    """

    l4t: str | None
    power_mode: str | None
    gpu_clock_locked: bool | None
    cpu_clocks_locked: bool | None

    @property
    def clocks_locked(self) -> bool | None:
        """True when GPU and CPU clocks are both locked, False when either floats, None when unknown."""
        states = (self.gpu_clock_locked, self.cpu_clocks_locked)
        if False in states:
            return False
        return None if None in states else True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary, with the combined ``clocks_locked`` and the header line (``description``).

        Example:
            >>> JetsonState("R36.4.3", None, True, None).to_dict()["clocks_locked"] is None
            True
        """
        return {**asdict(self), "clocks_locked": self.clocks_locked, "description": self.describe()}

    def describe(self) -> str:
        """One line for a report's header.

        Example:
            >>> JetsonState("R36.4.3", "MAXN (mode 0)", True, True).describe()
            'Jetson: L4T R36.4.3, power mode MAXN (mode 0), clocks locked (jetson_clocks)'
        """
        clocks = {True: "clocks locked (jetson_clocks)", False: "clocks NOT locked (DVFS)",
                  None: "clock lock unknown"}[self.clocks_locked]
        return f"Jetson: L4T {self.l4t or 'unknown'}, power mode {self.power_mode or 'unknown'}, {clocks}"

    def warning(self) -> str | None:
        """The line that says the figures float with the load, when the clocks are not locked (None otherwise).

        Example:
            >>> JetsonState("R36.4.3", "15W (mode 1)", False, True).warning().startswith("the Jetson's GPU clocks")
            True
        """
        if self.clocks_locked is not False:
            return None
        floating = " and ".join(name for name, locked in (("GPU", self.gpu_clock_locked),
                                                          ("CPU", self.cpu_clocks_locked)) if locked is False)
        return (f"the Jetson's {floating} clocks are not locked: DVFS changes them with the load, so these figures "
                f"can be 2x off and do not compare with other runs; lock them first ({LOCK_CLOCKS})")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def l4t_release(path: Path = L4T_RELEASE) -> str | None:
    """'R36.4.3' from ``# R36 (release), REVISION: 4.3, GCID: ...`` (None when unreadable or of another form).

    Args:
        path: the release file (``/etc/nv_tegra_release``).

    Returns:
        The release as 'R<major>.<revision>', or None.

    Example:
        >>> l4t_release(Path("/etc/nv_tegra_release"))  # doctest: +SKIP
        'R36.4.3'
    """
    text = _read(path)
    match = re.match(r"#\s*R(\d+)\s*\([^)]*\),\s*REVISION:\s*([\d.]+)", text or "")
    return None if match is None else f"R{match[1]}.{match[2]}"


def power_mode(status: Path = NVPMODEL_STATUS, conf: Path = NVPMODEL_CONF) -> str | None:
    """The nvpmodel mode in force.

    Args:
        status: nvpmodel's state file (``pmode:0002``).
        conf: nvpmodel's configuration, which names the modes (``< POWER_MODEL ID=2 NAME=15W >``).

    Returns:
        'NAME (mode ID)', 'mode ID' where the configuration does not name it, or None when the state is unreadable.

    Example:
        >>> power_mode()  # doctest: +SKIP
        'MAXN_SUPER (mode 2)'
    """
    match = re.search(r"pmode:\s*(\d+)", _read(status) or "")
    if match is None:
        return None
    mode = int(match[1])
    names = re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", _read(conf) or "")
    name = next((name for ident, name in names if int(ident) == mode), None)
    return f"mode {mode}" if name is None else f"{name} (mode {mode})"


def _floor_is_ceiling(low: Path, high: Path) -> bool | None:
    low_text, high_text = _read(low), _read(high)
    if low_text is None or high_text is None:
        return None
    try:
        return int(low_text) == int(high_text)
    except ValueError:
        return None


def gpu_clock_locked(devfreq: Path = DEVFREQ) -> bool | None:
    """Whether the integrated GPU's devfreq floor equals its ceiling.

    Args:
        devfreq: the devfreq class folder (``/sys/class/devfreq``).

    Returns:
        True or False; None when there is no such device or its files are unreadable.

    Example:
        >>> gpu_clock_locked()  # doctest: +SKIP
        False
    """
    try:
        devices = sorted(devfreq.iterdir())
    except OSError:
        return None
    for device in devices:
        if (_read(device / "device" / "of_node" / "name") or "").strip("\x00\n ") in GPU_NODE_NAMES:
            return _floor_is_ceiling(device / "min_freq", device / "max_freq")
    return None


def cpu_clocks_locked(cpus: Path = CPUS) -> bool | None:
    """Whether every online CPU's cpufreq floor equals its ceiling.

    Args:
        cpus: the CPUs' sysfs folder (``/sys/devices/system/cpu``).

    Returns:
        True or False; None without cpufreq, or when a file is unreadable.

    Example:
        >>> cpu_clocks_locked()  # doctest: +SKIP
        True
    """
    states = []
    for cpu in sorted(cpus.glob("cpu[0-9]*")):
        if (_read(cpu / "online") or "1").strip() == "0" or not (cpu / "cpufreq").is_dir():
            continue  # an offline core has no clock to lock (nvpmodel turns cores off in its low-power modes)
        states.append(_floor_is_ceiling(cpu / "cpufreq" / "scaling_min_freq", cpu / "cpufreq" / "scaling_max_freq"))
    if not states or None in states:
        return None
    return all(states)


def jetson_state() -> JetsonState | None:
    """This machine's :class:`JetsonState`, or None when it is no Jetson (no ``/etc/nv_tegra_release``).

    Example:
        >>> jetson_state().describe()  # doctest: +SKIP
        'Jetson: L4T R36.4.3, power mode MAXN_SUPER (mode 2), clocks NOT locked (DVFS)'
    """
    if not L4T_RELEASE.exists():
        return None
    return JetsonState(l4t_release(L4T_RELEASE), power_mode(NVPMODEL_STATUS, NVPMODEL_CONF),
                       gpu_clock_locked(DEVFREQ), cpu_clocks_locked(CPUS))
