import numpy as np

from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups
from curation_assets.core.neighbors import clustered_knn, knn, knn_graph
from tests.helpers import frame_table


def _clustered(n, dim=32, centres=40, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(centres, dim))
    x = centre[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _plant_copies(x, pairs, noise=0.02, seed=1):
    """Overwrite ``pairs`` vectors with near copies of others; returns (originals, copies)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(x), 2 * pairs, replace=False)
    originals, copies = chosen[:pairs], chosen[pairs:]
    x[copies] = x[originals] + noise * rng.normal(size=(pairs, x.shape[1]))
    x[copies] /= np.linalg.norm(x[copies], axis=1, keepdims=True)
    return originals, copies


def test_clustered_search_finds_planted_copies_and_agrees_with_exact_search():
    x = _clustered(4000)
    originals, copies = _plant_copies(x, 100)
    idx, sim = clustered_knn(x, k=5, cells=40, spill=4)
    exact_idx, _ = knn(x, k=5)

    assert (idx[copies] == originals[:, None]).any(axis=1).all()
    assert (idx >= 0).all() and (idx != np.arange(len(x))[:, None]).all()
    assert (np.diff(sim, axis=1) <= 1e-6).all()  # nearest first
    # the similarities reported are the true ones
    assert np.allclose(sim, np.einsum("ij,ikj->ik", x, x[idx]), atol=1e-5)
    recall_at_1 = np.mean(idx[:, 0] == exact_idx[:, 0])
    assert recall_at_1 > 0.95


def test_clustered_search_is_deterministic_and_fills_rows_of_remote_vectors():
    x = _clustered(3000)
    remote = np.zeros((1, x.shape[1]), dtype=np.float32)
    remote[0, 0] = -1.0  # far from every cluster: may end up alone in its cell
    x = np.vstack([x, remote])
    first, _ = clustered_knn(x, k=8, cells=60, seed=3)
    again, _ = clustered_knn(x, k=8, cells=60, seed=3)
    assert (first == again).all()
    assert (first[-1] >= 0).all() and len(set(first[-1])) == 8 and len(x) - 1 not in first[-1]


def test_small_inputs_are_searched_exactly():
    x = _clustered(500)
    assert (knn_graph(x, k=4)[0] == knn(x, k=4)[0]).all()
    tiny, tiny_sim = knn_graph(x[:3], k=4, exact_below=0)
    assert (tiny[:, :2] >= 0).all() and (tiny[:, 2:] == -1).all() and np.isneginf(tiny_sim[:, 2:]).all()


def test_duplicate_groups_from_the_clustered_graph_match_the_exact_graph():
    x = _clustered(3000, dim=64)
    originals, copies = _plant_copies(x, 60, noise=0.01)
    rng = np.random.default_rng(5)
    phash = rng.integers(0, 2**62, len(x))
    phash[copies] = phash[originals] ^ 0b101  # 2 bits apart
    frames = frame_table(len(x), videos=[f"v{i:04d}" for i in range(len(x))], phash=phash,
                         sharpness=rng.uniform(0.005, 0.02, len(x)))  # fmt: skip
    exact = find_duplicate_groups(frames, x, DuplicateParams(exact_search_below=10**9))
    clustered = find_duplicate_groups(frames, x, DuplicateParams(exact_search_below=0))
    assert (exact["group_id"].to_numpy() == clustered["group_id"].to_numpy()).all()
    group = clustered["group_id"].to_numpy()
    assert (group[originals] == group[copies]).all()
