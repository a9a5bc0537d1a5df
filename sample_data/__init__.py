"""Generated sample photos with exact captions, and the sample model trained on them."""
