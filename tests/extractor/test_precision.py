"""The encoder's bfloat16 path: prepacked weights give autocast's numbers, follow the weights when they
change, and stay out of the way of training and of anything that is not a parameter's linear layer."""

from __future__ import annotations

import pytest

from kecpm.extractor.precision import encoder_precision, prepacked_linear_available

torch = pytest.importorskip("torch")

needs_prepacking = pytest.mark.skipif(
    not prepacked_linear_available(), reason="this CPU or torch has no native prepacked bfloat16 linear op"
)


def _autocast(module, x):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return module(x)


def _prepacked(module, x):
    with torch.inference_mode(), encoder_precision("bfloat16"):
        return module(x)


@pytest.fixture
def layers():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.GELU(), torch.nn.Linear(96, 16, bias=False))


@needs_prepacking
def test_prepacked_weights_give_the_numbers_of_autocast(layers):
    x = torch.randn(3, 7, 48)
    ours = _prepacked(layers, x)
    assert ours.dtype == torch.bfloat16
    assert torch.equal(ours, _autocast(layers, x))


@needs_prepacking
def test_the_prepacked_copy_follows_a_weight_changed_in_place(layers):
    x = torch.randn(5, 48)
    before = _prepacked(layers, x)
    with torch.no_grad():
        layers[0].weight.mul_(-1.5)  # what an optimizer step or load_state_dict does
    after = _prepacked(layers, x)
    assert not torch.equal(after, before)
    assert torch.equal(after, _autocast(layers, x))


@needs_prepacking
def test_a_linear_of_a_plain_tensor_passes_through(layers):
    x, weight = torch.randn(4, 48), torch.randn(8, 48)  # not a parameter: nothing to pack or keep
    with torch.inference_mode(), encoder_precision("bfloat16"):
        ours = torch.nn.functional.linear(x, weight)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ours, torch.nn.functional.linear(x, weight))


def test_with_gradients_on_the_forward_pass_stays_differentiable(layers):
    x = torch.randn(2, 48)
    with encoder_precision("bfloat16"):
        out = layers(x)
    out.float().sum().backward()  # the prepacked op has no gradient, so it must not have run
    assert layers[0].weight.grad is not None


def test_float32_is_left_alone(layers):
    x = torch.randn(2, 48)
    with torch.inference_mode(), encoder_precision("float32"):
        out = layers(x)
    assert out.dtype == torch.float32
    with torch.inference_mode():
        assert torch.equal(out, layers(x))
