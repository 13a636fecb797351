"""Geometric verification: do two pictures show the same scene from a slightly different view?

A pooled embedding says two frames look alike; it cannot say they show the *same* place
(two pages of text, two aisles of one store look alike too). Local features can: ORB
keypoints matched with Lowe's ratio test (ambiguous matches, such as the corners of a
regular grid or repeated letters, are dropped), then a homography fitted with RANSAC. Many
matches that agree on one geometry mean the same scene re-shot: a viewpoint, zoom, framing
or exposure change that moves every pixel and defeats perceptual hashes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIDE = 512  # keypoints are found on the luma scaled to this long side
FEATURES = 1000
RATIO = 0.75  # Lowe's ratio test
REPROJECTION_PX = 5.0
JUDGED_FROM = 150  # keypoints each picture needs before their disagreement means anything


@dataclass(frozen=True)
class Keypoints:
    points: np.ndarray  # (n, 2) float32, in the scaled image
    descriptors: np.ndarray | None  # (n, 32) uint8 ORB descriptors


def keypoints(image: Image.Image | bytes) -> Keypoints:
    import cv2

    if isinstance(image, bytes | bytearray):
        image = Image.open(io.BytesIO(image))
        image.draft("L", (SIDE, SIDE))
    grey = image.convert("L")
    grey.thumbnail((SIDE, SIDE), Image.Resampling.BILINEAR)
    found, descriptors = cv2.ORB_create(nfeatures=FEATURES).detectAndCompute(np.asarray(grey), None)
    points = np.float32([k.pt for k in found]).reshape(-1, 2)
    return Keypoints(points, descriptors)


def inliers(a: Keypoints, b: Keypoints) -> int:
    """How many ratio-tested matches between two keypoint sets agree on one homography; -1
    when either picture has too few keypoints to judge (a smooth gradient, a flat design)."""
    import cv2

    if a.descriptors is None or b.descriptors is None or min(len(a.points), len(b.points)) < JUDGED_FROM:
        return -1
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 8:
        return 0
    source = a.points[[m.queryIdx for m in good]]
    target = b.points[[m.trainIdx for m in good]]
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, REPROJECTION_PX)
    return int(mask.sum()) if mask is not None else 0
