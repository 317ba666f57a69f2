"""Model files: round trip, and every bad file reported clearly without running code."""
from __future__ import annotations

import pickle

import pytest
import torch

from segdiff_core.checkpoint import CheckpointError, atomic_save, atomic_write, load_model, model_payload


def test_round_trip_restores_weights_config_and_metadata(saved):
    path, model, cfg = saved
    loaded, cfg2, meta = load_model(path)
    assert cfg2 == cfg and meta == {"trained_on": "unit test", "steps": 3}
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x, t, img = torch.randn(2, 1, 32, 32), torch.tensor([1, 50]), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x, t, img), loaded(x, t, img))
    assert not loaded.training


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt.*empty"):
        load_model(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="folder"):
        load_model(tmp_path)


def test_truncated_file_is_reported_by_name(saved, tmp_path):
    path, _, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*(corrupt|truncated)"):
        load_model(bad)


def test_garbage_file(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00\x01not a model at all" * 100)
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_model(bad)


class _Evil:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "segdiff-model", "payload": evil}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"evil\.pt.*(not a safe|refused)"):
        load_model(path)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(evil))
    with pytest.raises(CheckpointError):
        load_model(plain)
    assert not marker.exists()


def test_weights_that_do_not_match_the_config(saved, tmp_path):
    path, model, cfg = saved
    payload = model_payload(model, cfg)
    payload["config"]["model"]["model_channels"] = 24
    atomic_save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match=r"mismatch\.pt.*do not match.*wrong shape"):
        load_model(tmp_path / "mismatch.pt")
    payload = model_payload(model, cfg)
    del payload["state_dict"]["out.2.weight"]
    atomic_save(payload, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing.*out\.2\.weight"):
        load_model(tmp_path / "missing.pt")


def test_wrong_format_version_config_and_nan(saved, tmp_path):
    path, model, cfg = saved
    atomic_save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a segdiff model file"):
        load_model(tmp_path / "other.pt")
    payload = model_payload(model, cfg)
    payload["version"] = 99
    atomic_save(payload, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_model(tmp_path / "v99.pt")
    payload = model_payload(model, cfg)
    payload["config"]["model"]["bogus"] = 1
    atomic_save(payload, tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match=r"invalid config.*bogus"):
        load_model(tmp_path / "cfg.pt")
    payload = model_payload(model, cfg)
    payload["state_dict"]["out.2.weight"][:] = float("nan")
    atomic_save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(tmp_path / "nan.pt")


def test_atomic_save_keeps_the_old_file_when_writing_fails(saved):
    path, _, _ = saved
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_atomic_write_takes_text_bytes_or_a_writer_and_never_leaves_half_a_file(tmp_path):
    path = tmp_path / "sub" / "out.json"
    assert atomic_write(path, "größe\n") == path and path.read_bytes() == "größe\n".encode()
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"

    def half_then_fail(fh):
        fh.write(b"half of the new content")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]
