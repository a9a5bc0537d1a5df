"""Media: opening photos (EXIF orientation, HEIC, bomb checks), camera RAW, video frames, and reading the text in
photos (OCR)."""
