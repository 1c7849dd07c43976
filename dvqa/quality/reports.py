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
from dvqa.core.words import plural
from dvqa.quality.meter import INFINITY_JSON

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


def plot(series: dict[str, list[float]], title: str, unit: str, duplicated: list[int] | None = None
         ) -> dict[str, object]:
    """What the template needs to draw one line plot: scaled points, grid lines and axis labels, and a
    mark under each output frame in `duplicated` (it repeats the frame before it: its numbers are a
    second measurement of one captured picture, not a new one)."""
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
        "duplicated": [{"frame": k, "at": f"{_x(k, count):.1f}"} for k in duplicated or [] if k < count],
    }


def _floats(values: list) -> list[float]:
    return [float(v) for v in values]  # "Infinity" strings read back as inf


def number(value: float | str, decimals: int) -> str:
    """A measured number as people read it (docs/cli-conventions.md): fixed decimals; an infinite PSNR
    (identical pictures; the string "Infinity" in JSON) as ∞."""
    if isinstance(value, str) or math.isinf(float(value)):
        return "∞" if str(value).lstrip("+") in ("Infinity", "inf") else str(value)
    return f"{float(value):.{decimals}f}"


def bit_exact(quality: dict | None) -> bool:
    """Whether every scored frame is identical to its source frame (every PSNR infinite), as a
    passthrough's are: then there is nothing to rank, plot against or show as a difference."""
    if not quality:
        return False
    summary = quality.get("summary") or {}
    return all(str((summary.get(name) or {}).get("min")) == INFINITY_JSON for name in ("psnr_y", "psnr_cb", "psnr_cr"))


def settings_text(encoder: dict | None) -> str:
    """The encoder and its settings as people read them: `libx264: preset veryfast, crf 18, ...`."""
    if not encoder:
        return ""
    options = ", ".join(f"{k} {v}" for k, v in (encoder.get("options") or {}).items())
    return f"{encoder.get('encoder')}" + (f": {options}" if options else "")


def stream_text(record: dict, settings: bool = True) -> str:
    """Passthrough or re-encode, in one phrase (the text summary's `stream` line, the HTML report's head;
    `settings`: name the encoder's settings, which the HTML report shows in a row of their own)."""
    plan = record.get("plan") or {}
    if record.get("passthrough"):
        return "passed through: the H.264 bitstream is wrapped unchanged (no re-encoding, no second generation of loss)"
    refusal = plan.get("passthrough_refusal")
    encoder = record.get("encoder") or {}
    return (f"re-encoded with {settings_text(encoder) if settings else encoder.get('encoder')}"
            + (f" (passthrough not possible: {refusal})" if refusal else ""))


def verdict(record: dict) -> dict[str, object]:
    """The page's verdict and what it is judged against, with or without --profile.

    `state`: pass, fail or measured (a `dvqa quality` comparison without a profile has nothing to be
    judged against: its numbers are measured, not judged).
    """
    findings = record.get("findings") or []
    errors = [f for f in findings if f.get("severity") == "error"]
    warnings = [f for f in findings if f.get("severity") == "warning"]
    profile = record.get("profile")
    floors = len(profile["quality_floors"]) if profile else 0
    converted = record.get("command") == "convert"
    parts = []
    if profile and floors:
        parts.append(f"the {profile['name']} profile's {plural(floors, 'quality floor')}")
    if converted:
        parts.append("dvqa's stream-layer validation of the file written")
    if not parts:
        return {"state": "measured", "headline": "MEASURED, NOT JUDGED",
                "against": "No --profile was given, so no quality floor applies: the numbers below are "
                           "measurements for a person to judge", "findings": findings}
    against = " and ".join(parts)
    if converted and not (profile and floors):
        against += (" (no --profile: no quality floor was applied, so the PSNR and SSIM below are measured, "
                     "not judged)" if record.get("quality") else " (quality not measured: --no-quality)")
    floor_ids = {f["id"] for f in profile["quality_floors"]} if profile else set()
    missed = [f for f in errors if f.get("code") in floor_ids]
    others = [f for f in errors if f.get("code") not in floor_ids]
    if errors:
        headline = "FAIL: " + ", ".join(
            ([f"{plural(len(missed), 'quality floor')} not met"] if missed else [])
            + ([f"{plural(len(others), 'error')} in the file written"] if others else []))
    else:
        met = [f"every quality floor of the {profile['name']} profile is met"] if profile and floors else []
        checked = ["the file written validates"] if converted else []
        headline = "PASS: " + " and ".join(met + checked) + (
            f" ({plural(len(warnings), 'warning')})" if warnings else "")
    return {"state": "fail" if errors else "pass", "headline": headline, "against": against, "findings": findings}


def render_html(record: dict, quality) -> str:
    env = templates()
    env.filters["num"] = number
    q = record.get("quality")
    exact = bit_exact(q)
    plots, worst = [], []
    if q and "per_frame" in q and not exact:
        pf = q["per_frame"]
        duplicated = list((record.get("timing") or {}).get("duplicated_output_frames") or [])
        plots.append(plot({k: _floats(pf[k]) for k in ("psnr_y", "psnr_cb", "psnr_cr")},
                          "PSNR per output frame", "dB", duplicated))
        plots.append(plot({"ssim_y": _floats(pf["ssim_y"])},
                          f"SSIM of Y per output frame ({q['ssim_definition']['name']})", "", duplicated))
        if quality is not None:  # an identical frame is not among the worst, whatever its rank
            kept = [k for k in quality.thumbs if not math.isinf(float(pf["psnr_y"][k]))]
            for k in sorted(kept, key=lambda k: (float(pf["psnr_y"][k]), k)):
                pngs = quality.thumbs[k].png()
                worst.append({
                    "output_frame": k, "source_frame": pf["source_frame"][k],
                    "psnr_y": pf["psnr_y"][k], "ssim_y": pf["ssim_y"][k],
                    **{name: "data:image/png;base64," + base64.b64encode(data).decode()
                       for name, data in pngs.items()},
                })
    return env.get_template("quality.html").render(
        r=record, q=q, plots=plots, worst=worst, bit_exact=exact, verdict=verdict(record),
        stream=stream_text(record, settings=False) if record.get("plan") else "", plural=plural,
        json_record=json.dumps(_without_arrays(record), indent=1))


def _without_arrays(record: dict) -> dict:
    """The record minus its long per-frame arrays, for the page's appendix."""
    out = dict(record)
    out.pop("timing_map", None)
    if out.get("quality"):
        out["quality"] = {k: v for k, v in out["quality"].items() if k != "per_frame"}
    return out
