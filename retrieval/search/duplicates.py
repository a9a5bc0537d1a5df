"""Near-duplicate photos: items whose embeddings are within a cosine threshold and whose pixels agree, grouped
transitively.

A range search per item finds its close neighbours; each such pair is then confirmed on the pixels (pixels.py:
one photo's picture found in the other's, so crops, resizes and re-encodes are copies, and two screenshots of
different documents, which CLIP embeds alike, are not); union-find turns the confirmed pairs into groups, so a
burst of twenty shots of one sunset becomes one group even when the first and last differ more than the
threshold. A video's frames are confirmed by their embeddings alone.
"""

from __future__ import annotations

from clipdex.retrieval.library import Library
from clipdex.retrieval.search import pixels
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
                    pair = (min(int(item), int(other)), max(int(item), int(other)))
                    close[pair] = max(close.get(pair, -1.0), min(float(score), 1.0))
    pictures = _Pictures(library, video_of)
    for a, b in [pair for pair in close if not pictures.same(*pair)]:
        del close[(a, b)]
    for a, b in close:
        parent[_root(parent, b)] = _root(parent, a)
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
            result.append(_suggest_keep(members, dates, close, pictures))
    return sorted(result, key=lambda g: (-len(g), g[0]["path"]))


_COMPARED: dict[tuple, float] = {}  # pixel similarity of two files (path, size, mtime each), for the next query


class _Pictures:
    """The photos' pixels, each read once, and which pairs hold the same picture."""

    def __init__(self, library: Library, video_of: dict[int, int]) -> None:
        self.library, self.video_of = library, video_of
        self.loaded: dict[int, object] = {}
        self.rows: dict[int, dict] = {}

    def row(self, item: int) -> dict | None:
        if item not in self.rows:
            self.rows[item] = self.library.store.items([item]).get(item)
        return self.rows[item]

    def image(self, item: int):
        if item not in self.loaded:
            row = self.row(item)
            self.loaded[item] = pixels.load(row["key"]) if row is not None else None
        return self.loaded[item]

    def same(self, a: int, b: int) -> bool:
        if a in self.video_of or b in self.video_of:  # a video's moment: its embedding alone
            return True
        rows = self.row(a), self.row(b)
        if None in rows:
            return False
        key = tuple((row["key"], row["size"], row["mtime"]) for row in rows)
        if key not in _COMPARED:
            first, second = self.image(a), self.image(b)
            if len(_COMPARED) > 100_000:
                _COMPARED.clear()
            _COMPARED[key] = -1.0 if first is None or second is None else pixels.similarity(first, second)
        return _COMPARED[key] >= pixels.SAME_PICTURE

    def upscale_of(self, big: dict, small: dict) -> bool:
        """Whether `big` is only `small` made larger."""
        if big["id"] in self.video_of or small["id"] in self.video_of:
            return False
        image = self.image(big["id"])
        return image is not None and pixels.is_upscale(image, self.image(small["id"]) or image,
                                                       (big["width"] or 0, big["height"] or 0),
                                                       (small["width"] or 0, small["height"] or 0))


def _suggest_keep(members: list[dict], dates: dict[int, float | None], close: dict[tuple[int, int], float],
                  pictures: _Pictures) -> list[dict]:
    """The members, the one to keep first: never an upscale over the photo it was made from (its extra pixels
    hold nothing), else the most pixels, then the largest file, then the oldest (copies are made after their
    original); the others in their order. Nothing is deleted: it is a hint, with its reason in plain words."""
    def pixel_count(m: dict) -> int:
        return (m["width"] or 0) * (m["height"] or 0)

    def age(m: dict) -> float:  # older is larger; an undated copy is the youngest
        date = dates[m["id"]]
        return -date if date is not None else -float("inf")

    order = lambda m: (pixel_count(m), m["size"] or 0, age(m), -m["id"])  # noqa: E731
    upscales = {m["id"] for m in members
                if any(pixel_count(o) < pixel_count(m) and pictures.upscale_of(m, o) for o in members)}
    originals = [m for m in members if m["id"] not in upscales] or members
    keep = max(originals, key=order)
    others = [m for m in members if m is not keep]
    if any(pixel_count(m) > pixel_count(keep) for m in others):
        reason = "the original: the larger copies are upscales of it (their extra pixels add no detail)"
    elif all(pixel_count(m) < pixel_count(keep) for m in others):
        reason = "the largest picture (the most pixels)"
    elif all((pixel_count(m), m["size"] or 0) < (pixel_count(keep), keep["size"] or 0) for m in others):
        reason = "as many pixels as any, and the largest file"
    else:
        reason = "the same pixels and file size as the others, and the oldest"
    for member in others:
        member["keep"] = False
        member["similarity"] = close.get((min(member["id"], keep["id"]), max(member["id"], keep["id"])))
    return [keep | {"keep": True, "reason": reason, "similarity": 1.0}, *others]
