"""An LSTM with fast per-sample gradients under opacus, for DP-SGD on the Show-and-Tell decoder.

Why not opacus' ``DPLSTM``: it unrolls the cell in Python and runs both gate projections as
``RNNLinear`` layers *per time step*, so opacus materialises a ``[batch, 4H, H]`` per-sample
gradient for every step and sums them; on the default captioner that made one DP-SGD step ~27x
slower than a plain one and the six DP-SGD captioners ~60 % of the whole study's job time
(measured; see ``benchmarks/``).

Here the input projection of all time steps is one ``nn.Linear`` over ``[B, T, E]`` (opacus'
own Linear grad sampler sums over time in one einsum), and the recurrent projection
``h_{t-1} W_hh^T`` lives in :class:`Recurrence`, whose opacus grad sampler (registered below,
opacus' extension point) forms the per-sample gradient of ``W_hh`` once per sequence,
``sum_t dz_t h_{t-1}^T``, from the gate pre-activation gradients ``dz_t`` that autograd hands
to tensor hooks during the normal backward pass. The parameters are exactly ``nn.LSTM``'s
(``b_ih + b_hh`` folded into one bias), gate order i, f, g, o; the tests check the outputs
against ``nn.LSTM`` and the per-sample gradients against opacus' ``DPLSTM`` with equal weights.
"""
from __future__ import annotations

import torch
from torch import nn


class Recurrence(nn.Module):
    """``h_t, c_t`` of one LSTM layer from precomputed input projections ``xproj [B, T, 4H]``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.weight = nn.Parameter(torch.empty(4 * hidden, hidden))
        self._tapes: list[tuple[list, list]] = []  # per forward call: (dz_t list, h_{t-1} list)

    def forward(self, xproj: torch.Tensor, state=None):
        b, t_len, _ = xproj.shape
        if state is None:
            h = xproj.new_zeros(b, self.hidden)
            c = xproj.new_zeros(b, self.hidden)
        else:
            h, c = state
        # Tape only under opacus' hooks (GradSampleModule registers a forward hook), whose grad
        # sampler pops it: a plain training loop leaves nothing behind.
        record = bool(self._forward_hooks) and self.training and torch.is_grad_enabled() and self.weight.requires_grad
        if record:
            dz, h_prev = [None] * t_len, []
            self._tapes.append((dz, h_prev))
        outs = []
        for t in range(t_len):
            z = xproj[:, t] + h @ self.weight.t()
            if record:
                h_prev.append(h.detach())
                z.register_hook(lambda g, t=t, dz=dz: dz.__setitem__(t, g))
            i, f, g, o = z.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        # Three top-level tensors (opacus' backward hook reads the first: the sequence).
        return torch.stack(outs, dim=1), h, c

    def pop_tape(self):
        return self._tapes.pop()


def _recurrence_grad_sample(layer: Recurrence, activations, backprops):
    """Per-sample gradient of ``W_hh``: ``sum_t dz_t h_{t-1}^T`` in one batched matmul. A sample
    is a row, or, where the grad-sample module set ``row_groups`` (``m4i.defenses.dp_sgd.ImageGroups``)
    for this backward pass, all rows of one image (their time steps concatenated)."""
    dz, h_prev = layer.pop_tape()
    dz = torch.stack([g if g is not None else h_prev[0].new_zeros(h_prev[0].shape[0], 4 * layer.hidden)
                      for g in dz], dim=1)
    h_prev = torch.stack(h_prev, dim=1)
    groups = layer.__dict__.pop("row_groups", None)
    if groups is not None:
        dz, h_prev = groups(dz, flatten=True), groups(h_prev, flatten=True)
    return {layer.weight: torch.bmm(dz.transpose(1, 2), h_prev)}


def _register() -> None:
    from opacus.grad_sample import register_grad_sampler

    register_grad_sampler(Recurrence)(_recurrence_grad_sample)


_register()


class FastDPLSTM(nn.Module):
    """Drop-in for ``nn.LSTM(batch_first=True)`` (input ``[B, T, E]``, state ``(h, c)`` as ``[L, B, H]``)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.ih = nn.ModuleList(nn.Linear(input_size if k == 0 else hidden_size, 4 * hidden_size)
                                for k in range(num_layers))
        self.hh = nn.ModuleList(Recurrence(hidden_size) for _ in range(num_layers))
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.LSTM``'s init: every weight and bias U(-1/sqrt(H), 1/sqrt(H)) (the bias is b_ih + b_hh)."""
        k = self.hidden_size ** -0.5
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)
        with torch.no_grad():
            for lin in self.ih:
                lin.bias.add_(torch.empty_like(lin.bias).uniform_(-k, k))

    @torch.no_grad()
    def copy_lstm_weights(self, params) -> None:
        """Take an ``nn.LSTM``'s weights (or opacus' ``DPLSTM``'s: the same names), given as a
        name -> tensor mapping; ``b_ih + b_hh`` become the one bias."""
        for k in range(self.num_layers):
            self.ih[k].weight.copy_(params[f"weight_ih_l{k}"])
            self.ih[k].bias.copy_(params[f"bias_ih_l{k}"] + params[f"bias_hh_l{k}"])
            self.hh[k].weight.copy_(params[f"weight_hh_l{k}"])

    def forward(self, x: torch.Tensor, state=None):
        hs, cs = [], []
        for k in range(self.num_layers):
            layer_state = None if state is None else (state[0][k], state[1][k])
            seq, h, c = self.hh[k](self.ih[k](x), state=layer_state)
            hs.append(h)
            cs.append(c)
            x = self.drop(seq) if k < self.num_layers - 1 else seq
        return x, (torch.stack(hs), torch.stack(cs))
