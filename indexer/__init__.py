"""Turning folders of photos into library rows: scan, detect changes, decode, embed, write."""
