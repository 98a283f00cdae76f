"""What this machine can hold: the memory a process may still allocate, read from the OS."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_memory"]


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
