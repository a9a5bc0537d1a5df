"""The Ray embedder: decoding and encoding spread over a Ray cluster (Ray Data, an actor pool, one model per
actor, a GPU per actor where the cluster has them). Embedded batches come back to the driver, which writes
them exactly as with the local embedder; Ray restarts a dead actor and retries its batch, and a retried batch
only repeats vectors the driver has not written yet.
"""

from __future__ import annotations

import json
import math
from typing import Iterator, Sequence

import numpy as np

from clipdex.indexer.decode import Decoded, DecodeSettings, decode_file
from clipdex.indexer.embedders import EmbeddedBatch, embed_decoded
from clipdex.retrieval import config


class _EmbedActor:
    """Runs inside a Ray actor: loads the model once, then decodes and embeds batches of paths."""

    def __init__(self, name: str, pretrained: str | None, device: str) -> None:
        from clipdex.retrieval.models.loading import load_model

        self.encoder = load_model(name, pretrained, device, prepare_now=False)  # a folder where there is one
        self.encoder.use_threads(1)  # one actor a CPU

    def __call__(self, batch: dict) -> dict:
        """Embedded as the local engine does (a video: one vector a frame); the vectors of each file travel back
        as float32 bytes with their frame times, since a batch's columns must have one shape a row."""
        settings = DecodeSettings(self.encoder.preprocess, self.encoder.image_size)
        decoded = [decode_file(i, path, settings) for i, path in enumerate(batch["path"])]
        vectors = {d.position: v for d, v in embed_decoded(self.encoder, decoded).done}
        return {
            "position": batch["position"],
            "vectors": np.array([vectors[d.position].astype(np.float32).tobytes() if d.position in vectors else b""
                                 for d in decoded], dtype=object),
            "times": np.array(["" if d.times is None else json.dumps(d.times) for d in decoded], dtype=object),
            "width": np.array([d.width for d in decoded]),
            "height": np.array([d.height for d in decoded]),
            "taken_at": np.array([np.nan if d.taken_at is None else d.taken_at for d in decoded]),
            "error": np.array([d.error or "" for d in decoded], dtype=object),
            "sha256": np.array([d.sha256 or "" for d in decoded], dtype=object),
        }


class RayEmbedder:
    """Embeds files on a Ray cluster (`address`, or a local one); same batches out as LocalEmbedder."""

    def __init__(self, encoder, batch_size: int = config.DEFAULT_BATCH_SIZE, address: str | None = None,
                 actors: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            from clipdex.retrieval.errors import ClipdexError

            raise ClipdexError("--engine ray needs Ray: pip install 'clipdex[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        self.identity, self.batch_size = encoder.identity, batch_size
        self.device = encoder.device
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.actors = actors or max(1, self.gpus or int(resources.get("CPU", 1)))

    def embed(self, paths: Sequence[str]) -> Iterator[EmbeddedBatch]:
        import ray.data

        if not paths:
            return
        items = [{"position": i, "path": p} for i, p in enumerate(paths)]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / self.batch_size)))
        embedded = dataset.map_batches(
            _EmbedActor,
            fn_constructor_kwargs={
                "name": self.identity.name,
                "pretrained": self.identity.pretrained,
                "device": "cuda" if self.gpus else "cpu",
            },
            batch_size=self.batch_size,
            concurrency=self.actors,
            num_gpus=1 if self.gpus else 0,
            num_cpus=1,
            batch_format="numpy",
        )
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            done, failed = [], []
            for i, position in enumerate(batch["position"]):
                position = int(position)
                if batch["error"][i]:
                    failed.append(Decoded(position, None, error=str(batch["error"][i])))
                    continue
                taken = float(batch["taken_at"][i])
                times = json.loads(batch["times"][i]) if batch["times"][i] else None
                decoded = Decoded(position, None, int(batch["width"][i]), int(batch["height"][i]),
                                  None if math.isnan(taken) else taken, sha256=str(batch["sha256"][i]), times=times)
                vectors = np.frombuffer(batch["vectors"][i], dtype=np.float32).reshape(-1, self.identity.dim)
                done.append((decoded, vectors if times is not None else vectors[0]))
            yield EmbeddedBatch(done, failed)
