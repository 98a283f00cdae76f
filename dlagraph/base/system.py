"""What this machine is and can hold, read from the OS: the CPU's model and the instruction sets
that decide int8/bf16 speed, and the memory a process may still allocate. No torch here."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_memory", "cpu_flags", "cpu_model", "cpu_description", "native_bf16"]

# the flags that decide how fast int8 and bf16 run (AMX tiles, VNNI dot products, bf16 ops)
SPEED_FLAGS = (
    "amx_int8",
    "amx_bf16",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "avx512f",
    "avx2",
)


def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = "unknown CPU", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model name") and model == "unknown CPU":
                model = value.strip()
            elif key in ("flags", "Features") and not flags:  # x86, ARM
                flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``unknown CPU``."""
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (``/proc/cpuinfo``; empty where the OS does not say)."""
    return _cpuinfo()[1]


def native_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX on x86, BF16 on ARM).
    Without it, bf16 convolutions are emulated and run several times slower than fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_description() -> str:
    """The CPU model and the flags that decide int8/bf16 speed: what a benchmark or a test run
    must print, since speed and int8 rounding differ from CPU to CPU."""
    model, flags = _cpuinfo()
    have = [f for f in SPEED_FLAGS if f in flags]
    no_amx = "" if "amx_int8" in flags else " (no AMX)"
    return f"{model}; {', '.join(have) or 'no AVX-512/AMX flags'}{no_amx}"


def available_memory() -> int | None:
    """Bytes of memory this process could still allocate (Linux: MemAvailable, bounded by a cgroup
    limit; elsewhere the physical memory), or None when the platform does not say."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
        for limit, usage in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes",
            ),
        ):
            try:
                cap, used = Path(limit).read_text().strip(), int(Path(usage).read_text())
            except (OSError, ValueError):
                continue
            if cap.isdigit() and int(cap) < 1 << 60:
                found.append(int(cap) - used)
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None
    return max(0, min(found))
