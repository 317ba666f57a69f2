"""Choosing the torch device: auto picks CUDA, then Apple MPS, then the CPU."""
from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """Device names usable on this machine, best first (always ends with 'cpu')."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) -> the best available device; an explicit name is checked.

    Raises
    ------
    ValueError
        unknown name, or a device that this machine does not have.
    """
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; choose one of {DEVICE_CHOICES}")
    if base not in available_devices():
        raise ValueError(
            f"device {name!r} is not available on this machine (available: {available_devices()}); "
            "choose 'auto' or 'cpu'"
        )
    return torch.device(name)


def device_arg(text: str) -> str:
    """argparse type: a device name this machine has (``auto``, ``cpu``, ``cuda[:N]``, ``mps``),
    so that a command refuses it before any work rather than failing in a traceback."""
    import argparse

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
