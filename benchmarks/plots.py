"""PNG plots of the no-op throughput figures (matplotlib, Agg backend; optional).

- ``throughput-vs-concurrency.png``: jobs/s for 1, 2 and 4 ``InlineRunner`` processes at
  prefetch 1, 8 and 32 (1,000 jobs waiting).
- ``throughput-vs-depth.png``: jobs/s of one process at prefetch 1 and 32 against the
  number of jobs waiting (log scale), with Redis' ``used_memory`` on a second axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def concurrency(detail: dict[str, Any], path: Path, title: str) -> Path:
    plt = _pyplot()
    table = detail["concurrency"]["median"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for prefetch, marker in ((1, "o"), (8, "s"), (32, "^")):
        pts = sorted(
            (v["procs"], v["rate"])
            for v in table.values()
            if v["prefetch"] == prefetch and v["rate"]
        )
        ax.plot(
            [p for p, _ in pts], [r for _, r in pts], marker=marker, label=f"prefetch {prefetch}"
        )
    ax.set_xticks([1, 2, 4])
    ax.set_xlabel("InlineRunner processes")
    ax.set_ylabel("no-op jobs/s (claim + run + complete)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def depth(detail: dict[str, Any], path: Path, title: str) -> Path:
    plt = _pyplot()
    depths = detail["depths"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for prefetch, marker in ((1, "o"), (32, "^")):
        rates = [detail["rates"][str(d)][f"prefetch{prefetch}"] for d in depths]
        ax.plot(depths, rates, marker=marker, label=f"1 process, prefetch {prefetch}")
    ax.set_xscale("log")
    ax.set_xlabel("jobs waiting in the queue")
    ax.set_ylabel("no-op jobs/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    mem = [detail["memory"][str(d)]["used_memory"] / 2**30 for d in depths]
    ax2 = ax.twinx()
    ax2.plot(depths, mem, color="grey", linestyle="--", marker=".", label="Redis used_memory")
    ax2.set_ylabel("Redis used_memory, GiB", color="grey")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
