"""NGCF (bet.md §8.4): bi-interaction propagation over Â = D^-1 (A + I), 4·d_max-wide output.

Dropout is done by registered modules that honour ``model.train()`` / ``model.eval()`` (the
reference leaves it on at evaluation, bet.md §12 defect 6), and draws from a private generator
seeded from the construction ``generator`` so training is reproducible too.
"""

from __future__ import annotations

from typing import ClassVar

import scipy.sparse as sp
import torch
from torch import nn

from embudget.models.base import Backbone, Scorer, dot_scorer
from embudget.models.graph import SparseAdjacency
from embudget.models.ngcf_layer import bi_interaction, keep_mask
from embudget.models.ngcf_loss import final_rows, ngcf_loss, ngcf_loss_reference
from embudget.tables.sized import SizedEmbedding


class MessageDropout(nn.Module):
    """Message dropout's keep mask, drawn only in training mode (rate ``p``)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def keep(
        self, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """A boolean keep mask, or ``None`` when dropout is off (evaluation or p = 0)."""
        if not self.training or self.p == 0.0:
            return None
        return keep_mask(shape, self.p, generator, device)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class NodeDropout(nn.Module):
    """Dropout on the non-zeros of Â (rescaled by 1/(1-p)), active only in training mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(
        self, graph: SparseAdjacency, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """Dropped non-zero values of Â, or ``None`` to use Â as is."""
        if not self.training or self.p == 0.0:
            return None
        return graph.dropped_values(self.p, generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class NGCF(Backbone):
    """NGCF with per-row sizes on the layer-0 table.

    Args:
        n_users, n_items: table rows; ``train`` must be ``(n_users, n_items)``.
        train: training interactions (scipy CSR) that define the graph.
        d_max: full embedding size, also the width of every layer.
        n_layers: propagation layers (3).
        reg: L2 weight on the final (concatenated) embeddings, reg · Σ‖e‖² / batch.
        node_dropout, mess_dropout: dropout rates (training only).
        generator: makes initialisation (Xavier-uniform everywhere) and dropout deterministic.
    """

    name = "ngcf"
    defaults: ClassVar[dict[str, float | int]] = {
        "reg": 1e-3,
        "n_layers": 3,
        "node_dropout": 0.1,
        "mess_dropout": 0.1,
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train: sp.spmatrix,
        d_max: int = 128,
        *,
        n_layers: int = 3,
        reg: float = 1e-3,
        node_dropout: float = 0.1,
        mess_dropout: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(n_users, n_items, d_max)
        self.n_layers = int(n_layers)
        self.reg = float(reg)
        self.user_emb = SizedEmbedding(n_users, d_max)
        self.item_emb = SizedEmbedding(n_items, d_max)
        d = self.d_max
        self.w_gc = nn.ParameterList(nn.Parameter(torch.empty(d, d)) for _ in range(n_layers))
        self.b_gc = nn.ParameterList(nn.Parameter(torch.empty(1, d)) for _ in range(n_layers))
        self.w_bi = nn.ParameterList(nn.Parameter(torch.empty(d, d)) for _ in range(n_layers))
        self.b_bi = nn.ParameterList(nn.Parameter(torch.empty(1, d)) for _ in range(n_layers))
        with torch.no_grad():
            for p in [self.user_emb.weight, self.item_emb.weight, *self.parameters_dense()]:
                nn.init.xavier_uniform_(p, generator=generator)
        self.node_dropout = NodeDropout(node_dropout)
        self.mess_dropout = MessageDropout(mess_dropout)
        self.graph = SparseAdjacency.ngcf(train)
        # Dropout stream: one seed drawn from the init generator; a generator per device.
        self._drop_seed: int | None = (
            None
            if generator is None
            else int(torch.randint(0, 2**62, (1,), generator=generator).item())
        )
        self._drop_gens: dict[str, torch.Generator] = {}

    def parameters_dense(self) -> list[nn.Parameter]:
        return [*self.w_gc, *self.b_gc, *self.w_bi, *self.b_bi]

    def user_tables(self) -> list[SizedEmbedding]:
        return [self.user_emb]

    def item_tables(self) -> list[SizedEmbedding]:
        return [self.item_emb]

    def reseed(self, seed: int) -> None:
        """Restart the dropout stream from ``seed`` (each fit / probe has its own stream)."""
        self._drop_seed = int(seed)
        self._drop_gens = {}

    def random_state(self) -> dict[str, torch.Tensor]:
        state = {k: g.get_state() for k, g in self._drop_gens.items()}
        if self._drop_seed is not None:
            state["seed"] = torch.tensor(self._drop_seed, dtype=torch.int64)
        return state

    def load_random_state(self, state: dict[str, torch.Tensor]) -> None:
        if "seed" in state:
            self.reseed(int(state["seed"]))
        for key, st in state.items():
            if key != "seed":
                gen = self._generator(torch.device(key))
                assert gen is not None
                gen.set_state(st)

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self._drop_seed is None:
            return None
        key = str(device)
        if key not in self._drop_gens:
            self._drop_gens[key] = torch.Generator(device=device).manual_seed(self._drop_seed)
        return self._drop_gens[key]

    def ego(self) -> torch.Tensor:
        """E^(0): the masked user table stacked over the masked item table, (N, d_max)."""
        return torch.cat([self.user_emb.full(), self.item_emb.full()], dim=0)

    def layers(self) -> list[torch.Tensor]:
        """[E^(0), ..., E^(L)], each (N, d_max); E^(0) masked, the others not yet normalised."""
        e = self.ego()
        gen = self._generator(e.device)
        values = self.node_dropout(self.graph, gen)
        a = self.graph.tensor(values)
        a_t = self.graph.tensor_t(values) if torch.is_grad_enabled() else None
        p = self.mess_dropout.p
        out = [e]
        for k in range(self.n_layers):
            keep = self.mess_dropout.keep(tuple(e.shape), e.device, gen)
            bias = self.b_gc[k] + self.b_bi[k]
            e = bi_interaction(e, a, a_t, self.w_gc[k], self.w_bi[k], bias, keep, p)
            out.append(e)
        return out

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embeddings, (n, (n_layers + 1) · d_max)."""
        out = final_rows(self.layers())
        return out[: self.n_users], out[self.n_users :]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        # loss_reference's value and gradients up to rounding, once per distinct batch row
        return ngcf_loss(self.layers(), users, pos, neg, self.n_users, self.reg)

    def loss_reference(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """The loss through plain autograd, on every gathered batch row."""
        return ngcf_loss_reference(self.layers(), users, pos, neg, self.n_users, self.reg)

    def scorer(self) -> Scorer:
        with torch.no_grad():
            fu, fi = self.propagate()  # once per evaluation pass
        return dot_scorer(fu, fi)
