"""Near-duplicate photos: items whose embeddings are within a cosine threshold, grouped transitively.

A range search per item finds its close neighbours; union-find turns those pairs into groups, so a burst of
twenty shots of one sunset becomes one group even when the first and last differ more than the threshold.
"""

from __future__ import annotations

from clipdex.retrieval.library import Library
from clipdex.retrieval.search.hits import iso_date
from clipdex.retrieval.storage.store import IMAGE


def _root(parent: dict[int, int], item: int) -> int:
    while parent.setdefault(item, item) != item:
        parent[item] = parent[parent[item]]  # path halving keeps the trees shallow
        item = parent[item]
    return item


def duplicate_groups(library: Library, threshold: float = 0.95) -> list[list[dict]]:
    """Groups of at least two images, largest first; each member with what a person needs to pick one: the
    suggested copy to keep first (`keep`, with its `reason`), each other with its `similarity` to that one
    (the cosine, when the two are within the threshold of each other; None when only linked through others)."""
    dim = library.require_identity().dim
    index = library.vector_index(IMAGE)
    parent: dict[int, int] = {}
    close: dict[tuple[int, int], float] = {}
    video_of = library.store.frame_files()  # frames of one video look alike: that is no duplicate
    for ids, vectors in library.store.vectors(IMAGE, dim):
        lims, scores, found = index.range_search(vectors, threshold)
        for row, item in enumerate(ids):
            for other, score in zip(found[lims[row] : lims[row + 1]], scores[lims[row] : lims[row + 1]]):
                same_video = item in video_of and video_of.get(int(other)) == video_of[item]
                if other != item and not same_video:
                    parent[_root(parent, int(other))] = _root(parent, int(item))
                    pair = (min(int(item), int(other)), max(int(item), int(other)))
                    close[pair] = max(close.get(pair, -1.0), min(float(score), 1.0))
    groups: dict[int, list[int]] = {}
    for item in list(parent):
        groups.setdefault(_root(parent, item), []).append(item)
    rows = library.store.items([i for g in groups.values() if len(g) > 1 for i in g])
    result = []
    for group in groups.values():
        files: dict[str, int] = {}  # a video is one member of a group (its earliest matching frame), not one a frame
        for item in sorted((i for i in group if i in rows), key=lambda i: (rows[i]["key"], rows[i]["frame"])):
            files.setdefault(rows[item]["key"], item)
        if len(files) > 1:
            dates = {i: rows[i]["taken_at"] if rows[i]["taken_at"] is not None else rows[i]["mtime"]
                     for i in files.values()}
            members = [
                {k: rows[i][k] for k in ("id", "size", "width", "height")} | {"path": rows[i]["key"]}
                | {"taken": iso_date(dates[i])}
                | ({"time": rows[i]["frame_time"]} if rows[i]["frame_time"] is not None else {})
                for i in files.values()
            ]
            result.append(_suggest_keep(members, dates, close))
    return sorted(result, key=lambda g: (-len(g), g[0]["path"]))


def _suggest_keep(members: list[dict], dates: dict[int, float | None],
                  close: dict[tuple[int, int], float]) -> list[dict]:
    """The members, the one to keep first: the most pixels, then the largest file, then the oldest (copies are
    made after their original); the others in their order. Nothing is deleted: it is a hint, with its reason."""
    def pixels(m: dict) -> int:
        return (m["width"] or 0) * (m["height"] or 0)

    def age(m: dict) -> float:  # older is larger; an undated copy is the youngest
        date = dates[m["id"]]
        return -date if date is not None else -float("inf")

    keep = max(members, key=lambda m: (pixels(m), m["size"] or 0, age(m), -m["id"]))
    others = [m for m in members if m is not keep]
    if all(pixels(m) < pixels(keep) for m in others):
        reason = "the most pixels"
    elif all((pixels(m), m["size"] or 0) < (pixels(keep), keep["size"] or 0) for m in others):
        reason = "as many pixels as any, the largest file"
    else:
        reason = "as many pixels and bytes as any, the oldest"
    for member in others:
        member["keep"] = False
        member["similarity"] = close.get((min(member["id"], keep["id"]), max(member["id"], keep["id"])))
    return [keep | {"keep": True, "reason": reason, "similarity": 1.0}, *others]
