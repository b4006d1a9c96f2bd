"""FastDPLSTM against two independent references: nn.LSTM's outputs and opacus' DPLSTM's
per-sample gradients, with the same weights."""
import warnings

import pytest
import torch
from torch import nn

from m4i.models.dp_lstm import FastDPLSTM

E, H, V = 6, 8, 11


def _pair(layers: int):
    """An opacus DPLSTM and a FastDPLSTM holding the same weights (nn.LSTM's parameter names)."""
    from opacus.layers import DPLSTM

    torch.manual_seed(0)
    ref = DPLSTM(E, H, layers, batch_first=True)
    fast = FastDPLSTM(E, H, layers)
    fast.copy_lstm_weights(dict(ref.named_parameters()))
    return ref, fast


@pytest.mark.parametrize("layers", [1, 2])
def test_outputs_equal_torch_lstm(layers):
    ref, fast = _pair(layers)
    lstm = nn.LSTM(E, H, layers, batch_first=True)
    lstm.load_state_dict({k: v for k, v in ref.state_dict().items()})
    x = torch.randn(5, 7, E)
    state = (torch.randn(layers, 5, H), torch.randn(layers, 5, H))
    for s in (None, state):
        a, (ha, ca) = lstm(x, s)
        b, (hb, cb) = fast(x, s)
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(ha, hb, atol=1e-6) and torch.allclose(ca, cb, atol=1e-6)
    # step by step with the returned state (the decoders' interface) gives the same sequence
    seq, st = [], None
    for t in range(x.shape[1]):
        out, st = fast(x[:, t:t + 1], st)
        seq.append(out)
    assert torch.allclose(torch.cat(seq, 1), lstm(x)[0], atol=1e-6)


class _Toy(nn.Module):
    def __init__(self, lstm):
        super().__init__()
        torch.manual_seed(1)
        self.emb, self.lstm, self.out = nn.Embedding(V, E), lstm, nn.Linear(H, V)

    def forward(self, x):
        return self.out(self.lstm(self.emb(x))[0])


@pytest.mark.parametrize("layers", [1, 2])
def test_per_sample_gradients_equal_opacus_dplstm(layers):
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    ref, fast = _pair(layers)
    x = torch.randint(0, V, (9, 6))
    grads = []
    for lstm in (ref, fast):
        model = _Toy(lstm)
        assert not ModuleValidator.validate(model, strict=False)
        gsm = GradSampleModule(model, loss_reduction="sum")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = gsm(x)
            nn.functional.cross_entropy(y.reshape(-1, V), x.reshape(-1), reduction="sum").backward()
        grads.append({n.removeprefix("_module."): p.grad_sample for n, p in gsm.named_parameters()})
    a, b = grads
    for k in range(layers):
        assert torch.allclose(a[f"lstm.weight_ih_l{k}"], b[f"lstm.ih.{k}.weight"], atol=1e-6)
        assert torch.allclose(a[f"lstm.weight_hh_l{k}"], b[f"lstm.hh.{k}.weight"], atol=1e-6)
        assert torch.allclose(a[f"lstm.bias_ih_l{k}"], b[f"lstm.ih.{k}.bias"], atol=1e-6)
        assert torch.allclose(a[f"lstm.bias_hh_l{k}"], b[f"lstm.ih.{k}.bias"], atol=1e-6)
    for name in ("emb.weight", "out.weight", "out.bias"):
        assert torch.allclose(a[name], b[name], atol=1e-6)
    # per-sample gradients sum to the batch gradient (a check that involves no opacus code)
    model = _Toy(_pair(layers)[1])
    y = model(x)
    nn.functional.cross_entropy(y.reshape(-1, V), x.reshape(-1), reduction="sum").backward()
    assert torch.allclose(model.lstm.hh[0].weight.grad, b["lstm.hh.0.weight"].sum(0), atol=1e-5)
