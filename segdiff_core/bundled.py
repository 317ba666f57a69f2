"""The pretrained box-prompt nuclei model shipped inside the package (no download, ever)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED_MODEL_NAME = "nuclei-cpu.pt"


def bundled_model_path() -> Path:
    """Path of the bundled model file inside the installed package.

    Raises
    ------
    FileNotFoundError
        the package was installed without its model file.
    """
    path = Path(str(resources.files("segdiff_core") / "models" / BUNDLED_MODEL_NAME))
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled model {path} is missing from this installation; reinstall napari-segdiff "
            "or choose a checkpoint file"
        )
    return path
