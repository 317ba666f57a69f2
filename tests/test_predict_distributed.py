"""segdiff-predict on a real 2-worker dask LocalCluster: same output as one process, and a
worker killed mid-run has its tasks redone."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.predict.distributed import local_cluster, run_on_dask
from segdiff_core.predict.run import ImageJob, PredictConfig, predict_image
from segdiff_core.proposals import ProposalSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("img")
    tile = generate_tile("he", 160, rng=21, n_nuclei=14, radius_range=(6, 9))
    tifffile.imwrite(folder / "img.tif", tile.image)
    tifffile.imwrite(folder / "gt.tif", tile.labels)
    return folder / "img.tif", folder / "gt.tif"


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client

    with local_cluster(2) as cl, Client(cl) as client:
        yield cl, client


CONFIG = PredictConfig(
    model=str(bundled_model_path()), device="cpu", tile=48, halo=24,
    proposals=ProposalSettings(seed=7, batch_size=8), inference={"generations": 2, "steps": 2},
)


def read_all(out: Path) -> dict[str, np.ndarray]:
    return {m: tifffile.imread(out / f"img_{m}.tif") for m in ("labels", "probability", "uncertainty")}


@pytest.fixture(scope="module")
def serial(image, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    predict_image(ImageJob(image[0], prompt_labels=image[1]), out, CONFIG)
    return read_all(out), (out / "img_objects.csv").read_text()


def assert_same(a, b):
    for m in a[0]:
        np.testing.assert_array_equal(a[0][m], b[0][m], err_msg=m)
    assert a[1] == b[1]


def test_two_worker_cluster_equals_single_process(image, cluster, serial, tmp_path):
    _, client = cluster
    from distributed import get_task_stream

    out = tmp_path / "dask"
    with get_task_stream(client) as stream:
        predict_image(ImageJob(image[0], prompt_labels=image[1]), out, CONFIG, lambda t: run_on_dask(client, t))
    got = read_all(out), (out / "img_objects.csv").read_text()
    assert got[0]["labels"].max() >= 10
    assert_same(serial, got)
    assert len({t["worker"] for t in stream.data}) == 2  # both workers ran tiles


def test_killed_worker_tasks_are_redone_and_output_complete(image, cluster, serial, tmp_path):
    cl, client = cluster
    pids = client.run(os.getpid)
    killed: list[int] = []

    def runner(tasks):
        assert len(tasks) > 6
        for k, result in enumerate(run_on_dask(client, tasks)):
            if k == 1:  # mid-run: other tasks are queued or running on both workers
                pid = next(iter(pids.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            yield result

    out = tmp_path / "killed"
    predict_image(ImageJob(image[0], prompt_labels=image[1]), out, CONFIG, runner)
    assert killed
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the worker
    assert killed[0] not in client.run(os.getpid).values()
    assert_same(serial, (read_all(out), (out / "img_objects.csv").read_text()))


def test_cli_with_scheduler_address_equals_cli_in_process(image, cluster, tmp_path):
    from segdiff_core.predict.cli import main

    cl, _ = cluster
    args = [str(image[0]), "--prompts-labels", str(image[1]), "--tile", "64", "--halo", "24",
            "--generations", "2", "--steps", "2", "--seed", "3", "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "here")]) == 0
    assert main([*args, "-o", str(tmp_path / "there"), "--scheduler", cl.scheduler_address]) == 0
    for name in ("img_labels.tif", "img_probability.tif", "img_uncertainty.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "here" / name), tifffile.imread(tmp_path / "there" / name))
    assert (tmp_path / "here" / "img_objects.csv").read_text() == (tmp_path / "there" / "img_objects.csv").read_text()
    settings = (tmp_path / "there" / "img_settings.json").read_text()
    assert '"seed": 3' in settings
