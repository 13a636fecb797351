"""One line describing the machine a benchmark ran on."""

import os
import platform


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def peak_rss_mb(pid: int) -> int | None:
    """A process's resident-memory high-water mark (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def anon_rss_mb(pid: int) -> int | None:
    """A process's resident memory of its own (RssAnon), leaving out memory-mapped file pages,
    which the kernel can drop and read again at will."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("RssAnon:"))
    except (OSError, StopIteration):
        return None
