"""Duplicate groups: exact (pixel hash), temporal (consecutive frames), near (embeddings).

Passes run cheap to expensive. Exact copies share a pixel hash. Inside each video, a frame
joins the current run when it is near the run's *first* frame (its anchor), not merely its
predecessor, so a slow pan cannot chain into one giant group. Across videos, the groups'
leaders are compared through a k-NN graph and clustered greedily, best quality first: a
leader absorbs only leaders near *itself* (FiftyOne's anti-chaining rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation_assets.core.image_stats import hamming_distance
from curation_assets.core.neighbors import knn


@dataclass(frozen=True)
class DuplicateParams:
    near_cosine: float = 0.95  # embeddings at least this similar ...
    near_phash_distance: int = 12  # ... and perceptual hashes at most this far apart
    identical_phash_distance: int = 2  # hashes this close are copies whatever the embedding
    neighbors: int = 10


def quality_score(frames: pd.DataFrame) -> np.ndarray:
    """Higher is a better representative: sharp, neither dark nor washed out."""
    exposure_penalty = ((frames["brightness"] < 0.15) | (frames["brightness"] > 0.9)).to_numpy()
    return np.log1p(frames["sharpness"].to_numpy() * 1e4) - 100.0 * exposure_penalty


def _is_near(params: DuplicateParams, cos: np.ndarray, ham: np.ndarray) -> np.ndarray:
    return ((cos >= params.near_cosine) & (ham <= params.near_phash_distance)) | (
        ham <= params.identical_phash_distance
    )


def find_duplicate_groups(
    frames: pd.DataFrame, vectors: np.ndarray, params: DuplicateParams = DuplicateParams()
) -> pd.DataFrame:
    """Assign every frame to exactly one group.

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

    # 1. exact copies, anywhere
    first_by_hash: dict[str, int] = {}
    for i, digest in enumerate(frames["sha256"]):
        if digest in first_by_hash:
            attach(i, first_by_hash[digest], "exact")
        else:
            first_by_hash[digest] = i

    # 2. temporal runs inside each video, each frame compared to its run's anchor
    order = frames.sort_values(["video_id", "frame_index"]).index.to_numpy()
    anchor = -1
    for pos, i in enumerate(order):
        if pos and frames.at[i, "video_id"] == frames.at[order[pos - 1], "video_id"] and anchor >= 0:
            cos = float(vectors[i] @ vectors[anchor])
            ham = int(hamming_distance(phash[i], phash[anchor]))
            if _is_near(params, np.array(cos), np.array(ham)):
                if parent[i] != parent[anchor]:
                    attach(i, anchor, "temporal")
                continue
        anchor = i

    # 3. across runs and videos: greedy clustering of leaders over a k-NN graph
    reps = np.array([max(group, key=quality.__getitem__) for group in members.values()])
    if len(reps) > 1:
        nbr, sims = knn(vectors[reps], k=min(params.neighbors, len(reps) - 1))
        taken = np.zeros(len(reps), dtype=bool)  # absorbed, or already a cluster head
        for a in np.argsort(-quality[reps], kind="stable"):
            if taken[a]:
                continue
            taken[a] = True
            keep = nbr[a] >= 0
            keep[keep] = ~taken[nbr[a][keep]]
            cand = nbr[a][keep]
            ham = hamming_distance(phash[reps[cand]], phash[reps[a]])
            for b in cand[_is_near(params, sims[a][keep], ham)]:
                taken[b] = True
                attach(reps[b], reps[a], "near")

    # representatives: the best-quality member of each final group
    out = pd.DataFrame({"frame_id": frames["frame_id"], "_root": parent, "_quality": quality})
    rep_index = out.groupby("_root")["_quality"].idxmax()
    rep_of_root = dict(zip(rep_index.index, rep_index.to_numpy()))
    rep = np.array([rep_of_root[r] for r in parent])
    out["group_id"] = frames["frame_id"].to_numpy()[rep]
    out["is_representative"] = rep == np.arange(n)
    out["group_size"] = out.groupby("_root")["frame_id"].transform("size").astype(int)
    out["similarity"] = np.einsum("ij,ij->i", vectors, vectors[rep]).clip(-1, 1)
    reason[out["is_representative"].to_numpy()] = "representative"
    reason[(out["group_size"] == 1).to_numpy()] = "unique"
    out["reason"] = reason
    return out.drop(columns=["_root", "_quality"])[
        ["frame_id", "group_id", "is_representative", "reason", "similarity", "group_size"]
    ]


def embedding_sources(frames: pd.DataFrame, max_phash_distance: int = 2) -> np.ndarray:
    """Cheap before expensive: for each frame, the row whose embedding it can reuse.

    Walking each video in frame order, a frame that is a pixel copy (same SHA-256) or a
    perceptual copy (pHash within ``max_phash_distance`` bits) of the last frame that was
    embedded reuses that frame's vector; anything else is embedded itself. Comparing to
    the last *embedded* frame, not the predecessor, keeps slow drift from being skipped.
    Returns, per row of ``frames``, the row index to embed (itself when it must be).
    """
    source = np.arange(len(frames))
    phash = frames["phash"].to_numpy(dtype=np.int64)
    sha = frames["sha256"].to_numpy()
    anchor, anchor_video = -1, None
    for i in frames.sort_values(["video_id", "frame_index"]).index.to_numpy():
        video = frames.at[i, "video_id"]
        if (
            anchor >= 0
            and video == anchor_video
            and (sha[i] == sha[anchor] or int(hamming_distance(phash[i], phash[anchor])) <= max_phash_distance)
        ):
            source[i] = anchor
        else:
            anchor, anchor_video = i, video
    return source
