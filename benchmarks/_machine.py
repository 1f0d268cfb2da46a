"""What the benchmark scripts print of the machine they ran on (docs/benchmarks.md names it for every figure)."""

from __future__ import annotations

import subprocess

#: the CPU flags that decide convolution and bf16 speed
SPEED_FLAGS = ("avx512", "amx", "avx_vnni", "avx2", "fma")


def cpu_description(prefixes: tuple[str, ...] = SPEED_FLAGS) -> str:
    """CPU model, CPU count and the flags starting with ``prefixes``, from lscpu."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu not available"
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    wanted = [f for f in info.get("Flags", "").split() if f.startswith(prefixes)]
    return f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs; flags: {' '.join(wanted)}"
