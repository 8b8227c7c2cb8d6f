"""The web demo (`launch serve`), driven as its users drive it: a real headless Chromium on the
page, `gradio_client` on the `/chat` endpoint, concurrent requests batched.

The server runs in a subprocess on a tiny SPHINX trained here (seconds) to answer the colour of a
square and to detect it with a box, so answers follow the image and a detection prompt draws a
box. Chromium comes from the system's packages (Debian: `apt-get install chromium`); Playwright
drives it without downloading a browser. The screenshot lands in artifacts/serve_demo.png.
"""
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sphinx_jax.data import tasks
from sphinx_jax.data.synthetic_scenes import COLOURS
from tests.trained_square import QUESTION, scene
from sphinx_jax.inference.sphinx_model import Sphinx
from launch import serve
from sphinx_jax.serve.batcher import Batcher, Busy, Request
from sphinx_jax.serve.uploads import read_frames
from sphinx_jax.util.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"


def _video(path: Path, n: int) -> Path:
  """An MPEG-4 clip whose frame i is grey level 8 * i."""
  import av
  with av.open(str(path), "w") as clip:
    stream = clip.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(n):
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
      for packet in stream.encode(frame):
        clip.mux(packet)
    for packet in stream.encode():
      clip.mux(packet)
  return path


def test_uploads_become_the_frames_of_one_media(tmp_path):
  read = functools.partial(read_frames, max_frames=4, max_pixels=100 * 100, max_bytes=2**20)
  names = []
  for i, colour in enumerate(COLOURS):
    scene(colour).save(tmp_path / f"{i}.png")
    names.append(tmp_path / f"{i}.png")
  assert [f.getpixel((32, 32)) for f in read(names[::-1])] == list(COLOURS.values())[::-1]
  grey = [f.getpixel((8, 8))[0] for f in read([_video(tmp_path / "clip.mp4", 30)])]
  assert np.allclose(grey, [0, 72, 152, 232], atol=6), grey  # frames 0, 9, 19, 29 (Otter's)
  gif = [Image.new("RGB", (40, 40), (10 * i, 0, 0)) for i in range(10)]
  gif[0].save(tmp_path / "anim.gif", save_all=True, append_images=gif[1:])
  assert [f.getpixel((1, 1))[0] for f in read([tmp_path / "anim.gif"])] == [0, 30, 60, 90]
  Image.new("RGB", (101, 100)).save(tmp_path / "big.png")
  (tmp_path / "clip.txt").write_text("no")
  (tmp_path / "bad.mp4").write_bytes(b"\0" * 100)
  for paths, message in (
      ([tmp_path / "big.png"], "big.png: 101x100 image, 10100 pixels, over the limit of 10000"),
      ([tmp_path / "clip.txt"], "clip.txt: unreadable image"),
      ([tmp_path / "bad.mp4"], "bad.mp4: unreadable video"),
      ([tmp_path / "clip.mp4", names[0]], "clip.mp4: a video comes alone"),
      (names + names[:1], "5 images: at most 4 per turn"),
      ([tmp_path / "gone.png"], "gone.png: the upload is missing")):
    with pytest.raises(UserError, match=f"^{re.escape(message)}"):
      read(paths)


def test_answers_are_drawn_with_masks_when_there_is_a_sam(tiny_sam):
  from sphinx_jax.inference.segment import SegmentAnything
  from sphinx_jax.serve import app
  frames = [scene("red")]
  answer = "<p>red square</p>[0.25,0.25,0.75,0.75] <p>corner</p>[0.10,0.10]"
  picture, note = app._drawn(answer, frames, None)
  assert note == "2 box(es) / point(s) drawn on the image" and picture.size == (512, 512)
  sam = SegmentAnything.from_pretrained(tiny_sam[1])
  picture, note = app._drawn(answer, frames, sam)
  assert note == "1 mask(s) drawn (Segment Anything)" and picture.size == (512, 512)
  assert app._drawn("red", frames, sam)[1] == ""  # nothing grounded: the picture stays


def test_serve_without_a_checkpoint_says_how_to_get_one(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(UserError, match=re.escape(
      "no --checkpoint and no runs/default/final_model: run `python -m launch train` (the "
      "embedded default) or pass --checkpoint DIR")):
    serve.resolve_checkpoint(None)
  (tmp_path / serve.DEFAULT_MODEL).mkdir(parents=True)
  (tmp_path / serve.DEFAULT_MODEL / "config.json").write_text("{}")
  assert serve.resolve_checkpoint(None) == serve.DEFAULT_MODEL


def test_the_fixture_model_sees_and_boxes(trained_sphinx):
  model = Sphinx.from_pretrained(trained_sphinx)
  colours = ["red", "blue", "green", "yellow"]
  answers = model.chat_batch([scene(c) for c in colours], [QUESTION] * 4, max_new_tokens=8)
  print("answers:", answers)
  assert sum(a == c for a, c in zip(answers, colours)) >= 3
  assert "[0.25,0.25,0.75,0.75]" in model.chat(scene("red"), tasks.DETECTION, max_new_tokens=32)


def test_the_batcher_streams_each_row_and_equals_chat_alone(trained_sphinx):
  model = Sphinx.from_pretrained(trained_sphinx)
  batcher = Batcher(model, max_batch=4, max_waiting=3, max_new_tokens=32, window_s=1.0)
  scenes = [scene(c) for c in ("red", "blue", "green")]
  turns = [((s,), q) for s, q in zip(scenes, (QUESTION, tasks.DETECTION, QUESTION))]
  alone = [model.chat(s[0], q, max_new_tokens=32) for s, q in turns]
  with pytest.raises(UserError, match="max_new_tokens 0: must be at least 1"):
    batcher.submit(Request(turns[0][0], QUESTION, max_new_tokens=0))
  tickets = [batcher.submit(Request(s, q)) for s, q in turns]
  with pytest.raises(Busy, match="3 requests are waiting"):
    batcher.submit(Request(turns[0][0], QUESTION))
  streamed = [list(t.pieces()) for t in tickets]
  assert [t.result(timeout=60) for t in tickets] == alone  # also after the pieces were read
  assert batcher.batch_sizes == [3]
  assert len(streamed[1]) > 1  # the box answer arrives in pieces, in order
  assert "".join(streamed[1]).strip().startswith(alone[1])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_sphinx, tiny_sam):
  """`python -m launch serve` on 127.0.0.1 with a (tiny random) SAM, images limited to 512 x 512
  pixels."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as users run it
  env = {**env, "JAX_PLATFORMS": "cpu", "GRADIO_ANALYTICS_ENABLED": "False",
         "SPHINX_MAX_IMAGE_PIXELS": str(512 * 512)}
  log = open(ARTIFACTS.mkdir(exist_ok=True) or ARTIFACTS / "serve_test.log", "w")
  proc = subprocess.Popen([sys.executable, "-m", "launch", "serve", "--checkpoint",
                           str(trained_sphinx), "--sam", str(tiny_sam[1]), "--port", str(port),
                           "--max-new-tokens", "32"],
                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  deadline = time.time() + 240
  while "serving" not in (ARTIFACTS / "serve_test.log").read_text():
    if proc.poll() is not None or time.time() > deadline:
      proc.kill()
      pytest.fail("the server did not start:\n" + (ARTIFACTS / "serve_test.log").read_text())
    time.sleep(0.5)
  _wait_for(url, deadline)
  yield url
  proc.terminate()
  proc.wait(30)
  log.close()


def _wait_for(url: str, deadline: float) -> None:
  import urllib.request
  while True:
    try:
      urllib.request.urlopen(url, timeout=5).close()
      return
    except OSError:
      if time.time() > deadline:
        raise
      time.sleep(0.5)


def _chromium() -> str:
  found = os.environ.get("SPHINX_CHROMIUM") or next(
      (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
  if not found:
    pytest.fail("no Chromium: install the system's (Debian: apt-get install chromium) or set "
                "$SPHINX_CHROMIUM to its executable")
  return found


@pytest.fixture
def page(server):
  from playwright.sync_api import sync_playwright
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(server)
    yield page
    browser.close()


def _ask(page, question: str) -> None:
  page.locator("#question textarea").fill(question)
  page.locator("#send").click()


def _assistant_says(page, text: str) -> None:
  page.wait_for_function("t => document.querySelector('#chat').innerText.includes(t)", arg=text)


def _status(page, text: str) -> None:
  page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text)


def test_a_person_chats_about_an_image_and_sees_the_boxes_and_masks(page, tmp_path):
  from playwright.sync_api import expect
  scene("blue").save(tmp_path / "blue.png")
  page.locator("#upload input[type=file]").set_input_files(tmp_path / "blue.png")
  page.wait_for_selector("#picture img")
  _ask(page, QUESTION)
  _assistant_says(page, "blue")
  before = page.locator("#picture img").get_attribute("src")
  page.locator("#reset").click()  # the fixture model knows single turns only
  page.get_by_role("button", name="Detect all objects").click()
  expect(page.locator("#question textarea")).to_have_value(tasks.DETECTION)
  page.locator("#send").click()
  _status(page, "1 mask(s) drawn (Segment Anything)")
  _assistant_says(page, "blue square")
  page.wait_for_function("s => document.querySelector('#picture img').src !== s", arg=before)
  page.screenshot(path=ARTIFACTS / "serve_demo.png", full_page=True)
  drawn = page.locator("#picture img")
  assert drawn.evaluate("img => img.naturalWidth") >= 480  # enlarged to draw legibly


def test_bad_inputs_get_a_message_while_a_parallel_request_completes(page, server, tmp_path):
  from gradio_client import Client, handle_file
  scene("red").save(tmp_path / "red.png")
  client = Client(server, verbose=False)
  with ThreadPoolExecutor(1) as pool:
    parallel = pool.submit(lambda: [client.predict(handle_file(str(tmp_path / "red.png")),
                                                   QUESTION, api_name="/chat")
                                    for _ in range(5)])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    Image.new("RGB", (600, 600)).save(tmp_path / "huge.png")
    for name, message in (("notes.txt", "notes.txt: unreadable image"),
                          ("broken.png", "broken.png: unreadable image"),
                          ("huge.png", "600x600 image, 360000 pixels, over the limit")):
      page.locator("#upload input[type=file]").set_input_files(tmp_path / name)
      _status(page, message)
    page.locator("#upload input[type=file]").set_input_files(tmp_path / "red.png")
    _ask(page, "   ")
    _status(page, "the question is empty")
    assert parallel.result(timeout=120) == ["red"] * 5
  _ask(page, QUESTION)
  _assistant_says(page, "red")  # and the page still answers


def test_concurrent_api_requests_are_batched_and_answer_as_alone(server, tmp_path):
  from gradio_client import Client, handle_file
  files = []
  for i, c in enumerate(list(COLOURS) * 2):
    scene(c).save(tmp_path / f"{i}.png")
    files.append(handle_file(str(tmp_path / f"{i}.png")))
  client = Client(server, verbose=False)

  def ask(f):
    return client.predict(f, QUESTION, api_name="/chat")

  start = time.perf_counter()
  alone, single_s = [], []
  for f in files:
    t = time.perf_counter()
    alone.append(ask(f))
    single_s.append(time.perf_counter() - t)
  with ThreadPoolExecutor(8) as pool:
    list(pool.map(ask, files))  # the batched shapes compile here
    t = time.perf_counter()
    together = [job.result(timeout=120) for job in
                [client.submit(f, QUESTION, api_name="/chat") for f in files]]
    batched_s = time.perf_counter() - t
  print(f"8 requests: one at a time {sum(single_s):.2f} s in all, concurrent {batched_s:.2f} s; "
        f"answers {together}; in all {time.perf_counter() - start:.1f} s")
  assert together == alone, (together, alone)
  assert batched_s < sum(single_s), (batched_s, single_s)
  together_in_log = re.findall(r"decoded (\d+) request\(s\) together",
                               (ARTIFACTS / "serve_test.log").read_text())
  assert max(map(int, together_in_log)) >= 4, together_in_log
