"""Uploaded files -> a chat turn's frames: one image, several images, or a short video.

Several images, or a video's frames sampled evenly as MIMIC-IT's loader samples them
(`data.mimic_it.sample_frames`), become one media of frames right after BOS, the layout those
samples train in. Every refusal is a UserError of one line naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from sphinx_jax.data.image import to_rgb
from sphinx_jax.data.mimic_it import sample_frames
from sphinx_jax.data.records import open_image
from sphinx_jax.util.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v")
MAX_VIDEO_FRAMES = 3600  # decoded frames of one video (2 minutes at 30 fps)


def read_frames(paths: Sequence[str | Path], *, max_frames: int, max_pixels: int,
                max_bytes: int) -> list[Image.Image]:
  """RGB frames of the uploaded `paths`: every image in order (at most `max_frames`), or
  `max_frames` frames sampled from one video or animated GIF."""
  paths = [Path(p) for p in paths]
  if not paths:
    return []
  for path in paths:
    if not path.is_file():
      raise UserError(f"{path.name}: the upload is missing")
    if path.stat().st_size > max_bytes:
      raise UserError(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB, over the upload "
                       f"limit of {max_bytes / 2**20:.0f} MiB")
  videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
  if videos and len(paths) > 1:
    raise UserError(f"{videos[0].name}: a video comes alone, not with other files")
  if videos:
    return _video(videos[0], max_frames, max_pixels)
  if len(paths) > max_frames:
    raise UserError(f"{len(paths)} images: at most {max_frames} per turn")
  images = [open_image(p.read_bytes(), p.name, max_pixels) for p in paths]
  if len(paths) == 1 and getattr(images[0], "n_frames", 1) > 1:  # an animated GIF / WebP
    return _animation(images[0], max_frames, paths[0])
  return [to_rgb(image) for image in images]


def _picks(n: int, k: int, path: Path) -> list[int]:
  """The frame indices to keep of n (MIMIC-IT's even sampling), or a refusal."""
  if n == 0:
    raise UserError(f"{path.name}: a video without frames")
  if n > MAX_VIDEO_FRAMES:
    raise UserError(f"{path.name}: {n} frames, more than {MAX_VIDEO_FRAMES}; upload a short video")
  return [int(i) for i in sample_frames(n, min(k, n))]


def _animation(image: Image.Image, k: int, path: Path) -> list[Image.Image]:
  frames = []
  for i in _picks(image.n_frames, k, path):
    image.seek(i)
    frames.append(to_rgb(image.copy()))
  return frames


def _video(path: Path, k: int, max_pixels: int) -> list[Image.Image]:
  """Two passes: count the frames (demuxing, nothing decoded), then decode keeping only the
  sampled ones, so a long upload never sits in memory as pixels."""
  import av  # requirements-demo.txt: only a video upload needs it

  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise UserError(f"{path.name}: no video stream")
      stream = container.streams.video[0]
      if stream.width * stream.height > max_pixels:
        raise UserError(f"{path.name}: {stream.width}x{stream.height} video, over the limit of "
                         f"{max_pixels} pixels per frame")
      n = sum(1 for packet in container.demux(stream) if packet.size)
    keep = set(_picks(n, k, path))
    frames = []
    with av.open(str(path)) as container:
      for i, frame in enumerate(container.decode(video=0)):
        if i in keep:
          frames.append(frame.to_image().convert("RGB"))
  except av.FFmpegError as e:
    raise UserError(f"{path.name}: unreadable video ({e.strerror or e})") from None
  if not frames:
    raise UserError(f"{path.name}: a video without frames")
  return frames
