"""int8 inference on torch.ao: torch's own deprecation warnings handled, every other warning kept, and a
plain error where a torch has no int8 path."""

from __future__ import annotations

import logging
import sys
import warnings

import pytest
from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.extractor import quantization
from kecpm.extractor.quantization import Int8Unavailable, quantize_linear_int8


def test_int8_raises_none_of_torchs_deprecation_warnings_and_logs_once_what_it_uses(
    trained_tiny, synthetic_split, caplog
):
    model, _ = trained_tiny
    _, val = synthetic_split
    quantization._say_once_what_runs_it.cache_clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="kecpm.extractor"):
        warnings.simplefilter("always")
        fast = model.quantized()
        model.quantized()
        fast.predict(val[:4])
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    told = [r.getMessage() for r in caplog.records if "torch.ao.quantization" in r.getMessage()]
    assert told == ["int8: torch.ao.quantization.quantize_dynamic (deprecated by torch for torchao, still supported)"]


def test_other_warnings_during_quantization_still_reach_the_caller():
    import torch

    class Noisy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def __deepcopy__(self, memo):  # quantize_dynamic copies the module it is given
            warnings.warn("a warning of the caller's own", UserWarning, stacklevel=2)
            copy = Noisy()
            copy.load_state_dict(self.state_dict())
            return copy

    with pytest.warns(UserWarning, match="a warning of the caller's own"):
        quantized = quantize_linear_int8(Noisy())
    assert "quantized.dynamic" in type(quantized.linear).__module__


def test_a_torch_without_torch_ao_gets_a_plain_error(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)  # what a torch without it does on import
    with pytest.raises(Int8Unavailable, match=r"needs torch\.ao\.quantization, .* predict in float \(without --int8\)"):
        quantize_linear_int8(torch.nn.Linear(2, 2))


def test_predict_int8_without_torch_ao_says_so_in_one_line(trained_tiny, split_dir, tmp_path, monkeypatch):
    _, directory = trained_tiny
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)
    out = tmp_path / "p.jsonl"
    result = CliRunner().invoke(
        app, ["predict", "--model", str(directory), "--data", str(split_dir / "val.json"), "--out", str(out), "--int8"]
    )
    assert result.exit_code == 1
    assert "error: int8 inference needs torch.ao.quantization" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_bfloat16_prediction_matches_float32_and_auto_follows_the_cpu(trained_tiny, synthetic_split):
    from kecpm.extractor.precision import bfloat16_native, resolve_precision

    model, _ = trained_tiny
    _, val = synthetic_split
    before = model.config
    try:
        found = {}
        for precision in ("float32", "bfloat16"):
            model.config = before.model_copy(update={"inference_precision": precision})
            found[precision] = model.predict(val)
        # the same quintuples: bfloat16 moves the encoder's states by far less than any decision margin here
        assert found["bfloat16"] == found["float32"]
    finally:
        model.config = before
    assert resolve_precision("auto") == ("bfloat16" if bfloat16_native() else "float32")
    assert resolve_precision("float32") == "float32"
    assert model.quantized().config.inference_precision == "float32"
