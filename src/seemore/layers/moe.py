"""A sparse mixture-of-experts feed-forward layer: a top-k router over expert MLPs.

Each token's router picks its top_k experts; the token's output is the sum of their
outputs weighted by the router's softmax over the picked ones (renormalised to sum to 1).
In training the router can add learned noise to its logits before picking (noisy top-k
gating, Shazeer et al. 2017), which spreads tokens while the router is still undecided.

Dispatch groups the tokens by expert: the (token, expert) assignments are sorted by
expert, each expert runs once on its contiguous slice, and the weighted outputs are added
back to their tokens with index_add. The only Python loop is over the experts.

With a capacity factor c, an expert takes at most ceil(c * tokens * top_k / experts)
assignments in a training step: first choices before second choices, then in token order;
the rest are dropped (the token keeps its residual, plus its other experts' outputs), and
the count is reported. Outside training no token is ever dropped: a formula like that is
0 for a one-token generation step, so the experts would be skipped while generating.

Two auxiliary losses keep the router healthy; the model adds them to its training loss:

- load balancing (Switch Transformer): E * sum_i f_i * P_i, where f_i is the fraction of
  assignments expert i received and P_i the mean router probability of expert i. It is 1
  when both are uniform and grows as the router favours a few experts.
- router z-loss (ST-MoE): the mean squared log-sum-exp of the router logits, which keeps
  them small enough for a stable softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from seemore.config import MoEConfig
from seemore.layers.mlp import MLP

# In training, expert groups are padded with zero rows to a multiple of this. On the CPU, a
# bf16 matmul whose row count changes from call to call is slow (oneDNN builds kernels per
# shape); rounding to 16 rows keeps the shapes few, for at most 15 zero rows per expert
# (README, "Mixture of experts", measures it). Outside training it would make a one-token
# generation step compute 16.
ROWS = 16

@dataclass
class RouterStats:
    """What the router did in the layer's last forward. The figures are worked out when
    asked for, so that a generation step pays nothing for them."""

    logits: torch.Tensor  # (N, E), detached
    counts: torch.Tensor  # (E,): assignments each expert received
    kept: torch.Tensor  # (E,): how many of them it computed (the rest were over capacity)

    @property
    def assignments(self) -> int:
        return int(self.counts.sum())

    @property
    def load(self) -> torch.Tensor:
        """(E,): the fraction of the assignments each expert received."""
        return self.counts.float() / self.counts.sum()

    @property
    def dropped(self) -> int:
        return int((self.counts - self.kept).sum())

    @property
    def entropy(self) -> float:
        """The mean entropy of the tokens' router distributions, in nats."""
        probs = self.logits.softmax(dim=-1)
        return float(-(probs * probs.clamp(min=1e-9).log()).sum(-1).mean())


class MoE(nn.Module):
    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, noise: bool,
                 capacity_factor: float, act: str = "gelu"):
        """act: the experts' activation (layers/mlp.py ACTIVATIONS)."""
        super().__init__()
        self.num_experts, self.top_k, self.capacity_factor = num_experts, top_k, capacity_factor
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.noise = nn.Linear(dim, num_experts, bias=False) if noise else None
        self.experts = nn.ModuleList(MLP(dim, hidden, act=act) for _ in range(num_experts))
        self.aux: dict[str, torch.Tensor] = {}  # the last forward's auxiliary losses
        self.stats: RouterStats | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits (N, E) in fp32, and each token's top_k weights and experts (N, k)."""
        logits = self.gate(x).float()
        if self.training and self.noise is not None:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(x).float())
        weights, experts = logits.topk(self.top_k, dim=-1)
        return logits, weights.softmax(dim=-1), experts

    def capacity(self, n_tokens: int) -> int | None:
        if not self.training or self.capacity_factor <= 0:
            return None
        return math.ceil(self.capacity_factor * n_tokens * self.top_k / self.num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, D)
        N, E, k = x.shape[0], self.num_experts, self.top_k
        logits, weights, experts = self.route(x)

        # assignment a = j * N + n is token n's j-th choice: first choices come first
        expert = experts.T.reshape(-1)  # (k*N,)
        token = torch.arange(N, device=x.device).repeat(k)
        weight = weights.T.reshape(-1)
        order = expert.argsort(stable=True)  # grouped by expert, each group in that order
        counts = torch.bincount(expert, minlength=E)  # (E,)
        first = counts.cumsum(0) - counts  # where each expert's group starts in order
        rank = torch.arange(k * N, device=x.device) - first[expert[order]]
        capacity = self.capacity(N)
        kept = counts if capacity is None else counts.clamp(max=capacity)
        if capacity is not None:
            order, rank = order[rank < capacity], rank[rank < capacity]

        # each expert's rows, padded to a multiple of ROWS in training (see ROWS)
        pad = ROWS if self.training else 1
        rows = (kept + pad - 1) // pad * pad
        slot = (rows.cumsum(0) - rows)[expert[order]] + rank
        inputs = x.new_zeros(int(rows.sum()), x.shape[1])
        inputs[slot] = x[token[order]]
        outputs = torch.cat([self.experts[e](chunk)
                             for e, chunk in enumerate(inputs.split(rows.tolist())) if len(chunk)])
        outputs = outputs[slot] * weight[order, None].to(outputs.dtype)
        out = torch.zeros_like(x).index_add_(0, token[order], outputs.to(x.dtype))

        self.stats = RouterStats(logits.detach(), counts, kept)
        self.aux = {}
        if torch.is_grad_enabled():  # only a loss that will be differentiated needs them
            load = counts.float() / (k * N)
            self.aux = {"balance": E * (load * logits.softmax(dim=-1).mean(0)).sum(),
                        "z": torch.logsumexp(logits, dim=-1).square().mean()}
        return out.reshape(shape)


def moe_layers(model: nn.Module) -> dict[str, MoE]:
    return {name: m for name, m in model.named_modules() if isinstance(m, MoE)}


def router_loss(model: nn.Module, config: MoEConfig) -> torch.Tensor | float:
    """The weighted auxiliary losses of every MoE layer's last forward (0 without any, and
    for a forward without gradients)."""
    total = 0.0
    for layer in moe_layers(model).values():
        if layer.aux:
            total = total + (config.balance_loss_weight * layer.aux["balance"]
                             + config.z_loss_weight * layer.aux["z"])
    return total


def router_report(model: nn.Module) -> dict[str, dict]:
    """Per MoE layer, what its router did in the last forward: expert load, mean router
    entropy and dropped assignments (for metrics.jsonl)."""
    return {name: {"load": [round(v, 4) for v in layer.stats.load.tolist()],
                   "entropy": round(layer.stats.entropy, 4),
                   "dropped": layer.stats.dropped,
                   "dropped_fraction": layer.stats.dropped / layer.stats.assignments}
            for name, layer in moe_layers(model).items() if layer.stats is not None}
