"""Training-loss plots from `metrics.jsonl` files (what a run writes next to TensorBoard)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path: Path) -> list[dict]:
  """One dict per step; a resumed run's repeated steps keep their last value."""
  by_step = {}
  for line in Path(path).read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      by_step[record["step"]] = record
  return [by_step[s] for s in sorted(by_step)]


def loss_curves(runs: dict[str, Path], out: Path, smooth: int = 10) -> Path:
  """Runs one after another on a shared step axis (stage 2 after stage 1, ...), each a raw and a
  `smooth`-step moving-average curve; text-only loss dashed where a run has text rows."""
  fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
  offset = 0
  for i, (name, path) in enumerate(runs.items()):
    rows = read_metrics(path)
    steps = [offset + r["step"] for r in rows]
    colour = f"C{i}"
    for key, style, label in (("loss", "-", name), ("loss_text_only", "--", f"{name} (text only)")):
      values = [float("nan") if r.get(key) is None else r[key] for r in rows]
      if key != "loss" and not any(v == v for v in values):  # all NaN: no text rows
        continue
      ax.plot(steps, values, style, color=colour, alpha=0.25, linewidth=0.8)
      ax.plot(steps, _moving_average(values, smooth), style, color=colour, label=label)
    offset = steps[-1] if steps else offset
    ax.axvline(offset, color="grey", linewidth=0.5)
  ax.set_xlabel("step (stages in order)")
  ax.set_ylabel("training loss (nats / token)")
  ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out)
  plt.close(fig)
  return out


def _moving_average(values: list[float], n: int) -> list[float]:
  out, window = [], []
  for v in values:
    if v == v:  # skip NaN
      window = (window + [v])[-n:]
    out.append(sum(window) / len(window) if window else float("nan"))
  return out
