"""Facts about this machine, read in one place (run configs, reports, benchmarks, precision choice)."""

from __future__ import annotations

import functools
import os
import platform


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The first processor's fields of /proc/cpuinfo, keys lower-cased; empty where there is no such file."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # end of the first processor's block
                if ":" in line:
                    key, value = (part.strip() for part in line.split(":", 1))
                    fields.setdefault(key.lower(), value)
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name, or the platform's processor/machine name where /proc/cpuinfo has none."""
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """CPU feature flags (avx512_bf16, amx_bf16, ...); empty where unknown."""
    return set(cpu_info().get("flags", "").split())


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def package_versions(distributions) -> dict:
    """Installed version of each distribution name (None where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in distributions:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
