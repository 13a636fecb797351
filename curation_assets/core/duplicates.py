"""Duplicate groups: exact (pixel hash), temporal (consecutive frames), near (embeddings).

Passes run cheap to expensive. Exact copies share a pixel hash. Inside each video, a frame
joins the current run when it is near the run's *first* frame (its anchor), not merely its
predecessor, so a slow pan cannot chain into one giant group. Across videos, the groups'
leaders are compared through a k-NN graph and clustered greedily, best quality first: a
leader absorbs only leaders near *itself* (FiftyOne's anti-chaining rule).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation_assets.core.image_stats import UNIFORM_CONTRAST, UNIFORM_EDGES, hamming_distance, informative_hash
from curation_assets.core.models import UNCALIBRATED, Calibration, with_overrides
from curation_assets.core.neighbors import EXACT_BELOW, knn_graph


@dataclass(frozen=True)
class DuplicateParams:
    """The near rule. Embedding thresholds come from the model's calibration (``for_model``)."""

    near_cosine: float = UNCALIBRATED.near_cosine  # embeddings at least this similar ...
    near_phash_distance: int = UNCALIBRATED.near_phash_distance  # ... and perceptual hashes this close
    identical_phash_distance: int = 2  # hashes this close are copies whatever the embedding
    scene_cosine: float | None = UNCALIBRATED.scene_cosine  # the embedding alone: the same scene re-shot
    verify_cosine: float | None = UNCALIBRATED.verify_cosine  # neighbours this similar are checked ...
    verify_inliers: int = 40  # ... and join when this many local-feature matches agree on one geometry
    verify_neighbors: int = 3  # ... among each leader's nearest few
    neighbors: int = 10
    exact_search_below: int = EXACT_BELOW  # group leaders; above this the k-NN graph is clustered

    @classmethod
    def for_model(cls, calibration: Calibration, **overrides) -> DuplicateParams:
        """The model's thresholds, with any explicitly set value (not None) taking precedence."""
        model_values = {
            "near_cosine": calibration.near_cosine,
            "near_phash_distance": calibration.near_phash_distance,
            "scene_cosine": calibration.scene_cosine,
            "verify_cosine": calibration.verify_cosine,
        }
        return with_overrides(cls, model_values, overrides)


def timed(frames: pd.DataFrame) -> np.ndarray:
    """Per row: does it come from a video (timestamps advance)? Image folders have no time, so
    files next to each other by name are not consecutive frames. Tables without timestamps
    are taken as videos."""
    if "timestamp_s" not in frames:
        return np.ones(len(frames), dtype=bool)
    return frames.groupby("video_id")["timestamp_s"].transform("max").to_numpy() > 0


def _column(frames: pd.DataFrame, name: str) -> np.ndarray:
    """A metric column as floats, NaN where the table lacks it (a rule on it then stays off)."""
    return frames[name].to_numpy(dtype=np.float64) if name in frames else np.full(len(frames), np.nan)


WELL_EXPOSED = (0.15, 0.9)  # mean brightness a representative should have


def quality_score(frames: pd.DataFrame) -> np.ndarray:
    """Higher is a better representative: no outlier rule's flag (``image_flags``: the frame
    table's rules), then neither dark nor washed out (mean brightness outside
    ``WELL_EXPOSED``), then the most fine detail. So a group's representative is flagged only
    when its members are too (isolation is its group's; the fine detail that makes a frame
    blurry against its scene is highest in the representative)."""
    from curation_assets.core.outliers import image_flags  # outliers reads this module's ``timed``

    low, high = WELL_EXPOSED
    exposure_penalty = ((frames["brightness"] < low) | (frames["brightness"] > high)).to_numpy()
    flawed = image_flags(frames).to_numpy().any(axis=1)
    fine = _column(frames, "fine_detail")
    detail = np.where(np.isnan(fine), frames["sharpness"].to_numpy(dtype=np.float64), fine)  # older tables: raw
    return np.log1p(detail * 1e4) - 100.0 * exposure_penalty - 1000.0 * flawed


BLANK_BRIGHTNESS = 0.02  # blank frames this close in mean brightness (5 grey levels) are one kind


def blank(frames: pd.DataFrame) -> np.ndarray:
    """Pictures with no structure (a covered lens, a blown-out or black frame, a blank file):
    no contrast and no edges, or a perceptual hash whose bits carry no information. Any two
    of them sit a few hash bits apart, black or white, so the hash rules must not judge them."""
    uniform = (_column(frames, "contrast") < UNIFORM_CONTRAST) & (_column(frames, "edge_density") < UNIFORM_EDGES)
    return uniform | ~informative_hash(frames["phash"].to_numpy(dtype=np.int64))


PAGE_MODE_SHARE = 0.3  # a picture this much one grey level (a page, a chart, a logo on white) is page-like


def page_like(frames: pd.DataFrame) -> np.ndarray:
    """Pictures mostly of one background level (text pages, charts, forms, logos on white;
    photographs and footage hold under 0.1 of their pixels at one level). Their 32x32 hash sees
    the layout, not the content, and the embedding finds any two of one layout alike (two
    different pages of one template: cosine 0.97-0.99, 8-22 bits apart, some within 2), so
    a hash match between two of them is weak evidence: geometry must not contradict it."""
    return _column(frames, "mode_share") >= PAGE_MODE_SHARE


def _contradicted(agreeing: int, params: DuplicateParams) -> bool:
    """Local features say two pictures are different: both have plenty of keypoints (-1
    otherwise) and almost none agree on one geometry (nor do they align densely)."""
    return 0 <= agreeing < params.verify_inliers // 2


def _blank_pair(params: DuplicateParams, cos, blank_a, blank_b, brightness_a, brightness_b):
    """Whether two frames may be judged near copies at all, given blankness (broadcasts): two
    frames with structure, yes; a blank and a picture, never; two blanks only of one kind (the
    embedding agrees: one colour) and one brightness, a black frame never with a white one."""
    same_blank = (np.abs(brightness_a - brightness_b) <= BLANK_BRIGHTNESS) & (cos >= params.near_cosine)
    return np.where(blank_a | blank_b, blank_a & blank_b & same_blank, True)


def _mirror_hashes(frames: pd.DataFrame) -> np.ndarray:
    """Hashes of the mirrored frames (the plain hashes for tables made without them)."""
    column = "phash_mirror" if "phash_mirror" in frames else "phash"
    return frames[column].to_numpy(dtype=np.int64)


def _hash_distance(
    phash: np.ndarray, other: np.ndarray, other_mirror: np.ndarray, identical: int, believed: np.ndarray | bool = True
) -> np.ndarray:
    """Bits apart (broadcasts). A frame whose mirror image hashes within ``identical`` bits is a
    flipped copy and counts as that close, where ``believed`` (``_mirror_believed``); looser
    mirrored matches do not count, since symmetric scenes (a corridor, an aisle) resemble their
    own mirror image."""
    direct = hamming_distance(phash, other)
    mirrored = hamming_distance(phash, other_mirror)
    return np.where((mirrored <= identical) & believed, np.minimum(direct, mirrored), direct)


def _mirror_believed(cos: np.ndarray, pages_a: np.ndarray, pages_b: np.ndarray, params: DuplicateParams) -> np.ndarray:
    """Whether a match of one picture's hash with the other's mirror image may mean a flipped
    copy: always, unless both are page-like, whose hashes see the layout only (a small logo or
    icon centred on a blank page hashes like any other centred blob, mirrored or not); then only
    when the embedding agrees too. Flipped pages, charts and logos sit at cosine 0.98-0.995,
    such look-alikes at 0.55-0.64 (``bench/RESULTS.md``)."""
    return ~(pages_a & pages_b) | (cos >= params.near_cosine)


def _is_near(params: DuplicateParams, cos: np.ndarray | float, ham: np.ndarray | int) -> np.ndarray | bool:
    """The near rule, on arrays or plain numbers: an edit of the same picture (embedding and
    hash agree), a copy by its hash alone, or the same scene re-shot (embedding alone)."""
    scene = params.scene_cosine if params.scene_cosine is not None else np.inf
    return (
        ((cos >= params.near_cosine) & (ham <= params.near_phash_distance))
        | (ham <= params.identical_phash_distance)
        | (cos >= scene)
    )


def _verified(nbr, sims, near, ham, valid, reps, params: DuplicateParams, verify, pages, verdicts) -> np.ndarray:
    """The near edges after geometric verification. A look-alike among each leader's closest
    neighbours joins when enough local features agree on one geometry (the same scene, another
    view); an edge that rests on the embedding alone (the scene rule, hashes apart) is dropped
    when both pictures have plenty of features and almost none agree (two pages of text, two
    aisles); so is an edge on the hash between two page-like pictures (``pages``, per leader:
    ``page_like``), whose hashes see only their layout. Other edges where embedding and hash
    agree are not second-guessed: in a folder of video frames they are nearly every edge
    (5 600 of 5 600 here), and checking them cost 4 s of 5."""
    rank = np.arange(nbr.shape[1])[None, :]
    candidates = valid & ~near & (sims >= params.verify_cosine) & (rank < params.verify_neighbors)
    agree = (sims >= params.near_cosine) & (ham <= params.near_phash_distance)
    on_embedding = valid & near & ~agree & (ham > params.identical_phash_distance)
    both_pages = pages[:, None] & pages[np.where(valid, nbr, 0)]
    hash_edge = ham <= max(params.near_phash_distance, params.identical_phash_distance)
    on_embedding |= valid & near & both_pages & hash_edge
    edges = list(zip(*np.nonzero(candidates | on_embedding)))
    checked = _checked(verify, {_pair(reps, a, nbr[a, j]) for a, j in edges}, verdicts)
    out = near.copy()
    for a, j in edges:
        agreeing = checked[_pair(reps, a, nbr[a, j])]
        if candidates[a, j]:
            out[a, j] = agreeing >= params.verify_inliers
        elif _contradicted(agreeing, params):
            out[a, j] = False
    return out


def _pair(reps: np.ndarray, a: int, b: int) -> tuple[int, int]:
    """The frame rows of leaders ``a`` and ``b``, in order: one key per pair, whichever way round."""
    return tuple(sorted((int(reps[a]), int(reps[b]))))


def _checked(verify, pairs, verdicts: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """``verdicts`` with ``verify`` run for the pairs of rows (sorted tuples) it lacks, on every
    core (OpenCV releases the GIL)."""
    todo = sorted(set(pairs) - verdicts.keys())
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        verdicts.update(zip(todo, pool.map(lambda pair: verify(*pair), todo)))
    return verdicts


def _cluster_checked(nbr, sims, near, quality, reps, stills, params: DuplicateParams, verify, verdicts):
    """``cluster_leaders``, where no join of a still picture (``stills``, per leader: from an
    image folder) may be contradicted by local features. Stills pass embedding and hash alike
    where one room is seen again with a board or a person moved (a calibration session's poses:
    cosine 0.90-0.97, 2-12 bits apart), so none of their edges is taken on trust; but checking
    every edge of a folder of video frames more than tripled its grouping time, so only the
    joins the clustering makes are checked, and it runs again without those contradicted until
    every join it makes has passed (``verdicts``: the pairs checked so far). Returns (head,
    member) pairs."""
    near = near.copy()
    while True:
        joins = cluster_leaders(nbr, sims, near, quality)
        key = {(a, b): _pair(reps, a, b) for a, b in joins if stills[a] or stills[b]}
        _checked(verify, key.values(), verdicts)
        refused = [(a, b) for (a, b), pair in key.items() if _contradicted(verdicts[pair], params)]
        if not refused:
            return joins
        for a, b in refused:
            near[a, nbr[a] == b] = False
            near[b, nbr[b] == a] = False


def cluster_leaders(nbr: np.ndarray, sims: np.ndarray, near: np.ndarray, quality: np.ndarray) -> list[tuple[int, int]]:
    """Greedy clustering over the near edges of a k-NN graph, best quality first.

    Each leader, in quality order, joins the most similar cluster head it is near, if any;
    otherwise it becomes a head and absorbs its free near neighbours. Members are always
    near their head itself, so nothing chains. Edges count in both directions (the k-NN
    graph is not symmetric). Returns (head, member) pairs.
    """
    rows = np.repeat(np.arange(len(nbr)), near.sum(axis=1))
    a = np.concatenate([rows, nbr[near]])
    b = np.concatenate([nbr[near], rows])
    sim = np.concatenate([sims[near], sims[near]])
    by_node = np.argsort(a, kind="stable")
    a, b, sim = a[by_node], b[by_node], sim[by_node]
    start = np.searchsorted(a, np.arange(len(nbr) + 1))
    free, head, absorbed = 0, 1, 2
    state = np.zeros(len(nbr), dtype=np.int8)
    pairs: list[tuple[int, int]] = []
    for node in sorted(np.unique(a).tolist(), key=lambda i: -quality[i]):  # only nodes on a near edge
        if state[node] == absorbed:
            continue
        others, similarity = b[start[node] : start[node + 1]], sim[start[node] : start[node + 1]]
        heads = state[others] == head
        if heads.any():
            pairs.append((int(others[heads][np.argmax(similarity[heads])]), node))
            state[node] = absorbed
            continue
        state[node] = head
        for other in np.unique(others[state[others] == free]).tolist():
            state[other] = absorbed
            pairs.append((node, other))
    return pairs


def find_duplicate_groups(
    frames: pd.DataFrame,
    vectors: np.ndarray,
    params: DuplicateParams = DuplicateParams(),
    verify: Callable[[int, int], int] | None = None,
) -> pd.DataFrame:
    """Assign every frame to exactly one group.

    ``verify(i, j)`` (rows of ``frames``), when given, counts the local-feature matches that
    agree on one geometry between two frames (core/geometry.py): group leaders that look
    alike without passing the near rule are checked with it, so the same scene re-framed or
    seen from another view joins one group.

    ``frames`` needs frame_id, video_id, frame_index, sha256, phash, sharpness, brightness;
    ``vectors`` are unit embeddings aligned with its rows. Returns one row per frame:
    frame_id, group_id (the representative's frame_id), is_representative, reason
    (unique / representative / exact / temporal / near), similarity (cosine to the
    representative), group_size.
    """
    n = len(frames)
    frames = frames.reset_index(drop=True)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) != n:
        raise ValueError(f"{n} frames but {len(vectors)} vectors")
    phash = frames["phash"].to_numpy(dtype=np.int64)
    quality = quality_score(frames)
    parent = np.arange(n)  # parent[i]: id of i's group (a flat forest)
    members = {i: [i] for i in range(n)}
    reason = np.array(["unique"] * n, dtype=object)

    def attach(member: int, leader: int, why: str) -> None:
        a, b = parent[member], parent[leader]
        if a != b:
            small, large = (a, b) if len(members[a]) <= len(members[b]) else (b, a)
            parent[members[small]] = large
            members[large].extend(members.pop(small))
        reason[member] = why
        if reason[leader] == "unique":  # a run's anchor or a cluster's head is in a group now, for the same reason
            reason[leader] = why

    # 1. exact copies, anywhere
    first_by_hash: dict[str, int] = {}
    for i, digest in enumerate(frames["sha256"]):
        if digest in first_by_hash:
            attach(i, first_by_hash[digest], "exact")
        else:
            first_by_hash[digest] = i

    # 2. runs inside each video (and each folder, in name order), each frame compared to its run's
    # anchor, so a slow pan's copies join whatever their number (the k-NN graph below caps a head
    # at its k nearest). In a folder, neighbours by name are not consecutive frames: only an edit
    # of the same picture (embedding and hash agree) joins, never the embedding alone, which the
    # geometric check must confirm there (two pages of text), and between two page-like pictures
    # an edit joins only when local features do not contradict it (pages of one layout hash alike)
    video = pd.factorize(frames["video_id"])[0]
    order = np.lexsort((frames["frame_index"].to_numpy(), video)).tolist()
    in_video = timed(frames)
    by_name = dataclasses.replace(params, scene_cosine=None)
    bits = phash.view(np.uint64).tolist()  # Python ints: int.bit_count is the fastest popcount here
    is_blank, brightness = blank(frames), frames["brightness"].to_numpy(dtype=np.float64)
    pages = page_like(frames)
    check_pages = verify is not None and params.verify_cosine is not None
    anchor = -1
    for i in order:
        if anchor >= 0 and video[i] == video[anchor]:
            rule = params if in_video[i] else by_name
            cos = float(vectors[i] @ vectors[anchor])
            if is_blank[i] or is_blank[anchor]:
                near = bool(_blank_pair(params, cos, is_blank[i], is_blank[anchor], brightness[i], brightness[anchor]))
            else:
                near = _is_near(rule, cos, (bits[i] ^ bits[anchor]).bit_count())
                if near and not in_video[i] and pages[i] and pages[anchor] and check_pages:
                    near = not _contradicted(verify(i, anchor), params)  # two pages of one layout, next by name
            if near:
                if parent[i] != parent[anchor]:
                    attach(i, anchor, "temporal" if in_video[i] else "near")
                continue
        anchor = i

    # 3. across runs and videos: greedy clustering of leaders over a k-NN graph
    reps = np.array([max(group, key=quality.__getitem__) for group in members.values()])
    if len(reps) > 1:
        nbr, sims = knn_graph(
            vectors[reps], k=min(params.neighbors, len(reps) - 1), exact_below=params.exact_search_below
        )
        valid = nbr >= 0
        neighbor_hash = phash[reps][np.where(valid, nbr, 0)]
        ham = hamming_distance(neighbor_hash, phash[reps][:, None])
        safe = np.where(valid, nbr, 0)
        rep_blank, rep_brightness, rep_pages = is_blank[reps], brightness[reps], pages[reps]
        judged = _blank_pair(
            params, sims, rep_blank[:, None], rep_blank[safe], rep_brightness[:, None], rep_brightness[safe]
        )
        either_blank = rep_blank[:, None] | rep_blank[safe]
        near = valid & np.where(either_blank, judged, _is_near(params, sims, ham))
        if verify is not None and params.verify_cosine is not None:  # blank frames have no features to verify
            verdicts: dict[tuple[int, int], int] = {}
            near = _verified(nbr, sims, near, ham, valid & ~either_blank, reps, params, verify, rep_pages, verdicts)
            stills = ~in_video[reps] & ~rep_blank
            joins = _cluster_checked(nbr, sims, near, quality[reps], reps, stills, params, verify, verdicts)
        else:
            joins = cluster_leaders(nbr, sims, near, quality[reps])
        for a, b in joins:
            attach(reps[b], reps[a], "near")
        # 4. flipped copies: a leader whose mirror image hashes within `identical` bits of a
        # neighbour joins that neighbour's group, whole (after clustering, so a flipped copy
        # never heads a cluster that its original's other copies are not near)
        mirrored = hamming_distance(neighbor_hash, _mirror_hashes(frames)[reps][:, None])
        believed = _mirror_believed(sims, rep_pages[:, None], rep_pages[safe], params)
        flipped = valid & ~either_blank & (mirrored <= params.identical_phash_distance) & believed
        for a, j in zip(*np.nonzero(flipped)):
            attach(reps[a], reps[nbr[a, j]], "near")

    # representatives: the best-quality member of each final group
    out = pd.DataFrame({"frame_id": frames["frame_id"], "_root": parent, "_quality": quality})
    rep_index = out.groupby("_root")["_quality"].idxmax()
    rep_of_root = dict(zip(rep_index.index, rep_index.to_numpy()))
    rep = np.array([rep_of_root[r] for r in parent])
    out["group_id"] = frames["frame_id"].to_numpy()[rep]
    out["is_representative"] = rep == np.arange(n)
    out["similarity"] = np.einsum("ij,ij->i", vectors, vectors[rep]).clip(-1, 1)
    out["reason"] = reason
    return _finish(out.drop(columns=["_root", "_quality"]))


GROUP_COLUMNS = ["frame_id", "group_id", "is_representative", "reason", "similarity", "group_size"]


def _finish(groups: pd.DataFrame) -> pd.DataFrame:
    """Group sizes, and the reasons that follow from them, for a frame -> group table."""
    groups = groups.reset_index(drop=True)
    groups["group_size"] = groups.groupby("group_id")["frame_id"].transform("size").astype(int)
    reason = groups["reason"].to_numpy(dtype=object).copy()
    reason[groups["is_representative"].to_numpy()] = "representative"
    reason[(groups["group_size"] == 1).to_numpy()] = "unique"
    groups["reason"] = reason
    return groups[GROUP_COLUMNS]


def match_to_corpus(
    leaders: pd.DataFrame,
    leader_vectors: np.ndarray,
    reps: pd.DataFrame,
    rep_vectors: np.ndarray,
    candidates: np.ndarray,
    params: DuplicateParams = DuplicateParams(),
    verify: Callable[[int, int], int] | None = None,
    stills: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Incremental matching: which existing group each new group's leader copies, if any.

    ``candidates`` (n_leaders, k) are rows of ``reps`` (representatives of existing groups,
    found near each leader through the vector store), -1 for none. A leader is compared with
    each candidate representative itself, so nothing chains; the most similar near one wins.
    ``verify(leader row, rep row)``, when given, counts local features agreeing on one geometry
    (``geometry.inliers``), as in ``find_duplicate_groups``: a match that rests on the embedding
    alone is dropped when geometry contradicts it (two pages of one layout, a board in another
    pose), and so is any match of a leader from an image folder (``stills``, per leader), as a
    folder's joins are; the next most similar near one is tried. Returns (row of ``reps`` or -1,
    cosine to it) per leader.
    """
    valid = candidates >= 0
    safe = np.where(valid, candidates, 0)
    if len(reps) == 0 or len(leaders) == 0:
        return np.full(len(leaders), -1), np.zeros(len(leaders), dtype=np.float32)
    cos = np.einsum("id,ikd->ik", leader_vectors, rep_vectors[safe])
    leader_hashes = leaders["phash"].to_numpy(dtype=np.int64)[:, None]
    ham = _hash_distance(
        reps["phash"].to_numpy(dtype=np.int64)[safe],
        leader_hashes,
        _mirror_hashes(leaders)[:, None],
        params.identical_phash_distance,
        _mirror_believed(cos, page_like(leaders)[:, None], page_like(reps)[safe], params),
    )
    # blank pictures join only blank ones of their brightness; a representative known by its
    # hash alone (the vector store's payload) is blank when its hash says nothing, and of
    # unknown brightness, so a blank leader joins none of those
    rep_blank = blank(reps)[safe]
    rep_brightness = _column(reps, "brightness")
    leader_blank = blank(leaders)[:, None]
    leader_brightness = leaders["brightness"].to_numpy(dtype=np.float64)[:, None]
    judged = _blank_pair(params, cos, leader_blank, rep_blank, leader_brightness, rep_brightness[safe])
    near = np.where(leader_blank | rep_blank, judged, _is_near(params, cos, ham))
    score = np.where(valid & near, cos, -np.inf)
    if verify is not None:
        agree = (cos >= params.near_cosine) & (ham <= params.near_phash_distance)
        still = np.zeros(len(leaders), dtype=bool) if stills is None else np.asarray(stills, dtype=bool)
        to_check = (~agree & (ham > params.identical_phash_distance)) | still[:, None]
        to_check &= valid & near & ~(leader_blank | rep_blank)
        for i in np.flatnonzero(to_check.any(axis=1)):  # the most similar near one that geometry does not contradict
            for j in np.argsort(-score[i], kind="stable"):
                if not np.isfinite(score[i, j]) or not to_check[i, j]:
                    break
                if not _contradicted(verify(int(i), int(candidates[i, j])), params):
                    break
                score[i, j] = -np.inf
    best = np.argmax(score, axis=1)
    found = np.isfinite(score[np.arange(len(leaders)), best])
    return np.where(found, candidates[np.arange(len(leaders)), best], -1), np.where(
        found, cos[np.arange(len(leaders)), best], 0
    )


def extend_groups(
    previous: pd.DataFrame,
    new_groups: pd.DataFrame,
    new_vectors: np.ndarray,
    joins: dict[str, str],
    rep_vectors: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Add the groups of newly arrived frames to an existing frame -> group table.

    ``new_groups`` is ``find_duplicate_groups`` over the new frames alone (rows aligned with
    ``new_vectors``); ``joins`` maps a new group's id to the existing group it copies (from
    ``match_to_corpus``); ``rep_vectors`` holds those existing representatives' vectors.
    Existing groups keep their representative, so group ids already used by selection
    rounds stay valid; a full rebuild re-elects representatives.
    """
    new = new_groups.reset_index(drop=True).copy()
    target = new["group_id"].map(joins)
    joined = target.notna().to_numpy()
    if joined.any():
        rep = np.stack([rep_vectors[t] for t in target[joined]])
        new.loc[joined, "similarity"] = np.einsum("ij,ij->i", new_vectors[joined], rep).clip(-1, 1)
        new.loc[joined & new["is_representative"].to_numpy(), "reason"] = "near"
        new.loc[joined, "group_id"] = target[joined]
        new.loc[joined, "is_representative"] = False
    return _finish(pd.concat([previous, new], ignore_index=True))


def embedding_sources(frames: pd.DataFrame, max_phash_distance: int = 2) -> np.ndarray:
    """Cheap before expensive: for each frame, the row whose embedding it can reuse.

    Walking each video in frame order, a frame that is a pixel copy (same SHA-256) or a
    perceptual copy (pHash within ``max_phash_distance`` bits; never for blank frames) of the last frame that was
    embedded reuses that frame's vector; anything else is embedded itself. Comparing to
    the last *embedded* frame, not the predecessor, keeps slow drift from being skipped.
    Returns, per row of ``frames``, the row index to embed (itself when it must be).
    """
    source = np.arange(len(frames))
    phash = frames["phash"].to_numpy(dtype=np.int64)
    sha = frames["sha256"].to_numpy()
    is_blank = blank(frames)  # a black and a white frame hash alike: blank frames reuse only an exact copy's vector
    anchor, anchor_video = -1, None
    for i in frames.sort_values(["video_id", "frame_index"]).index.to_numpy():
        video = frames.at[i, "video_id"]
        close = int(hamming_distance(phash[i], phash[anchor])) <= max_phash_distance
        alike = close and not (is_blank[i] or is_blank[anchor])
        if anchor >= 0 and video == anchor_video and (sha[i] == sha[anchor] or alike):
            source[i] = anchor
        else:
            anchor, anchor_video = i, video
    return source
