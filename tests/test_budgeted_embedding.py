"""BudgetedEmbedding: nn.Embedding with a size per row, stored compactly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import embudget
from embudget import BudgetedEmbedding
from embudget.errors import BudgetError
from embudget.tables.compact import CompactEmbedding
from embudget.tables.sized import SizedEmbedding

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- example: budgeted-embedding -->"


def small() -> BudgetedEmbedding:
    """3 rows of d_max 4 with sizes (1, 3, 2) and values 1..6."""
    return BudgetedEmbedding(3, 4, [1, 3, 2], values=torch.arange(1.0, 7.0))


def masked_rows(w: torch.Tensor, sizes: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The reference: dense rows times their prefix mask."""
    keep = torch.arange(w.shape[1]) < sizes.to(torch.int64)[ids].unsqueeze(-1)
    return w[ids] * keep.to(w.dtype)


# --- golden examples (computed by hand) ------------------------------------------------------
def test_small_layout_and_lookup() -> None:
    emb = small()
    assert emb.sizes.tolist() == [1, 3, 2]
    assert emb.offsets.tolist() == [0, 1, 4, 6]
    assert emb.params_used() == 6
    assert [p for p in emb.parameters()] == [emb.values]
    assert emb.full().tolist() == [[1, 0, 0, 0], [2, 3, 4, 0], [5, 6, 0, 0]]
    out = emb(torch.tensor([[2, 0], [1, 1]]))
    assert out.shape == (2, 2, 4)
    assert out.tolist() == [[[5, 6, 0, 0], [1, 0, 0, 0]], [[2, 3, 4, 0], [2, 3, 4, 0]]]
    assert emb(torch.tensor([2, 0]), width=3).tolist() == [[5, 6, 0], [1, 0, 0]]
    assert emb(torch.tensor(1)).tolist() == [2, 3, 4, 0]
    assert emb.num_embeddings == 3 and emb.embedding_dim == 4 and emb.width == 3
    assert repr(emb) == "BudgetedEmbedding(3, 4, stored=6, widest=3)"


def test_from_dense_truncates() -> None:
    w = torch.arange(12.0).view(3, 4)
    emb = BudgetedEmbedding.from_dense(w, [1, 3, 2])
    assert emb.values.tolist() == [0, 4, 5, 6, 8, 9]
    assert emb.full().tolist() == [[0, 0, 0, 0], [4, 5, 6, 0], [8, 9, 0, 0]]
    from_module = BudgetedEmbedding.from_dense(nn.Embedding.from_pretrained(w), [1, 3, 2])
    assert torch.equal(from_module.values, emb.values)
    assert from_module.values.requires_grad


def test_set_sizes_keeps_prefixes() -> None:
    emb = small()
    emb.set_sizes([2, 1, 4])
    assert emb.full().tolist() == [[1, 0, 0, 0], [2, 0, 0, 0], [5, 6, 0, 0]]
    assert emb.offsets.tolist() == [0, 2, 3, 7]
    assert emb.params_used() == 7 and emb.width == 4
    emb.set_sizes(np.array([4, 4, 4]))
    assert emb.values.numel() == 12


def test_defaults_like_nn_embedding() -> None:
    torch.manual_seed(0)
    emb = BudgetedEmbedding(50, 8)
    assert emb.sizes.tolist() == [8] * 50 and emb.values.numel() == 400
    assert 0.7 < float(emb.values.detach().std()) < 1.3  # N(0, 1), like nn.Embedding
    uniform = BudgetedEmbedding(5, 8, 3, dtype=torch.float64)
    assert uniform.sizes.tolist() == [3] * 5 and uniform.values.dtype == torch.float64
    dense = uniform.dense()
    assert isinstance(dense, nn.Embedding) and torch.equal(dense.weight, uniform.full())


def test_is_a_compact_table() -> None:
    sized = SizedEmbedding(3, 4, torch.tensor([1, 3, 2]))
    with torch.no_grad():
        sized.weight.copy_(torch.arange(12.0).view(3, 4))
    emb = BudgetedEmbedding.from_sized(sized)
    assert isinstance(emb, CompactEmbedding)
    assert torch.equal(emb.full(), sized.full())
    assert torch.equal(emb.to_sized().full(), sized.full())


# --- properties ------------------------------------------------------------------------------
@st.composite
def tables(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    num = draw(st.integers(1, 12))
    d = draw(st.integers(1, 8))
    sizes = torch.tensor(draw(st.lists(st.integers(1, d), min_size=num, max_size=num)))
    seed = draw(st.integers(0, 2**16))
    w = torch.randn(num, d, generator=torch.Generator().manual_seed(seed))
    ids = torch.tensor(draw(st.lists(st.integers(0, num - 1), min_size=0, max_size=20)))
    return w, sizes, ids.to(torch.int64)


@settings(max_examples=60, deadline=None)
@given(tables())
def test_forward_equals_masked_dense(case: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    w, sizes, ids = case
    emb = BudgetedEmbedding.from_dense(w, sizes)
    assert torch.equal(emb(ids), masked_rows(w, sizes, ids))
    assert torch.equal(emb.full(), masked_rows(w, sizes, torch.arange(w.shape[0])))
    widest = int(sizes.max())
    assert torch.equal(emb(ids, width=widest), masked_rows(w, sizes, ids)[..., :widest])
    assert emb.params_used() == int(sizes.sum()) == emb.values.numel()
    assert int(emb.offsets[-1]) == int(sizes.sum()) and emb.offsets.dtype == torch.int64


@settings(max_examples=40, deadline=None)
@given(tables(), st.integers(0, 2**16))
def test_state_dict_round_trip(
    case: tuple[torch.Tensor, torch.Tensor, torch.Tensor], seed: int
) -> None:
    w, sizes, ids = case
    emb = BudgetedEmbedding.from_dense(w, sizes)
    state = emb.state_dict()
    assert set(state) == {"values", "sizes"}
    rng = np.random.default_rng(seed)
    other_sizes = rng.integers(1, w.shape[1] + 1, w.shape[0])
    fresh = BudgetedEmbedding(w.shape[0], w.shape[1], other_sizes)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.sizes, emb.sizes)
    assert torch.equal(fresh.offsets, emb.offsets)
    assert torch.equal(fresh.values, emb.values)
    assert torch.equal(fresh(ids), emb(ids))


# --- gradients and optimisers ----------------------------------------------------------------
def test_gradient_equals_masked_dense_gradient() -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(6, 5, generator=gen)
    sizes = torch.tensor([1, 5, 2, 3, 4, 2])
    ids = torch.tensor([[0, 1, 1], [5, 3, 0]])  # repeated ids accumulate
    g = torch.randn(2, 3, 5, generator=gen)

    emb = BudgetedEmbedding.from_dense(w, sizes)
    (emb(ids) * g).sum().backward()
    dense = w.clone().requires_grad_(True)
    (masked_rows(dense, sizes, ids) * g).sum().backward()
    assert dense.grad is not None and emb.values.grad is not None
    keep = torch.arange(5) < sizes.unsqueeze(-1)
    assert emb.values.grad.shape == (int(sizes.sum()),)  # gradients only for stored values
    assert torch.allclose(emb.values.grad, dense.grad[keep])
    assert torch.all(dense.grad[~keep] == 0)
    assert emb.values.grad[emb.offsets[2] : emb.offsets[3]].abs().sum() == 0  # row 2 unused


def test_narrow_width_gradient_matches() -> None:
    emb = small()
    ref = small()
    ids = torch.tensor([1, 2, 1])
    emb(ids, width=3).sum().backward()
    ref(ids).sum().backward()
    assert emb.values.grad is not None and ref.values.grad is not None
    assert torch.equal(emb.values.grad, ref.values.grad)
    assert emb.values.grad.tolist() == [0, 2, 2, 2, 1, 1]


def test_optimiser_steps_stored_values() -> None:
    emb = small()
    opt = torch.optim.SGD(emb.parameters(), lr=0.5)
    emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    assert emb.values.tolist() == [1, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert emb.full()[:, 3].abs().sum() == 0  # padding stays zero

    emb2 = BudgetedEmbedding(20, 6, torch.arange(20) % 6 + 1)
    adam = torch.optim.Adam(emb2.parameters(), lr=1e-2)
    before = emb2.values.detach().clone()
    for _ in range(3):
        adam.zero_grad()
        emb2(torch.tensor([0, 7, 19])).pow(2).sum().backward()
        adam.step()
    changed = (emb2.values != before).nonzero().flatten()
    rows = torch.searchsorted(emb2.offsets, changed, right=True) - 1
    assert set(rows.tolist()) == {0, 7, 19}
    assert adam.state[emb2.values]["exp_avg"].shape == (emb2.params_used(),)


# --- widths ----------------------------------------------------------------------------------
def test_width_argument() -> None:
    emb = BudgetedEmbedding(3, 4, [1, 3, 2], width=3, values=torch.arange(1.0, 7.0))
    assert emb(torch.tensor([1])).tolist() == [[2, 3, 4]]
    assert emb.full().shape == (3, 3)
    assert emb(torch.tensor([1]), width=4).tolist() == [[2, 3, 4, 0]]
    assert repr(emb).endswith("width=3)")
    with pytest.raises(BudgetError, match=r"width must lie in \[3, 4\]"):
        emb(torch.tensor([0]), width=2)
    with pytest.raises(BudgetError, match=r"width must lie in \[3, 4\]"):
        emb(torch.tensor([0]), width=5)
    with pytest.raises(BudgetError, match="does not fit this layer's output width 3"):
        emb.set_sizes([4, 1, 1])
    assert emb.sizes.tolist() == [1, 3, 2]  # unchanged after the refusal
    with pytest.raises(BudgetError, match=r"width must lie in \[3, 4\]"):
        BudgetedEmbedding(3, 4, [1, 3, 2], width=2)


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ([1, 0, 2], r"\[1, embedding_dim=4\]; 1 row\(s\) do not \(row 1 has size 0\)"),
        ([1, 5, 9], r"2 row\(s\) do not \(row 1 has size 5\)"),
        (0, "row 0 has size 0"),
        ([1.0, 2.0, 3.0], "sizes must be integers, got torch.float32"),
        (np.array([True, True, True]), "sizes must be integers"),
        ([1, 2], r"one entry per row \(3\), got shape \(2,\)"),
        (np.ones((3, 1), np.int64), r"got shape \(3, 1\)"),
        ("3", "got str"),
        (True, "got bool"),
    ],
)
def test_bad_sizes_raise_budget_error(sizes: object, match: str) -> None:
    with pytest.raises(BudgetError, match=match):
        BudgetedEmbedding(3, 4, sizes)  # type: ignore[arg-type]
    emb = small()
    with pytest.raises(BudgetError, match=match):
        emb.set_sizes(sizes)  # type: ignore[arg-type]
    assert emb.sizes.tolist() == [1, 3, 2]


def test_bad_shapes_and_states() -> None:
    with pytest.raises(BudgetError, match="num_embeddings must be a positive integer"):
        BudgetedEmbedding(0, 4)
    with pytest.raises(BudgetError, match="embedding_dim must be a positive integer"):
        BudgetedEmbedding(3, 2.5)  # type: ignore[arg-type]
    with pytest.raises(BudgetError, match="2-D"):
        BudgetedEmbedding.from_dense(torch.zeros(4), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="length Σ sizes = 6"):
        BudgetedEmbedding(3, 4, [1, 3, 2], values=torch.zeros(5))
    state = small().state_dict()
    state["sizes"] = torch.tensor([1, 9, 2], dtype=torch.int16)
    with pytest.raises(BudgetError, match="row 1 has size 9"):
        small().load_state_dict(state)


# --- compilation -----------------------------------------------------------------------------
def test_compiled_lookup_matches() -> None:
    try:
        import torch._dynamo as dynamo
    except Exception as e:  # pragma: no cover - builds without the compiler stack
        pytest.skip(f"torch.compile unavailable: {e}")
    w = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    emb = BudgetedEmbedding.from_dense(w, torch.arange(40) % 12 + 1)
    ids = torch.tensor([[0, 5, 39], [11, 11, 2]])
    dynamo.reset()
    try:
        compiled = torch.compile(emb, backend="eager", fullgraph=True)
        out = compiled(ids)
        narrow = compiled(ids, width=12)
    except RuntimeError as e:  # pragma: no cover - unsupported platform/Python
        if "not supported" in str(e):
            pytest.skip(f"torch.compile unavailable: {e}")
        raise
    finally:
        dynamo.reset()
    assert torch.equal(out, emb(ids))
    assert torch.equal(narrow, emb(ids, width=12))


# --- the package and the README --------------------------------------------------------------
def test_exported_lazily() -> None:
    assert "BudgetedEmbedding" in embudget.__all__
    code = "import sys, embudget; assert 'torch' not in sys.modules; print(embudget.__all__)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_readme_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert found, f"README.md lacks the code block after {MARKER}"
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(found.group(1), "README.md:budgeted-embedding", "exec"), namespace)
    emb, budget = namespace["emb"], namespace["budget"]
    assert isinstance(emb, BudgetedEmbedding) and isinstance(budget, int)
    assert emb.params_used() <= budget
