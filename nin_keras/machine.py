"""Facts about this machine and its software, read in one place.

Run configs (`config.json`), export reports, the precision choice and the benchmark tools all record where
they ran from here, so every record names the machine the same way.
"""

from __future__ import annotations

import functools
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Distributions whose versions every record names (import names differ: ai-edge-litert -> ai_edge_litert).
RECORDED_PACKAGES = ("nin-keras", "tensorflow", "keras", "tf-keras", "tensorflow-model-optimization", "numpy",
                     "ai-edge-litert")


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


# Instruction sets that decide int8 and bfloat16 speed on a CPU, in the words reports use. int8 kernels gain
# most from 8-bit dot products (VNNI on x86, dotprod/i8mm on Arm); without them they widen to 16 bits.
_ISA_FLAGS = (("avx512f", "AVX-512"), ("avx512_vnni", "VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx512_bf16", "BF16"),
              ("amx_int8", "AMX-INT8"), ("amx_bf16", "AMX-BF16"), ("asimddp", "dotprod"), ("i8mm", "i8mm"))


def describe_isa(flags: set[str] | None = None) -> str:
    """The CPU's vector instruction sets that matter for int8/bf16 speed, short: "AVX2, no VNNI",
    "AVX-512 + VNNI + BF16", "NEON + dotprod"; "unknown" where the flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return "unknown"
    found = [name for flag, name in _ISA_FLAGS if flag in flags]
    if "AVX-512" in found:
        base = "AVX-512"
        found.remove("AVX-512")
    elif "avx2" in flags:
        base = "AVX2"
    elif {"asimd", "neon"} & flags:
        base = "NEON"
    else:
        base = "no AVX2"
    dot_product = {"VNNI", "AVX-VNNI", "AMX-INT8", "dotprod", "i8mm"} & set(found)
    if not dot_product and base != "no AVX2":
        found.insert(0, "no VNNI" if base != "NEON" else "no dotprod")
        return ", ".join([base, *found])
    return " + ".join([base, *found])


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Memory limits of the process's container (cgroup v2, then v1); "max" or a huge number means none.
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def total_memory_bytes() -> int | None:
    """Memory this process can have: the machine's RAM, or its container's limit when lower; None if unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in _CGROUP_LIMITS:
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit():
            sizes.append(int(text))
    sizes = [size for size in sizes if size > 0]
    return min(sizes) if sizes else None


def package_versions(distributions=RECORDED_PACKAGES) -> dict:
    """Installed version of each distribution name, keyed by its import-style name (None where not installed)."""
    versions = {}
    for name in distributions:
        try:
            versions[name.replace("-", "_")] = version(name)
        except PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    return versions


def gpu_names() -> list[str]:
    """Names of the GPUs TensorFlow sees (empty on a CPU-only machine, or without TensorFlow)."""
    try:
        import tensorflow as tf  # lazy: importing TensorFlow costs seconds; CPU facts should not pay for it
    except ImportError:  # another Keras backend without TensorFlow: TensorFlow sees no GPU
        return []

    names = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            names.append(tf.config.experimental.get_device_details(device).get("device_name", device.name))
        except Exception:  # noqa: BLE001  (details are best effort; the device name always exists)
            names.append(device.name)
    return names


def machine_facts(*, threads: int | None = None, gpus: bool = True) -> dict:
    """Everything a record says about where it ran: CPU, cores, GPUs, OS, Python and package versions.

    Args:
        threads: the thread count the measurement used, recorded as is. Defaults to None (not recorded).
        gpus: ask TensorFlow for its GPUs (imports TensorFlow). Defaults to True.
    """
    facts = {
        "cpu": cpu_model(),
        "cores": available_cores(),
        "logical_cpus": os.cpu_count(),
        "gpus": gpu_names() if gpus else [],
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "isa": describe_isa(),
        **package_versions(),
    }
    if threads is not None:
        facts["threads"] = threads
    return facts


def describe_machine(facts: dict | None = None) -> str:
    """One line naming the machine for Markdown reports: CPU, cores, GPUs, OS and the key versions."""
    facts = facts or machine_facts()
    gpus = ", ".join(facts.get("gpus") or []) or "no GPU"
    isa = f" ({facts['isa']})" if facts.get("isa") else ""
    return (f"{facts['cpu']}{isa}, {facts['cores']} cores available ({facts['logical_cpus']} logical CPUs), {gpus}; "
            f"{facts['os']}, Python {facts['python']}, TensorFlow {facts.get('tensorflow')}, "
            f"Keras {facts.get('keras')}, tf-keras {facts.get('tf_keras')}, "
            f"tfmot {facts.get('tensorflow_model_optimization')}, ai-edge-litert {facts.get('ai_edge_litert')}")


def describe_device(facts: dict | None = None) -> str:
    """What a training benchmark ran on, short: "GPU: <name>" or "CPU: <model> (<n> cores)"."""
    facts = facts or machine_facts()
    gpus = facts.get("gpus") or []
    if gpus:
        return f"GPU: {gpus[0]}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
    return f"CPU: {facts['cpu']} ({facts['cores']} cores)"
