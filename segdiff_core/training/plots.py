"""Training curves as a PNG (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from segdiff_core.checkpoint import atomic_write


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training(log_path: str | Path, out_png: str | Path) -> Path:
    """Loss (raw and smoothed) and validation IoU/F1 against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r.get("val_iou"), r.get("val_f1")) for r in rows if "val_iou" in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if loss:
        s, l = np.array(loss).T
        axes[0].plot(s, l, color="0.7", lw=0.8, label="loss")
        if len(l) >= 5:
            k = max(1, len(l) // 20)
            smooth = np.convolve(l, np.ones(k) / k, mode="valid")
            axes[0].plot(s[k - 1 :], smooth, color="C0", lw=1.6, label=f"mean of {k}")
        axes[0].set_yscale("log")
    axes[0].set(xlabel="step", ylabel="eps MSE", title="training loss (Eq. 18)")
    axes[0].legend(loc="upper right")
    if val:
        s, iou, f1 = zip(*val)
        axes[1].plot(s, iou, "o-", label="IoU")
        axes[1].plot(s, f1, "s-", label="F1")
        axes[1].set_ylim(0, 1)
        axes[1].legend(loc="lower right")
    axes[1].set(xlabel="step", title="validation (EMA weights, held-out prompts)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(out_png, buf.getvalue())
