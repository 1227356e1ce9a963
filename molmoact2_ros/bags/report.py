"""The evaluation report: one self-contained HTML file (plots embedded as PNG, no network resources) and a
JSON file of the metrics. Plots per bag: per-joint predicted vs recorded over time, error over time, error
by horizon step; with several bags an aggregate table comes first. matplotlib (Agg) draws the plots.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.bags.eval import BagEval, aggregate, errors

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}
.err{color:#a00;font-weight:bold}img{max-width:100%}h2{border-top:2px solid #888;padding-top:.5em}"""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plots(result: BagEval) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    names = result.joint_names
    if result.predictions and result.reference is not None:
        cols = 2
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(12, 2.2 * rows), squeeze=False, sharex=True)
        t0 = result.predictions[0].stamp_s
        ref = result.reference
        for j, name in enumerate(names):
            ax = axes[j // cols][j % cols]
            ax.plot(ref.t - t0, ref.positions[:, j], color="black", lw=1.2, label="recorded")
            for k, pred in enumerate(result.predictions):
                ax.plot(pred.times() - t0, pred.positions[:, j], color="tab:orange", lw=0.7, alpha=0.6,
                        label="predicted chunks" if k == 0 else None)
            ax.set_title(name, fontsize=9)
            ax.tick_params(labelsize=7)
        for k in range(len(names), rows * cols):
            axes[k // cols][k % cols].axis("off")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"predicted vs recorded ({ref.topic}); time from first decision (s)", fontsize=10)
        out.append(_png(fig))
        err = errors(result)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no reference there
            over_time = np.nanmean(err, axis=(1, 2))
            by_step = np.nanmean(err, axis=0)  # (steps, dof)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3))
        a1.plot([p.stamp_s - t0 for p in result.predictions], over_time, marker=".", lw=0.8)
        a1.set_xlabel("decision time (s)")
        a1.set_ylabel("mean |error| over the chunk")
        a1.set_title("error over time", fontsize=10)
        for j, name in enumerate(names):
            a2.plot(np.arange(by_step.shape[0]), by_step[:, j], lw=0.8, label=name)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no reference there
            a2.plot(np.arange(by_step.shape[0]), np.nanmean(by_step, axis=1), color="black", lw=2, label="all")
        a2.set_xlabel("horizon step")
        a2.set_ylabel("mean |error|")
        a2.set_title("error by horizon step", fontsize=10)
        a2.legend(fontsize=6, ncol=2)
        out.append(_png(fig))
    return out


def _bag_section(result: BagEval) -> str:
    m = result.metrics
    parts = [f"<h2>{html.escape(result.bag)}</h2>"]
    if result.error:
        parts.append(f'<p class="err">stopped: {html.escape(result.error)} — what was evaluated before it is '
                     "shown below</p>")
    lat = m.get("recorded_latency_ms") or {}
    rows = [("mode", m["mode"]), ("reference", m["reference"]), ("decisions", m["decisions"]),
            ("decisions missed / blocked", f"{m['decisions_missed']} / {m['decisions_blocked']}"),
            ("bag duration (s)", m["bag_duration_s"]), ("evaluation wall time (s)", m["wall_s"]),
            ("× real time", m["realtime_factor"]), ("recorded chunks", m["recorded_chunks"]),
            ("recorded chunk latency p50 / p99 / max (ms)",
             " / ".join(_fmt(lat.get(k)) for k in ("p50", "p99", "max")) if lat else "–"),
            ("splice jumps: count / mean / max", f"{m['splice_jumps']['count']} / "
             f"{_fmt(m['splice_jumps']['overall']['mean'])} / {_fmt(m['splice_jumps']['overall']['max'])}")]
    if "vs_recorded_chunks" in m:
        rows.append(("|predicted − recorded chunk| mean / max",
                     f"{_fmt(m['vs_recorded_chunks']['mean'])} / {_fmt(m['vs_recorded_chunks']['max'])}"))
    parts.append("<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
                 + "</table>")
    if m["error_by_joint"]:
        units = m.get("units", {})
        parts.append("<p>Errors and splice jumps in robot space, each joint in its own unit (as on /joint_states): "
                     "rad for revolute joints, m or normalized 0..1 for grippers.</p>")
        head = ("<tr><th>joint</th><th>unit</th><th>mean |error|</th><th>RMS</th><th>max</th>"
                "<th>splice jump max</th></tr>")
        body = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(units.get(n, ''))}</td><td>{_fmt(s['mean'])}</td>"
            f"<td>{_fmt(s['rms'])}</td><td>{_fmt(s['max'])}"
            f"</td><td>{_fmt(m['splice_jumps']['by_joint'][n]['max'])}</td></tr>"
            for n, s in m["error_by_joint"].items())
        parts.append(f"<table>{head}{body}</table>")
    parts += _plots(result)
    return "\n".join(parts)


def _aggregate_table(results: list[BagEval], agg: dict[str, Any]) -> str:
    head = ("<tr><th>bag</th><th>decisions</th><th>mean |error|</th><th>max |error|</th><th>splice jump max</th>"
            "<th>× real time</th><th>status</th></tr>")
    body = "".join(
        f"<tr><td>{html.escape(r.bag)}</td><td>{r.metrics['decisions']}</td>"
        f"<td>{_fmt(r.metrics['error_overall']['mean'])}</td><td>{_fmt(r.metrics['error_overall']['max'])}</td>"
        f"<td>{_fmt(r.metrics['splice_jumps']['overall']['max'])}</td><td>{_fmt(r.metrics['realtime_factor'])}</td>"
        f"<td>{'ok' if not r.error else '<span class=err>' + html.escape(r.error) + '</span>'}</td></tr>"
        for r in results)
    total = (f"<tr><th>all ({agg['bags']} bags)</th><th>{agg['decisions']}</th><th>{_fmt(agg['error_mean'])}</th>"
             f"<th>{_fmt(agg['error_max'])}</th><th>{_fmt(agg['splice_jump_max'])}</th>"
             f"<th>{_fmt(agg['realtime_factor'])}</th><th>{agg['complete']} complete</th></tr>")
    return f"<h2>all bags</h2><table>{head}{body}{total}</table>"


def _clean(value: Any) -> Any:
    """NaN/inf as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_report(results: list[BagEval], out_dir: str | Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.html`` and ``metrics.json`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(results)
    doc = {"meta": meta, "aggregate": agg, "bags": [r.metrics for r in results]}
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(_clean(doc), indent=1, allow_nan=False))
    title = "MolmoAct2 bag evaluation"
    meta_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in meta.items())
    sections = ([_aggregate_table(results, agg)] if len(results) > 1 else []) + [_bag_section(r) for r in results]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style></head>"
            f"<body><h1>{title}</h1><table>{meta_rows}</table>{''.join(sections)}</body></html>")
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, json_path
