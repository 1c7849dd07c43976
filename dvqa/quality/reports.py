"""Report files: the JSON record an auditor re-computes from, and a self-contained HTML page.

The kind is chosen by the file name's suffix (.json or .html/.htm). The HTML page
embeds everything (inline SVG plots, PNG thumbnails as data: URIs, no network,
no external files), so it can be attached to a submission as is.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

from dvqa.core import outputs
from dvqa.core.errors import UsageError
from dvqa.core.resources import templates

PLOT_WIDTH, PLOT_HEIGHT, MARGIN = 900, 220, 44
SERIES_COLOURS = {"psnr_y": "#1f5fbf", "psnr_cb": "#2e9e5b", "psnr_cr": "#c0392b", "ssim_y": "#6c3fa0"}


def kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".html", ".htm"):
        return "html"
    raise UsageError(f"--report {path}: name it .json or .html to choose the report kind.")


def write(path: Path, record: dict, quality=None) -> None:
    """Write `record` (a conversion or quality record) as JSON or HTML, atomically."""
    kind = kind_of(path)
    text = json.dumps(record, indent=1) + "\n" if kind == "json" else render_html(record, quality)
    outputs.write_atomic(path, text)  # private (patient data), never through a planted link


def _x(k: int, count: int) -> float:
    return MARGIN + (PLOT_WIDTH - 2 * MARGIN) * k / max(1, count - 1)


def _y(v: float, low: float, high: float) -> float:
    return MARGIN + (PLOT_HEIGHT - 2 * MARGIN) * (1 - (v - low) / ((high - low) or 1.0))


def _polyline(values: list[float], low: float, high: float, count: int) -> str:
    points = []
    for k, v in enumerate(values):
        v = high if math.isinf(v) else min(max(v, low), high)
        points.append(f"{_x(k, count):.1f},{_y(v, low, high):.1f}")
    return " ".join(points)


def ticks(low: float, high: float, most: int = 6, whole: bool = False) -> list[float]:
    """Round values for axis labels and grid lines between `low` and `high` (1, 2, 2.5 or 5 x 10^n apart)."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / most
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if whole:
        step = max(1.0, round(step))
    first = math.ceil(low / step - 1e-9) * step
    count = int(math.floor((high - first) / step + 1e-9)) + 1
    return [first + n * step for n in range(count)]


def _label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / 10 ** math.floor(math.log10(step)), 3)
                                                                 == 2.5 else 0)
    return f"{value:.{decimals}f}"


def plot(series: dict[str, list[float]], title: str, unit: str) -> dict[str, object]:
    """What the template needs to draw one line plot: scaled points, grid lines and axis labels."""
    finite = [v for values in series.values() for v in values if not math.isinf(v)]
    if finite:
        low, high = min(finite), max(finite)
        pad = (high - low) * 0.05 or (1.0 if unit == "dB" else 0.001)
        low, high = low - pad, high + pad
    else:  # every frame identical: PSNR infinite, SSIM 1
        low, high = (0.0, 100.0) if unit == "dB" else (0.0, 1.0)
    count = max(len(v) for v in series.values())
    infinite = sum(1 for v in next(iter(series.values())) if math.isinf(v))
    y_values = ticks(low, high, 6)
    y_step = y_values[1] - y_values[0] if len(y_values) > 1 else 1.0
    x_values = ticks(0, count - 1, 10, whole=True)
    return {
        "title": title, "unit": unit, "width": PLOT_WIDTH, "height": PLOT_HEIGHT, "margin": MARGIN,
        "frames": count, "infinite": infinite,
        "y_ticks": [{"at": f"{_y(v, low, high):.1f}", "label": _label(v, y_step)} for v in y_values],
        "x_ticks": [{"at": f"{_x(int(v), count):.1f}", "label": str(int(v))} for v in x_values],
        "lines": [{"name": name, "colour": SERIES_COLOURS[name], "points": _polyline(v, low, high, count),
                   "count": len(v)} for name, v in series.items()],
    }


def _floats(values: list) -> list[float]:
    return [float(v) for v in values]  # "Infinity" strings read back as inf


def number(value: float | str, decimals: int) -> str:
    """A measured number as people read it (docs/cli-conventions.md): fixed decimals; "Infinity" as is."""
    return value if isinstance(value, str) else f"{float(value):.{decimals}f}"


def render_html(record: dict, quality) -> str:
    env = templates()
    env.filters["num"] = number
    q = record.get("quality")
    plots, worst = [], []
    if q and "per_frame" in q:
        pf = q["per_frame"]
        plots.append(plot({k: _floats(pf[k]) for k in ("psnr_y", "psnr_cb", "psnr_cr")},
                          "PSNR per output frame", "dB"))
        plots.append(plot({"ssim_y": _floats(pf["ssim_y"])},
                          f"SSIM of Y per output frame ({q['ssim_definition']['name']})", ""))
        if quality is not None:
            for k in sorted(quality.thumbs, key=lambda k: (float(pf["psnr_y"][k]), k)):
                pngs = quality.thumbs[k].png()
                worst.append({
                    "output_frame": k, "source_frame": pf["source_frame"][k],
                    "psnr_y": pf["psnr_y"][k], "ssim_y": pf["ssim_y"][k],
                    **{name: "data:image/png;base64," + base64.b64encode(data).decode()
                       for name, data in pngs.items()},
                })
    return env.get_template("quality.html").render(r=record, q=q, plots=plots, worst=worst,
                                                   json_record=json.dumps(_without_arrays(record), indent=1))


def _without_arrays(record: dict) -> dict:
    """The record minus its long per-frame arrays, for the page's appendix."""
    out = dict(record)
    out.pop("timing_map", None)
    if out.get("quality"):
        out["quality"] = {k: v for k, v in out["quality"].items() if k != "per_frame"}
    return out
