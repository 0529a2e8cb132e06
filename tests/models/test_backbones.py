"""One behavioural suite run against every backbone (after benfred/implicit's checkerboard)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from embudget.errors import ConfigError
from embudget.models import MODELS, NCF, Backbone, LightGCN, build_model, model_defaults
from embudget.tables.sized import SizedEmbedding

NAMES = ["mf", "ncf", "ngcf", "lightgcn"]
N = 20  # users = items
D = 16


def checkerboard(n: int = N) -> sp.csr_matrix:
    """User u liked item i iff u % 2 == i % 2; the diagonal (u, u) is withheld."""
    idx = np.arange(n)
    liked = (idx[:, None] % 2 == idx[None, :] % 2) & (idx[:, None] != idx[None, :])
    return sp.csr_matrix(liked.astype(np.float32))


def make(name: str, seed: int = 0, **options: float) -> Backbone:
    return build_model(
        name, N, N, checkerboard(), D, generator=torch.Generator().manual_seed(seed), **options
    )


@dataclass
class Trained:
    model: Backbone
    losses: list[float]


def train_bpr(model: Backbone, steps: int = 150, lr: float = 0.02, seed: int = 1) -> list[float]:
    """Full-batch BPR over every training pair, negatives uniform over non-training items."""
    train = checkerboard()
    users, pos = (torch.from_numpy(a.astype(np.int64)) for a in train.nonzero())
    nonpos = torch.from_numpy(train.toarray() == 0)
    weights = nonpos[users].float()  # one row of candidate negatives per pair
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        neg = torch.multinomial(weights, 1, generator=gen).squeeze(1)
        loss = model.loss(users, pos, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="module", params=NAMES)
def trained(request: pytest.FixtureRequest) -> Trained:
    model = make(request.param)
    return Trained(model, train_bpr(model))


def random_sizes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, D + 1, size=n)


def all_scores(model: Backbone) -> torch.Tensor:
    model.eval()
    return model.scorer()(torch.arange(model.n_users))


# --- learning ----------------------------------------------------------------------------
def test_loss_falls(trained: Trained) -> None:
    first = trained.losses[0]
    last = float(np.mean(trained.losses[-5:]))
    assert first == pytest.approx(np.log(2), abs=0.1)  # near-random start
    assert last < 0.5 * first, (trained.model.name, first, last)


def test_withheld_diagonal_ranks_first(trained: Trained) -> None:
    scores = all_scores(trained.model).numpy()
    assert scores.shape == (N, N) and scores.dtype == np.float32
    scores[checkerboard().toarray() > 0] = -np.inf  # rank among non-training items
    diag = scores[np.arange(N), np.arange(N)]
    rank = (scores > diag[:, None]).sum(1)
    assert (rank == 0).all(), (trained.model.name, rank)


# --- sizes -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_weights_past_sizes_do_not_change_scores(name: str) -> None:
    model = make(name)
    model.set_sizes(random_sizes(N, 1), random_sizes(N, 2))
    before = all_scores(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for t in model.embedding_tables():
            noise = torch.randn(t.weight.shape, generator=g)
            t.weight.add_(noise * (~t.mask()).float())
    torch.testing.assert_close(all_scores(model), before, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_zero_past_sizes(name: str) -> None:
    model = make(name)
    model.set_sizes(random_sizes(N, 3), random_sizes(N, 4))
    model.train()
    users = torch.arange(N)
    model.loss(users, (users + 2) % N, (users + 1) % N).backward()
    for t in model.embedding_tables():
        assert t.weight.grad is not None
        mask = t.mask()
        assert (t.weight.grad[~mask] == 0).all()
        assert (t.weight.grad[mask] != 0).any()  # the kept part does learn


@pytest.mark.parametrize("name", NAMES)
def test_set_sizes_equals_zeroed_weights(name: str) -> None:
    sized = make(name)
    sized.set_sizes(random_sizes(N, 6), random_sizes(N, 7))
    zeroed = copy.deepcopy(sized)
    masks = [t.mask() for t in zeroed.embedding_tables()]
    zeroed.set_sizes(None, None)
    with torch.no_grad():
        for t, m in zip(zeroed.embedding_tables(), masks, strict=True):
            assert t.is_full
            t.weight.mul_(m.float())
    torch.testing.assert_close(all_scores(sized), all_scores(zeroed), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_param_counts(name: str) -> None:
    model = make(name)
    us, its = random_sizes(N, 8), random_sizes(N, 9)
    assert model.embedding_params_used() == (4 if name == "ncf" else 2) * N * D
    model.set_sizes(us, its)
    factor = 2 if name == "ncf" else 1
    assert model.embedding_params_used() == factor * int(us.sum() + its.sum())
    expected_dense = {
        "mf": 0,
        "lightgcn": 0,
        "ngcf": 3 * (2 * D * D + 2 * D),  # W_gc, W_bi, b_gc, b_bi per layer
        "ncf": (2 * D * D + D) + (2 * D + 1),  # W1 + b1, w_out + b_out
    }[name]
    assert model.dense_params() == expected_dense
    n_tables = 4 if name == "ncf" else 2
    assert len(model.user_tables()) == len(model.item_tables()) == n_tables // 2
    assert all(isinstance(t, SizedEmbedding) for t in model.embedding_tables())


@pytest.mark.parametrize("name", NAMES)
def test_l2_term(name: str) -> None:
    """reg · Σ‖e‖² / batch over the right embeddings: masked ego rows (MF, LightGCN), all six
    masked rows (NCF), the final concatenated rows (NGCF)."""
    assert (
        model_defaults(name)["reg"]
        == {"mf": 1e-4, "lightgcn": 1e-4, "ngcf": 1e-3, "ncf": 1e-2}[name]
    )
    plain, regd = make(name, reg=0.0), make(name, reg=0.5)
    for m in (plain, regd):
        m.set_sizes(random_sizes(N, 18), random_sizes(N, 19))
        m.eval()  # NGCF: no dropout, so both losses see the same propagation
    users = torch.tensor([0, 3, 3, 8, 15])
    pos, neg = (users + 2) % N, (users + 5) % N
    with torch.no_grad():
        diff = regd.loss(users, pos, neg) - plain.loss(users, pos, neg)
        if name == "ngcf":
            fu, fi = plain.propagate()  # type: ignore[attr-defined]
            rows = [fu[users], fi[pos], fi[neg]]
            assert rows[0].shape == (5, 4 * D)
        else:
            rows = [t(users) for t in plain.user_tables()]
            rows += [t(v) for t in plain.item_tables() for v in (pos, neg)]
        expected = 0.5 * sum(float(r.square().sum()) for r in rows) / len(users)
    assert float(diff) == pytest.approx(expected, rel=1e-4)


# --- determinism -------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_eval_scores_are_deterministic(name: str) -> None:
    model = make(name)
    torch.testing.assert_close(all_scores(model), all_scores(model), rtol=0, atol=0)


def test_ngcf_dropout_only_in_training() -> None:
    model = make("ngcf")
    users = torch.arange(N)
    args = (users, (users + 2) % N, (users + 1) % N)
    model.train()
    assert model.loss(*args).item() != model.loss(*args).item()
    model.eval()
    assert model.loss(*args).item() == model.loss(*args).item()
    no_drop = make("ngcf", node_dropout=0.0, mess_dropout=0.0)
    no_drop.train()
    assert no_drop.loss(*args).item() == no_drop.loss(*args).item()


@pytest.mark.parametrize("name", NAMES)
def test_init_is_seeded(name: str) -> None:
    a, b, c = make(name, seed=0), make(name, seed=0), make(name, seed=1)
    for (k, va), vb, vc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
        if va.is_floating_point():
            assert not torch.equal(va, vc), k


def test_ngcf_training_is_reproducible() -> None:
    losses = [train_bpr(make("ngcf"), steps=5) for _ in range(2)]
    assert losses[0] == losses[1]


def test_init_distributions() -> None:
    mf = build_model("mf", 500, 400, sp.csr_matrix((500, 400)), 64)
    assert float(mf.user_tables()[0].weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    ngcf = build_model("ngcf", 500, 400, sp.csr_matrix((500, 400)), 64)
    w = ngcf.user_tables()[0].weight.detach()
    bound = np.sqrt(6 / (500 + 64))  # Xavier-uniform, fan_in = 64, fan_out = 500
    top = float(w.abs().max())
    # the bound itself is drawn in float32, which can round it up by one ulp
    assert top <= float(np.float32(bound)) * (1 + 1e-6) and top > 0.95 * bound


# --- scoring against slow references -----------------------------------------------------
def _dense_norm(train: np.ndarray, kind: str) -> torch.Tensor:
    nu, ni = train.shape
    a = np.zeros((nu + ni, nu + ni))
    a[:nu, nu:], a[nu:, :nu] = train, train.T
    if kind == "ngcf":
        a += np.eye(nu + ni)
        return torch.from_numpy(a / a.sum(1, keepdims=True)).float()
    deg = a.sum(1)
    d = np.where(deg > 0, deg**-0.5, 0.0)
    return torch.from_numpy(d[:, None] * a * d[None, :]).float()


def test_lightgcn_scores_match_dense_reference() -> None:
    model = make("lightgcn")
    model.set_sizes(random_sizes(N, 10), random_sizes(N, 11))
    a = _dense_norm(checkerboard().toarray(), "lightgcn")
    e = torch.cat([model.user_tables()[0].full(), model.item_tables()[0].full()]).detach()
    layers = [e]
    for _ in range(3):
        layers.append(a @ layers[-1])
    final = sum(layers[1:], layers[0]) / 4
    ref = final[:N] @ final[N:].T
    torch.testing.assert_close(all_scores(model), ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["lightgcn", "mf"])
def test_narrow_tables_compute_as_d_max_wide(name: str) -> None:
    """With every size ≤ 5 of 16, LightGCN propagates and MF scores 5 columns, exactly."""
    model = make(name)
    narrow = np.minimum(random_sizes(N, 20), 4)
    narrow[3] = 5  # the widest row sets the width
    model.set_sizes(narrow, np.minimum(random_sizes(N, 21), 3))
    users = torch.arange(N)
    pos, neg = (users + 2) % N, (users + 1) % N
    model.train()
    model.loss(users, pos, neg).backward()
    grads = [t.weight.grad.clone() for t in model.embedding_tables()]  # type: ignore[union-attr]
    model.zero_grad()
    u, i = model.user_tables()[0], model.item_tables()[0]
    ego = torch.cat([u.full(), i.full()])  # the d_max-wide reference tables
    if name == "lightgcn":
        assert isinstance(model, LightGCN)
        assert model.ego().shape == (2 * N, 5)
        fu, fi = model.propagate(ego)
        assert fu.shape == (N, D)
    else:
        fu, fi = ego[:N], ego[N:]
    eu, ep, en = fu[users], fi[pos], fi[neg]
    l2 = ego[users].square().sum() + ego[N + pos].square().sum() + ego[N + neg].square().sum()
    ref_loss = F.softplus((eu * en).sum(-1) - (eu * ep).sum(-1)).mean() + model.reg * l2 / N
    ref_loss.backward()
    for t, g in zip(model.embedding_tables(), grads, strict=True):
        torch.testing.assert_close(t.weight.grad, g, rtol=1e-5, atol=1e-9)
    model.eval()
    ref = (fu @ fi.T).detach()
    torch.testing.assert_close(all_scores(model), ref, rtol=1e-5, atol=1e-9)


def test_ngcf_scores_match_dense_reference() -> None:
    model = make("ngcf")
    model.set_sizes(random_sizes(N, 12), random_sizes(N, 13))
    a = _dense_norm(checkerboard().toarray(), "ngcf")
    p = dict(model.named_parameters())
    e = torch.cat([model.user_tables()[0].full(), model.item_tables()[0].full()]).detach()
    outs = [e]
    for k in range(3):
        side = a @ e
        h = side @ p[f"w_gc.{k}"] + p[f"b_gc.{k}"] + (e * side) @ p[f"w_bi.{k}"] + p[f"b_bi.{k}"]
        e = F.leaky_relu(h, 0.2)
        outs.append(e / e.norm(dim=1, keepdim=True).clamp_min(1e-12))
    final = torch.cat(outs, 1).detach()
    assert final.shape == (2 * N, 4 * D)
    torch.testing.assert_close(all_scores(model), final[:N] @ final[N:].T, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_bytes", [None, 3 * 4 * D * 7])
def test_ncf_scorer_matches_pairwise_reference(chunk_bytes: int | None) -> None:
    model = make("ncf")
    assert isinstance(model, NCF)
    model.set_sizes(random_sizes(N, 14), random_sizes(N, 15))
    if chunk_bytes is not None:
        model.score_chunk_bytes = chunk_bytes  # forces 3 users x 7 items per chunk
    users = torch.tensor([4, 0, 19, 7, 7])
    uu = users.repeat_interleave(N)
    ii = torch.arange(N).repeat(len(users))
    with torch.no_grad():
        ref = model._pair_scores(
            model.user_gmf(uu), model.user_mlp(uu), model.item_gmf(ii), model.item_mlp(ii)
        ).reshape(len(users), N)
    model.eval()
    torch.testing.assert_close(model.scorer()(users), ref, rtol=1e-5, atol=1e-6)


def test_lightgcn_coo_baseline_gives_same_gradients() -> None:
    model = make("lightgcn")
    users = torch.arange(N)
    args = (users, (users + 2) % N, (users + 1) % N)
    model.loss(*args).backward()
    grads = [t.weight.grad.clone() for t in model.embedding_tables()]  # type: ignore[union-attr]
    model.zero_grad()
    model.graph.backend = "coo_autograd"
    model.loss(*args).backward()
    for t, g in zip(model.embedding_tables(), grads, strict=True):
        torch.testing.assert_close(t.weight.grad, g)


@pytest.mark.parametrize("name", ["lightgcn", "ngcf"])
def test_graph_moves_with_model(name: str) -> None:
    model = make(name)
    ref = all_scores(model).double()
    model.double()
    assert model.graph.val.dtype == torch.float64
    scores = all_scores(model)
    assert scores.dtype == torch.float64
    torch.testing.assert_close(scores, ref, rtol=1e-4, atol=1e-7)
    assert "graph.val" not in model.state_dict()  # derived data, not checkpointed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name: str) -> None:
    model = make(name)
    model.set_sizes(random_sizes(N, 16), random_sizes(N, 17))
    ref = all_scores(model)
    model.to("cuda")
    torch.testing.assert_close(all_scores(model).cpu(), ref, rtol=1e-4, atol=1e-6)
    model.train()
    users = torch.arange(N, device="cuda")
    model.loss(users, (users + 2) % N, (users + 1) % N).backward()


# --- registry ----------------------------------------------------------------------------
def test_registry_contents() -> None:
    assert set(MODELS) == set(NAMES)
    for name, cls in MODELS.items():
        assert cls.name == name
        assert isinstance(make(name), cls)


def test_registry_errors() -> None:
    train = checkerboard()
    with pytest.raises(ConfigError, match="lightgcn"):
        build_model("gcn", N, N, train)
    with pytest.raises(ConfigError, match="node_dropout") as e:
        build_model("lightgcn", N, N, train, node_dropout=0.1)
    assert "n_layers" in str(e.value) and "reg" in str(e.value)
    with pytest.raises(ConfigError, match="mess_dropout"):
        build_model("ngcf", N, N, train, mess_dropout=1.0)
    with pytest.raises(ConfigError, match="n_layers"):
        build_model("ngcf", N, N, train, n_layers=0)
    with pytest.raises(ConfigError, match="reg"):
        build_model("mf", N, N, train, reg=-1.0)
    with pytest.raises(ConfigError, match="shape"):
        build_model("mf", N + 1, N, train)


def test_registry_options_apply() -> None:
    model = make("lightgcn", n_layers=1, reg=0.5)
    assert model.n_layers == 1 and model.reg == 0.5  # type: ignore[attr-defined]
    ngcf = make("ngcf", n_layers=2, node_dropout=0.0)
    assert ngcf.dense_params() == 2 * (2 * D * D + 2 * D)
