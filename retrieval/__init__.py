"""The clipdex engine, one concern per package:

- `models/`: which model runs and how (model folders on ONNX Runtime; `models/openclip/` builds, runs and exports
  open_clip models in torch, only with the `[torch]` extra);
- `storage/`: the store (SQLite or PostgreSQL: the source of truth) and its FAISS index cache;
- `search/`: queries, hybrid ranking, strong and weak matches, near-duplicates;
- `media/`: photos, camera RAW, video frames, the text in photos;
- `describe/`: captions, the vocabulary and tags, XMP sidecars;
- `training/`: fine-tuning and Recall@K;
- `library.py` ties a folder's store, model binding, writer lock and index cache together; `config.py` holds every
  default; `errors.py` the errors a user can act on."""
