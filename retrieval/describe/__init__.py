"""Describing photos: the caption corpus, the built-in vocabulary and tags, caption and pair files, and XMP
sidecars for other photo tools."""
