"""The table a run prints: one row per figure, ours against the best other and the target.

Kept apart from ``run.py`` so that printing a saved run (``run.py --report``) needs none of
the media libraries the comparisons import.
"""

from __future__ import annotations

from typing import Any


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def markdown(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    out = [
        f"mediapipe benchmarks, {meta['date_utc']} ({'quick' if meta['quick'] else 'full'} run, "
        f"{meta['wall_s']:.0f} s): {meta['redis_server']}, nproc {meta['nproc']}, "
        f"mediajobs {meta['versions']['mediajobs']} ({meta['git']}).",
        "",
        "| comparison | figure | unit | ours | best other | best other's | ours / best other "
        "| target | met |",
        "|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for name, res in results.items():
        if "error" in res:
            out.append(f"| {name} | **failed**: {res['error']} | | | | | | | |")
            continue
        for f in res["figures"]:
            d = f if isinstance(f, dict) else f.to_json()
            best = d["best_other"]
            unit = d["unit"] + ("" if d["higher_is_better"] else " (lower is better)")
            met = {True: "yes", False: "**no**", None: ""}[d["target_met"]]
            target = d["target"] and (
                f"{'ratio' if d['target_on'] == 'ratio' else 'ours'} {d['target']}"
            )
            out.append(
                f"| {name} | {d['label']} | {unit} | {_fmt(d['ours'])} | {best or '-'} | "
                f"{_fmt(d['others'].get(best) if best else None)} | {_fmt(d['ratio'])} | "
                f"{target} | {met} |"
            )
    return "\n".join(out)
