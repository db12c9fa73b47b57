"""Stream mode vs dense scoring of the same frames: which person is which, and how far their scores are apart.

Why match by boxes: the two modes track the same faces, but a track can split or start a frame later in one of
them, so person ids need not line up (matching by id once paired different people: mean |d| 0.13 where the
matched persons differ by 0.035). A stream-mode person is paired with the dense person whose faces it overlaps
(IoU > 0.5, same frame) most often.
"""

from __future__ import annotations

import numpy as np

from deepguard.runtime.types import Analysis


def match_persons(dense: Analysis, stream: Analysis, min_iou: float = 0.5) -> dict[int, int]:
    """stream person id -> dense person id (the one its faces overlap most often)."""
    from deepguard.runtime.facedet.blazeface import iou_matrix

    by_frame: dict[int, list] = {}
    for f in dense.faces:
        by_frame.setdefault(f.frame, []).append(f)
    votes: dict[int, dict[int, int]] = {}
    for f in stream.faces:
        cands = by_frame.get(f.frame, [])
        if not cands or f.person is None:
            continue
        iou = iou_matrix(np.array([f.box], np.float64), np.array([c.box for c in cands], np.float64))[0]
        j = int(np.argmax(iou))
        if iou[j] > min_iou and cands[j].person is not None:
            v = votes.setdefault(f.person, {})
            v[cands[j].person] = v.get(cands[j].person, 0) + 1
    return {p: max(v, key=v.__getitem__) for p, v in votes.items()}


def person_deltas(dense: Analysis, stream: Analysis) -> list[float]:
    """|stream score - dense score| for every stream-mode person with a dense counterpart."""
    pair = match_persons(dense, stream)
    scores = {p.id: p.score for p in dense.persons}
    return [abs(p.score - scores[pair[p.id]]) for p in stream.persons if pair.get(p.id) in scores]


__all__ = ["match_persons", "person_deltas"]
