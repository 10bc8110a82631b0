"""
What the benchmarks read about a running process from C{/proc} (Linux).
"""


def rss_mib(pid: int) -> float:
    """
    The resident set size of process C{pid} in MiB (C{VmRSS}), or 0 if
    C{/proc} does not report it.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
