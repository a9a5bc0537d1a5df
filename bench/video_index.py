"""Seconds of video indexed per second of wall time: phone-like 1920×1080 30 fps H.264 clips through the real
`index` pipeline (a frame every 2 s decoded, seeking between them, and embedded), beside the decoding alone.

    python bench/video_index.py [--videos 4] [--seconds 20] [--keyframe-seconds 1] [--model ViT-B-32]
        [--precision fp32] [--json]

--keyframe-seconds: a keyframe every this many seconds (phones write one a second; 8 is a long group of pictures,
which has to be decoded through).
Random weights (speed does not depend on them), run as `clipdex index` runs them: the model prepared for ONNX
Runtime (once, into $CLIPDEX_CACHE or a folder under $TMPDIR), at --precision (fp32 as the CLI's default). The
clips are generated once into $TMPDIR/clipdex-bench-videos-*.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipdex.indexer.pipeline import index_folders  # noqa: E402
from clipdex.retrieval.models.loading import load_model  # noqa: E402
from clipdex.retrieval.library import Library  # noqa: E402
from clipdex.retrieval.media.video import read_frames  # noqa: E402


def phone_clips(count: int, seconds: int, keyframe_seconds: int = 1) -> Path:
    """Moving colour fields with grain, 1080p at 30 fps: enough detail that H.264 works as on a real clip; a
    keyframe every `keyframe_seconds` (phones: 1)."""
    import av

    folder = Path(tempfile.gettempdir()) / f"clipdex-bench-videos-{seconds}s-key{keyframe_seconds}s"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for n in range(count):
        path = folder / f"clip-{n}.mp4"
        if path.exists():
            continue
        base = rng.integers(0, 255, (1080 // 40, 1920 // 40, 3), dtype=np.uint8).repeat(40, 0).repeat(40, 1)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
            gop = 30 * keyframe_seconds
            stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
            for i in range(seconds * 30):
                frame = np.roll(base, i * 8, axis=1) + rng.integers(0, 16, base.shape, dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=20, help="length of each clip")
    parser.add_argument("--keyframe-seconds", type=int, default=1)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--precision", default="fp32", help="as `clipdex index --precision` (default fp32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    folder = phone_clips(args.videos, args.seconds, args.keyframe_seconds)
    os.environ.setdefault("CLIPDEX_CACHE", str(Path(tempfile.gettempdir()) / "clipdex-bench-video-cache"))
    encoder = load_model(args.model, None, args.device, args.precision)  # as `clipdex index` does: prepared (ONNX)
    clips = sorted(folder.glob("*.mp4"))[: args.videos]
    started = time.perf_counter()
    for clip in clips:
        read_frames(clip, encoder.image_size)
    decode_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "lib", create=True)
        started = time.perf_counter()
        report = index_folders(library, [folder], encoder)
        index_s = time.perf_counter() - started
        frames = len(library.store.frame_files())
    video_seconds = args.videos * args.seconds
    result = {"video_seconds": video_seconds, "keyframe_seconds": args.keyframe_seconds, "index_s": round(index_s, 2), "decode_s": round(decode_s, 2),
              "video_s_per_s": round(video_seconds / index_s, 2), "decode_video_s_per_s": round(video_seconds / decode_s, 2),
              "frames": frames, "added": report.added}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{video_seconds} s of 1080p30 video in {args.videos} clips, a keyframe every {args.keyframe_seconds} s: indexed in {index_s:.1f} s = "
          f"{result['video_s_per_s']} s of video per second ({result['frames']} frames embedded); "
          f"decoding alone {result['decode_video_s_per_s']} s/s")


if __name__ == "__main__":
    main()
