"""Adam through the fused kernel, without ``torch.optim``.

``torch.optim.Adam(fused=True)`` is ~9x faster than the per-tensor Adam on a Gowalla-sized table
(BENCHMARKS.md, "Fused Adam"), but every ``torch.optim`` optimiser imports the compiler stack
(``torch._dynamo`` and ``torch._inductor``, 1.5-6 s) on its first ``add_param_group`` /
``zero_grad``, because those methods are wrapped in ``torch._disable_dynamo``. This class calls
the same kernel (``torch._fused_adam_``) with the same arguments and state, so its updates are
bit-identical (``tests/test_train.py`` compares them with ``torch.optim.Adam(fused=True)``),
and its ``state_dict`` has ``torch.optim.Adam``'s layout, so checkpoints written by either load
into the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: torch.optim.Adam's defaults, as its param_groups record them.
_GROUP_DEFAULTS: dict[str, Any] = {
    "betas": (0.9, 0.999),
    "eps": 1e-08,
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}


class FusedAdam:
    """Adam (β = 0.9, 0.999, ε = 1e-8, no weight decay) with one learning rate, fused kernel.

    Only parameters with a gradient are updated; their state starts at the first update, as in
    ``torch.optim.Adam``. Set the learning rate through :attr:`lr` (read at every step).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = list(params)
        self.lr = float(lr)
        self.beta1, self.beta2 = _GROUP_DEFAULTS["betas"]
        self.eps = float(_GROUP_DEFAULTS["eps"])
        #: param index -> {"step", "exp_avg", "exp_avg_sq"} (torch.optim.Adam's keys)
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        for p in self.params:
            if not (p.is_floating_point() and p.device.type in ("cpu", "cuda", "mps", "xpu")):
                raise ValueError(
                    f"the fused Adam needs floating-point parameters on a supported device, "
                    f"got {p.dtype} on {p.device}"
                )

    def zero_grad(self) -> None:
        """Drop every gradient (``set_to_none=True``)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # Grouped by (device, dtype) in parameter order, as torch.optim.Adam's fused path does.
        groups: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            lists = groups.setdefault((p.device, p.dtype), [[], [], [], [], []])
            row = (p, p.grad, st["exp_avg"], st["exp_avg_sq"], st["step"])
            for lst, t in zip(lists, row, strict=True):
                lst.append(t)
        for params, grads, exp_avgs, exp_avg_sqs, steps in groups.values():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=self.lr,
                beta1=self.beta1,
                beta2=self.beta2,
                weight_decay=_GROUP_DEFAULTS["weight_decay"],
                eps=self.eps,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam(fused=True).state_dict()``'s layout (tensors not copied)."""
        group = {"lr": self.lr, **_GROUP_DEFAULTS, "params": list(range(len(self.params)))}
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": [group]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (or a ``torch.optim.Adam`` one over the same params)."""
        groups = state["param_groups"]
        n = sum(len(g["params"]) for g in groups)
        if len(groups) != 1 or n != len(self.params):
            raise ValueError(
                f"optimizer state has {len(groups)} group(s) over {n} parameters; "
                f"expected one group over {len(self.params)}"
            )
        self.lr = float(groups[0]["lr"])
        ids = groups[0]["params"]
        self.state = {}
        for key, st in state["state"].items():
            i = ids.index(int(key))
            p = self.params[i]
            self.state[i] = {
                "step": st["step"].to(dtype=torch.float32, device=p.device),
                "exp_avg": st["exp_avg"].to(dtype=p.dtype, device=p.device),
                "exp_avg_sq": st["exp_avg_sq"].to(dtype=p.dtype, device=p.device),
            }
