"""What the benchmark scripts print of the machine they ran on (docs/benchmarks.md names it with every
figure)."""

from __future__ import annotations

import os
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
    model, cpus = info.get("Model name", "?").strip(), info.get("CPU(s)", "?").strip()
    return f"{model}, {cpus} CPUs; flags: {' '.join(wanted)}"


def gpu_description(device: str = "cuda") -> str:
    """GPU name, memory, compute capability and the CUDA / cuDNN versions torch was built with."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    props = torch.cuda.get_device_properties(torch.device(device))
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
            f"{props.major}.{props.minor}; CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (how busy the machine was: other jobs skew CPU timings)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
