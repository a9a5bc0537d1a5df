"""Retrieval Recall@K exactly as the CLIP benchmarks define it (Flickr30k / MSCOCO protocol).

text→image: a caption scores a hit when its own image is in the top K images.
image→text: an image scores a hit when *any* of its captions is in the top K captions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

KS = (1, 5, 10)


def recall_at_k(
    image_vectors: np.ndarray, text_vectors: np.ndarray, text_image: Sequence[int], ks: Sequence[int] = KS
) -> dict[str, dict[str, float]]:
    """`text_image[t]` is the row in `image_vectors` of caption t's image; vectors are L2-normalised."""
    text_image = np.asarray(text_image)
    scores = text_vectors @ image_vectors.T  # (texts, images)
    broken = np.isnan(scores)  # a NaN vector (a diverged model) is never a hit, and never beats a real score
    scores = np.where(broken, -np.inf, scores)
    # Rank of each caption's own image: how many images score strictly higher.
    own = scores[np.arange(len(text_image)), text_image]
    t2i_rank = np.where(broken[np.arange(len(text_image)), text_image], np.iinfo(np.int64).max,
                        (scores > own[:, None]).sum(axis=1))
    # For each image, the best rank any of its captions reaches among all captions.
    by_image = scores.T  # (images, texts)
    i2t_rank = np.full(len(image_vectors), np.iinfo(np.int64).max)
    for t, i in enumerate(text_image):
        if not broken[t, i]:
            i2t_rank[i] = min(i2t_rank[i], int((by_image[i] > by_image[i, t]).sum()))
    return {
        "text_to_image": {f"R@{k}": float((t2i_rank < k).mean()) for k in ks},
        "image_to_text": {f"R@{k}": float((i2t_rank < k).mean()) for k in ks},
    }


def embed_image_files(encoder, paths, batch_size: int = 64) -> np.ndarray:
    """Vectors of image files in order, decoded a batch at a time so a large set never sits in memory whole."""
    from clipdex.retrieval.media.images import open_image

    return np.concatenate(
        [
            encoder.encode_images([open_image(p, encoder.image_size) for p in paths[i : i + batch_size]])
            for i in range(0, len(paths), batch_size)
        ]
    )


@dataclass
class PairVectors:
    """The embedded images (each once) and captions of a pair set; `text_image[t]` is caption t's image row."""

    paths: list
    images: np.ndarray
    texts: np.ndarray
    text_image: np.ndarray

    def recall(self) -> dict:
        result = recall_at_k(self.images, self.texts, self.text_image)
        return {**result, "images": len(self.paths), "texts": len(self.texts)}


def embed_pairs(encoder, pairs, batch_size: int = 64) -> PairVectors:
    paths = sorted({p.image for p in pairs})
    row = {path: i for i, path in enumerate(paths)}
    captions = [p.caption for p in pairs]
    text_vectors = np.concatenate(
        [encoder.encode_texts(captions[i : i + batch_size]) for i in range(0, len(captions), batch_size)]
    )
    return PairVectors(paths, embed_image_files(encoder, paths, batch_size), text_vectors,
                       np.asarray([row[p.image] for p in pairs]))


def evaluate_pairs(encoder, pairs, batch_size: int = 64) -> dict:
    """Recall@K of `encoder` on pairs; images with several captions count once in image→text."""
    return embed_pairs(encoder, pairs, batch_size).recall()
