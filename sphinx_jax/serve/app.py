"""The web demo (`launch serve`): a Gradio Blocks page in front of a `Batcher`.

Upload one image, several, or a short video; ask; the answer streams into the chat; boxes and
keypoints of a grounded answer are drawn on the (first) image beside it, and with a SAM model
each box's mask too (SPHINX's language-referred segmentation). Every event that decodes
goes through the batcher, so concurrent users share batched generate calls. `/chat` is the same
turn as an API endpoint for `gradio_client` (greedy, no history). Bad input becomes a message in
the page (the status line) or a gr.Error for API callers; the server keeps serving.
"""
from __future__ import annotations

import dataclasses
import html
import secrets
from typing import Iterator

import gradio as gr

from sphinx_jax.data import tasks
from sphinx_jax.data.records import pixel_limit
from sphinx_jax.data.synthetic_text import OCR_QUESTION
from sphinx_jax.inference import grounding, segment
from sphinx_jax.serve.batcher import Batcher, Request
from sphinx_jax.serve.uploads import read_frames
from sphinx_jax.util.errors import UserError

# SPHINX's task prompts (paper Table 1; data.tasks) behind one click each
SHORTCUTS = {"Detect all objects": tasks.DETECTION,
             "Describe with boxes": tasks.GROUNDED_CAPTION,
             "Read the text (OCR)": OCR_QUESTION}
GROUND = "Ground a phrase"  # tasks.REC around the phrase typed in the question box
# no web fonts: the page makes no request beyond this server (works offline)
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one upload may hold: frames per turn, pixels per image, bytes."""

  max_frames: int = 8
  max_pixels: int | None = None  # None: $SPHINX_MAX_IMAGE_PIXELS or its default, read by `build`
  max_upload_mb: int = 50


def build(batcher: Batcher, limits: Limits = Limits(), title: str = "SPHINX",
          sam: segment.SegmentAnything | None = None) -> gr.Blocks:
  """The page and the `/chat` endpoint, wired to `batcher` (its max_new_tokens caps answers,
  its max_batch + max_waiting bound the requests in flight); `sam`: each box of an answer is
  segmented, its mask drawn with it."""
  max_pixels = pixel_limit() if limits.max_pixels is None else limits.max_pixels

  def frames_of(paths) -> list:
    paths = [paths] if isinstance(paths, str) else (paths or [])
    return read_frames(paths, max_frames=limits.max_frames, max_pixels=max_pixels,
                       max_bytes=limits.max_upload_mb * 2**20)

  def on_upload(paths):
    """New media start a new conversation; a refused upload is removed, with the reason."""
    try:
      frames = frames_of(paths)
    except UserError as e:
      return None, [], [], [], None, _warning(e)
    note = f"{len(frames)} frames, one media" if len(frames) > 1 else ""
    return gr.skip(), frames, [], [], _preview(frames), note

  def respond(question, turns, frames, temperature, top_p, max_new, chat) -> Iterator[tuple]:
    question = (question or "").strip()
    if not question:
      yield chat, turns, gr.skip(), _warning("the question is empty: type one, or pick a task"), \
          gr.skip()
      return
    try:
      ticket = batcher.submit(Request(tuple(frames), question, tuple(turns), int(max_new),
                                      float(temperature), float(top_p),
                                      seed=secrets.randbelow(2**31)))
    except UserError as e:
      hint = " (Reset forgets the history)" if turns else ""
      yield chat, turns, gr.skip(), _warning(f"{e}{hint}"), gr.skip()
      return
    chat = [*chat, {"role": "user", "content": html.escape(question)},
            {"role": "assistant", "content": ""}]
    yield chat, turns, gr.skip(), "", ""  # the question moves into the chat
    text = ""
    try:
      for piece in ticket.pieces():
        text += piece
        chat[-1] = {"role": "assistant", "content": html.escape(text)}
        yield chat, turns, gr.skip(), "", gr.skip()
    except UserError as e:
      yield chat[:-2], turns, gr.skip(), _warning(e), gr.skip()
      return
    answer = ticket.answer
    chat[-1] = {"role": "assistant", "content": html.escape(answer)}
    yield chat, [*turns, (question, answer)], *_drawn(answer, frames, sam), gr.skip()

  def api_chat(image, question):
    """One greedy turn about an image (no history): the answer's text."""
    try:
      frames = frames_of(image)
      if not (question or "").strip():
        raise UserError("the question is empty")
      return batcher.submit(Request(tuple(frames), question.strip())).result()
    except UserError as e:
      raise gr.Error(str(e)) from None

  in_flight = batcher.max_batch + batcher.max_waiting
  with gr.Blocks(title=title, analytics_enabled=False) as demo:
    media, turns = gr.State([]), gr.State([])
    gr.Markdown(f"## {title}\nUpload an image, several images, or a short video, then ask. "
                "Boxes in an answer are drawn on the image"
                + (", with their Segment Anything masks." if sam else "."))
    with gr.Row():
      with gr.Column(scale=2):
        files = gr.File(label="Image(s) or a short video", file_count="multiple",
                        elem_id="upload")
        picture = gr.Image(label="Image (with the last answer's boxes)", type="pil",
                           interactive=False, elem_id="picture")
        with gr.Accordion("Sampling", open=False):
          temperature = gr.Slider(0, 1, value=0, step=0.05, label="temperature (0: greedy)")
          top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p")
          max_new = gr.Slider(1, batcher.max_new_tokens, value=batcher.max_new_tokens, step=1,
                              label="max new tokens")
      with gr.Column(scale=3):
        chat = gr.Chatbot(label="SPHINX", elem_id="chat", height=420)
        status = gr.Markdown("", elem_id="status")
        question = gr.Textbox(label="Question", placeholder="Ask about the image",
                              elem_id="question")
        with gr.Row():
          shortcuts = {name: gr.Button(name, size="sm") for name in [*SHORTCUTS, GROUND]}
        with gr.Row():
          send = gr.Button("Send", variant="primary", elem_id="send")
          reset = gr.Button("Reset", elem_id="reset")
    with gr.Row(visible=False):  # the API's own components: `/chat` for gradio_client
      api_image, api_question = gr.File(), gr.Textbox()
      api_answer, api_button = gr.Textbox(), gr.Button()

    files.upload(on_upload, files, [files, media, turns, chat, picture, status],
                 api_visibility="private")
    files.clear(lambda: ([], [], [], None, ""), None, [media, turns, chat, picture, status],
                api_visibility="private")
    decode = dict(fn=respond, inputs=[question, turns, media, temperature, top_p, max_new, chat],
                  outputs=[chat, turns, picture, status, question],
                  concurrency_limit=in_flight, concurrency_id="decode")
    send.click(**decode, api_visibility="private")
    question.submit(**decode, api_visibility="private")
    for name, prompt in SHORTCUTS.items():
      shortcuts[name].click(lambda p=prompt: p, None, question, api_visibility="private")
    shortcuts[GROUND].click(lambda q: tasks.REC.format((q or "").strip() or "the object"),
                            question, question, api_visibility="private")
    reset.click(lambda frames: ([], [], _preview(frames), ""), media,
                [chat, turns, picture, status], api_visibility="private")
    api_button.click(api_chat, [api_image, api_question], api_answer, api_name="chat",
                     concurrency_limit=in_flight, concurrency_id="decode")
  # Gradio runs up to `in_flight` decode events at once, so the batcher sees every waiting
  # request and its bound (Busy) is the one users meet; Gradio's queue is a backstop.
  return demo.queue(max_size=batcher.max_waiting, default_concurrency_limit=batcher.max_batch)


def _drawn(answer: str, frames, sam) -> tuple:
  """(picture, note) for an answer: its boxes / keypoints drawn on the first frame, each box's
  SAM mask under it when there is a SAM."""
  found = grounding.parse(answer)
  if not (found and frames):
    return gr.skip(), ""
  note = f"{sum(len(g.coords) for g in found)} box(es) / point(s) drawn on the image"
  if sam is not None:
    try:
      result = segment.segment_answer(sam, frames[0], answer)
    except UserError as e:  # the answer stands, drawn without masks
      return grounding.draw(_preview(frames), found), f"{note}; no masks: {html.escape(str(e))}"
    if len(result.masks):
      return segment.overlay(frames[0], result), f"{result.message} drawn (Segment Anything)"
  return grounding.draw(_preview(frames), found), note


def _preview(frames):
  """The first frame, enlarged as the boxes are drawn on it (None without frames)."""
  return grounding.upscaled(frames[0]) if frames else None


def _warning(message) -> str:
  return f"⚠️ {html.escape(str(message))}"
