"""clipdex: search your photos by sentence."""
