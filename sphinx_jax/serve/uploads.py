"""Uploaded files -> a chat turn's frames: one image, several images, or a short video.

Several images, or a video's frames sampled evenly as MIMIC-IT's loader samples them
(`data.mimic_it.sample_frames`), become one media of frames right after BOS, the layout those
samples train in. Every refusal is a UserError of one line naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageSequence

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
    return _sampled(_video(videos[0], max_pixels), max_frames, videos[0])
  if len(paths) > max_frames:
    raise UserError(f"{len(paths)} images: at most {max_frames} per turn")
  frames = [_image_frames(p, max_pixels) for p in paths]
  if len(paths) == 1 and len(frames[0]) > 1:  # an animated GIF / WebP: a video
    return _sampled(frames[0], max_frames, paths[0])
  return [f[0] for f in frames]


def _sampled(frames: list[Image.Image], k: int, path: Path) -> list[Image.Image]:
  if not frames:
    raise UserError(f"{path.name}: a video without frames")
  return [frames[i] for i in sample_frames(len(frames), min(k, len(frames)))]


def _image_frames(path: Path, max_pixels: int) -> list[Image.Image]:
  image = open_image(path.read_bytes(), path.name, max_pixels)
  if getattr(image, "n_frames", 1) == 1:
    return [to_rgb(image)]
  return [to_rgb(frame.copy()) for frame in ImageSequence.Iterator(image)][:MAX_VIDEO_FRAMES]


def _video(path: Path, max_pixels: int) -> list[Image.Image]:
  import av  # requirements-demo.txt: only a video upload needs it

  frames = []
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise UserError(f"{path.name}: no video stream")
      stream = container.streams.video[0]
      if stream.width * stream.height > max_pixels:
        raise UserError(f"{path.name}: {stream.width}x{stream.height} video, over the limit of "
                         f"{max_pixels} pixels per frame")
      for frame in container.decode(stream):
        if len(frames) == MAX_VIDEO_FRAMES:
          raise UserError(f"{path.name}: more than {MAX_VIDEO_FRAMES} frames; upload a short "
                           "video")
        frames.append(frame.to_image().convert("RGB"))
  except av.FFmpegError as e:
    raise UserError(f"{path.name}: unreadable video ({e.strerror or e})") from None
  return frames
