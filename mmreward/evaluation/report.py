"""Report building blocks: Markdown tables, JSON files, and matplotlib plots with intervals.

Generic on purpose: reward-model benchmarks (``eval/reward_bench.py``) and generator benchmarks use the same
pieces. Plots are written with the non-interactive Agg backend, so they work on machines without a display.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Distinct, colour-blind-safe colours (Okabe & Ito 2008) for up to 8 series; more cycle.
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def percent(value: float | None, digits: int = 1) -> str:
    """0.7359 -> "73.6"; None or NaN -> "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.{digits}f}"


def format_estimate(estimate: Mapping[str, Any] | None, digits: int = 1) -> str:
    """An estimate dict (value, low, high) as ``"73.6 [72.9, 74.3]"`` in percent; "n/a" when missing."""
    if not estimate:
        return "n/a"
    text = percent(estimate["value"], digits)
    low, high = estimate.get("low"), estimate.get("high")
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" [{percent(low, digits)}, {percent(high, digits)}]"
    return text


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; ``|`` in cells is escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename), NaN written as null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_nan_to_none(data), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_grouped_bars(
    path: Path,
    groups: Sequence[str],
    series: Mapping[str, Sequence[Mapping[str, Any] | None]],
    *,
    title: str,
    ylabel: str,
    reference: float | None = None,
) -> None:
    """Bars per group (e.g. dimension) and series (e.g. reward), with interval whiskers.

    ``series[name][g]`` is an estimate dict (``value``, ``low``, ``high``, fractions) or None (no bar). Values are
    drawn in percent. ``reference`` draws a dashed horizontal line (e.g. chance level).
    """
    plt = _pyplot()
    names = list(series)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 1.1 * len(groups) * max(len(names), 1) * 0.6), 4.2))
    for s, name in enumerate(names):
        xs, heights, errors = [], [], [[], []]
        for g, estimate in enumerate(series[name]):
            if not estimate or estimate.get("value") is None or math.isnan(estimate["value"]):
                continue
            value = 100 * estimate["value"]
            low = estimate.get("low")
            high = estimate.get("high")
            xs.append(g - 0.4 + width * (s + 0.5))
            heights.append(value)
            has_interval = low is not None and high is not None and not (math.isnan(low) or math.isnan(high))
            errors[0].append(value - 100 * low if has_interval else 0.0)
            errors[1].append(100 * high - value if has_interval else 0.0)
        colour = _COLOURS[s % len(_COLOURS)]
        ax.bar(xs, heights, width=width * 0.95, color=colour, label=name, yerr=errors, capsize=3, ecolor="#333333")
        # Value labels go above the upper whisker, where they cannot collide with it.
        for x, h, top in zip(xs, heights, [h + e for h, e in zip(heights, errors[1], strict=True)], strict=True):
            ax.annotate(
                f"{h:.1f}", (x, top), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points"
            )
    if reference is not None:
        ax.axhline(100 * reference, linestyle="--", color="#777777", linewidth=1, label=f"{100 * reference:.0f}%")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 108)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # Legend below the axes, so that it never hides a bar.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(names) + 1, 3), frameon=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_curves(
    path: Path,
    panels: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> None:
    """One panel per key of ``panels`` (e.g. dimension), one step curve per series (e.g. reward).

    ``panels[panel][name]`` has ``x`` and ``y`` lists (fractions, drawn in percent for ``y``) and optionally
    ``best_x``/``best_y`` (marked with a dot) and ``label`` (legend text).
    """
    plt = _pyplot()
    count = max(len(panels), 1)
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    for index, (panel, curves) in enumerate(panels.items()):
        ax = axes[index // columns][index % columns]
        for s, (name, curve) in enumerate(curves.items()):
            colour = _COLOURS[s % len(_COLOURS)]
            ax.step(
                curve["x"], [100 * y for y in curve["y"]], where="post", color=colour, label=curve.get("label", name)
            )
            if curve.get("best_x") is not None:
                ax.plot([curve["best_x"]], [100 * curve["best_y"]], "o", color=colour, markersize=5)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, framealpha=0.8)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_image_grid(
    path: Path,
    rows: Sequence[Sequence[Any]],
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    gap_after: int | None = None,
    cell_inches: float = 1.6,
) -> None:
    """A grid of images with a caption per row (e.g. the prompt) and per column (e.g. ``base #0``).

    ``rows[r][c]`` is a ``(3, H, W)`` float tensor in [0, 1] (or anything with ``.permute``), or None for an empty
    cell. ``gap_after`` leaves an empty column after that many columns (between the runs of a side-by-side grid).
    Long row captions are wrapped.
    """
    import textwrap

    plt = _pyplot()
    columns = max((len(r) for r in rows), default=0)
    positions = [c + (1 if gap_after is not None and c >= gap_after else 0) for c in range(columns)]
    width = columns + (1 if gap_after is not None else 0)
    ratios = [0.25 if gap_after is not None and k == gap_after else 1.0 for k in range(width)]
    height = cell_inches * len(rows) + 0.6
    fig, axes = plt.subplots(
        len(rows),
        width,
        figsize=(cell_inches * (sum(ratios) + 1.5), height),
        squeeze=False,
        gridspec_kw={"width_ratios": ratios},
    )
    for r, row in enumerate(rows):
        for ax in axes[r]:
            ax.axis("off")
        for c, image in enumerate(row):
            ax = axes[r][positions[c]]
            if image is not None:
                ax.imshow(image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            if r == 0 and c < len(column_labels):
                ax.set_title(column_labels[c], fontsize=8)
        lines = textwrap.wrap(row_labels[r], 28) if r < len(row_labels) else []
        label = "\n".join(lines[:4]) + (" ..." if len(lines) > 4 else "")
        axes[r][0].text(-0.08, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7)
    # Room on the left for the row captions and on top for the title (0.3 in) above the column captions (0.3 in).
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    fig.subplots_adjust(left=1.5 / (sum(ratios) + 1.5), top=1 - 0.6 / height, wspace=0.05, hspace=0.08)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
