"""Near-duplicate photos: items whose embeddings are within a cosine threshold, grouped transitively.

A range search per item finds its close neighbours; union-find turns those pairs into groups, so a burst of
twenty shots of one sunset becomes one group even when the first and last differ more than the threshold.
"""

from __future__ import annotations

from clipdex.retrieval.library import Library
from clipdex.retrieval.hits import iso_date
from clipdex.retrieval.store import IMAGE


def _root(parent: dict[int, int], item: int) -> int:
    while parent.setdefault(item, item) != item:
        parent[item] = parent[parent[item]]  # path halving keeps the trees shallow
        item = parent[item]
    return item


def duplicate_groups(library: Library, threshold: float = 0.95) -> list[list[dict]]:
    """Groups of at least two images, largest first; each member with what a person needs to pick one."""
    dim = library.require_identity().dim
    index = library.vector_index(IMAGE)
    parent: dict[int, int] = {}
    video_of = library.store.frame_files()  # frames of one video look alike: that is no duplicate
    for ids, vectors in library.store.vectors(IMAGE, dim):
        lims, _, found = index.range_search(vectors, threshold)
        for row, item in enumerate(ids):
            for other in found[lims[row] : lims[row + 1]]:
                same_video = item in video_of and video_of.get(int(other)) == video_of[item]
                if other != item and not same_video:
                    parent[_root(parent, int(other))] = _root(parent, int(item))
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
            result.append([
                {k: rows[i][k] for k in ("id", "size", "width", "height")} | {"path": rows[i]["key"]}
                | {"taken": iso_date(rows[i]["taken_at"] if rows[i]["taken_at"] is not None else rows[i]["mtime"])}
                | ({"time": rows[i]["frame_time"]} if rows[i]["frame_time"] is not None else {})
                for i in files.values()
            ])
    return sorted(result, key=lambda g: (-len(g), g[0]["path"]))
