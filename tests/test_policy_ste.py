"""Quantization policies (qd/policy.py, notes 1.5 / ambiguity 5.5) and the straight-through forward
(qd/ste.py, Algorithm 1's inner step)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from qd.models.convnet import convnet
from qd.policy import QuantPolicy, io_layers, quantized_names
from qd.quant import quantize_nonuniform, quantize_uniform
from qd.ste import UniformQuantizer, quantized_forward, straight_through, substituted_forward

F64 = torch.float64

# named_parameters() order of convnet('student1'): the output layer is registered first
STUDENT1_NAMES = (
    ["out_layer.weight", "out_layer.bias"]
    + [f"convs.{i}.{k}" for i in range(4) for k in ("weight", "bias")]
    + [f"conv_norms.{i}.{k}" for i in range(4) for k in ("weight", "bias")]
    + ["fcs.0.weight", "fcs.0.bias", "fc_norms.0.weight", "fc_norms.0.bias"]
)


@pytest.fixture(scope="module")
def student1():
    torch.manual_seed(0)
    return convnet("student1")


# ---------------------------------------------------------------- policies


def test_named_parameter_order(student1):
    assert [n for n, _ in student1.named_parameters()] == STUDENT1_NAMES


def test_policy_all(student1):
    assert quantized_names(student1, QuantPolicy("all")) == STUDENT1_NAMES


def test_policy_paper_index_drops_index_0_and_last(student1):
    names = quantized_names(student1, QuantPolicy("paper_index"))
    assert names == STUDENT1_NAMES[1:-1]
    # on this net index 0 is the output weight and the last index the last BN bias (official quirk)
    kept_fp32 = set(STUDENT1_NAMES) - set(names)
    assert kept_fp32 == {"out_layer.weight", "fc_norms.0.bias"}
    assert "convs.0.weight" in names and "out_layer.bias" in names


def test_policy_paper_index_generic_sequential():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert quantized_names(m, QuantPolicy("paper_index")) == ["0.bias", "2.weight"]


def test_policy_modules_keep_first_last(student1):
    names = quantized_names(student1, QuantPolicy("modules"))
    dropped = [n for n in STUDENT1_NAMES if n not in names]
    assert dropped == ["out_layer.weight", "out_layer.bias", "convs.0.weight", "convs.0.bias"]
    assert names == [n for n in STUDENT1_NAMES if n not in dropped]  # order kept
    assert io_layers(student1) == ("convs.0", "out_layer")


def test_policy_modules_no_first_last(student1):
    assert quantized_names(student1, QuantPolicy("modules", keep_first_last=False)) == STUDENT1_NAMES


def test_policy_modules_no_biases(student1):
    names = quantized_names(student1, QuantPolicy("modules", keep_first_last=False, biases=False))
    assert names == [n for n in STUDENT1_NAMES if not n.endswith(".bias")]
    names = quantized_names(student1, QuantPolicy("modules", biases=False))
    assert names == [n for n in STUDENT1_NAMES if not n.endswith(".bias")
                     and not n.startswith(("convs.0.", "out_layer."))]


def test_policy_modules_no_norm(student1):
    names = quantized_names(student1, QuantPolicy("modules", keep_first_last=False, norm=False))
    assert names == [n for n in STUDENT1_NAMES if "norms" not in n]
    assert len(names) == len(STUDENT1_NAMES) - 10  # 5 BN layers x (gamma, beta)


def test_policy_modules_embeddings_and_fallback_io_layers():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.ln = nn.LayerNorm(4)
            self.mid = nn.Linear(4, 4)
            self.head = nn.Linear(4, 10)

    m = Tiny()
    assert io_layers(m) == ("emb", "head")  # first and last layer in registration order
    all_names = ["emb.weight", "ln.weight", "ln.bias", "mid.weight", "mid.bias", "head.weight", "head.bias"]
    assert quantized_names(m, QuantPolicy("modules")) == ["ln.weight", "ln.bias", "mid.weight", "mid.bias"]
    assert quantized_names(m, QuantPolicy("modules", keep_first_last=False, embeddings=False)) == all_names[1:]
    assert quantized_names(m, QuantPolicy("modules", keep_first_last=False, norm=False)) == \
        ["emb.weight", "mid.weight", "mid.bias", "head.weight", "head.bias"]


def test_io_layers_needs_a_layer():
    with pytest.raises(ValueError):
        io_layers(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


def test_policy_rejects_unknown_name():
    with pytest.raises(ValueError, match="quant.policy"):
        QuantPolicy("first_last")


def test_policy_describe():
    assert QuantPolicy("all").describe() == "all"
    assert QuantPolicy("paper_index").describe() == "paper_index"
    assert QuantPolicy("modules").describe() == "modules(first_last=fp32,biases=q,norm=q,embeddings=q)"
    assert QuantPolicy("modules", keep_first_last=False, biases=False, norm=False, embeddings=False).describe() \
        == "modules(first_last=q,biases=fp32,norm=fp32,embeddings=fp32)"


# ---------------------------------------------------------------- straight-through estimator


def test_straight_through_forward_is_q_backward_is_identity():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, generator=g, dtype=F64, requires_grad=True)
    c = torch.randn(40, generator=g, dtype=F64)

    def q(t):
        return quantize_uniform(t, 2, 16)

    y = straight_through(w, q)
    assert torch.equal(y.detach(), q(w.detach()))
    (c * y).sum().backward()
    assert torch.equal(w.grad, c)


def _small_model():
    torch.manual_seed(1)
    m = convnet("student3", image_size=8, dropout=False).double()
    return m


def test_quantized_forward_matches_quantized_copy():
    """Output and gradients equal those of a copy whose weights were set to Q(w) by hand."""
    model = _small_model()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 8, 8, generator=g, dtype=F64)
    c = torch.randn(6, 10, generator=g, dtype=F64)
    names = quantized_names(model, QuantPolicy("paper_index"))
    quantizers = {n: UniformQuantizer(2, 64) for n in names}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    ref = copy.deepcopy(model)
    state = ref.state_dict()
    for n in names:
        state[n] = quantize_uniform(before[n], 2, 64)
    ref.load_state_dict(state)

    out = quantized_forward(model, quantizers, x)
    ref_out = ref(x)
    torch.testing.assert_close(out, ref_out, rtol=1e-13, atol=1e-13)
    # a model with logits ReLU outputs zeros for many logits; make sure something non-trivial is compared
    assert (ref_out > 0).sum() > 10
    # the quantization actually changed the output (else the check would be vacuous)
    assert not torch.allclose(model(x), ref_out, rtol=0, atol=1e-6)

    (c * out).sum().backward()
    (c * ref_out).sum().backward()
    ref_params = dict(ref.named_parameters())
    for n, p in model.named_parameters():
        # STE: grad wrt fp weight == grad wrt the quantized weight; unquantized params: ordinary grad
        torch.testing.assert_close(p.grad, ref_params[n].grad, rtol=1e-12, atol=1e-12)
        assert p.grad.abs().sum() > 0 or n.endswith("bias")
        # the shadow weights are untouched (no p.data swapping)
        assert torch.equal(p.detach(), before[n])


def test_quantized_forward_no_quantizers_is_plain_forward():
    model = _small_model().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert torch.equal(quantized_forward(model, {}, x), model(x))


def test_substituted_forward_gives_points_gradient():
    """substituted_forward with Q(w, p): output equals the loaded copy; gradient reaches the points."""
    model = _small_model().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    w = model.fcs[0].weight.detach().clone()
    pts = torch.tensor([0.0, 0.3, 0.6, 1.0], dtype=F64, requires_grad=True)
    qw = quantize_nonuniform(w, pts, 128)
    out = substituted_forward(model, {"fcs.0.weight": qw}, x)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.fcs[0].weight.copy_(qw.detach())
    ref_out = ref(x)
    torch.testing.assert_close(out, ref_out, rtol=1e-13, atol=1e-13)
    out.sum().backward()
    ref_out.sum().backward()
    # dL/dp_j = sum over elements assigned to j of dL/dQ_i * (range of i's bucket), dL/dQ from the copy
    from qd.quant import encode_nonuniform

    codes = encode_nonuniform(w, pts.detach(), 128)
    rng = codes.rng.repeat_interleave(128)[: w.numel()]
    closed = torch.zeros(4, dtype=F64).index_add_(0, codes.indices, ref.fcs[0].weight.grad.reshape(-1) * rng)
    torch.testing.assert_close(pts.grad, closed, rtol=1e-10, atol=1e-12)
    assert pts.grad.abs().sum() > 0
    assert model.fcs[0].weight.grad is None  # the substituted parameter itself is not used
    assert torch.equal(model.fcs[0].weight.detach(), w)


def test_uniform_quantizer_encode_matches_call():
    from qd.quant import decode

    w = torch.randn(300, generator=torch.Generator().manual_seed(5))
    uq = UniformQuantizer(3, 128)
    assert torch.equal(decode(uq.encode(w)), uq(w))
