"""Judges on hand-written captions; the HTTP judge against a local fake endpoint."""
from __future__ import annotations

import http.server
import json
import threading

import pytest
from PIL import Image

from bridge_torch import judges

CAPTIONS = ["A cat sitting on a sofa.", "Two cats playing with yarn.", "A red car parked outside.",
            "A plate of pasta with tomato sauce.", "A tabby cat lying in the sun.",
            "A catalogue of concatenated strings."]


def test_word_list_judge():
  j = judges.WordListJudge()
  assert j.judge(CAPTIONS, judges.Concept.from_label("cat")) == [True, True, False, False, True,
                                                                 False]
  assert j.judge(CAPTIONS, judges.Concept.from_label("tabby, tabby cat")) == [
      False, False, False, False, True, False]
  sports = judges.Concept.from_label("sports_car")
  assert j.judge(["A police car.", "Two sports  cars race."], sports) == [False, True]
  with pytest.raises(ValueError, match="empty concept"):
    judges.Concept.from_label(" , ")


@pytest.mark.slow
def test_minilm_judge_separates_related_from_unrelated():
  j = judges.EmbeddingJudge(threshold=0.35)
  sim_cat = j.similarity(CAPTIONS[:4], judges.Concept.from_label("cat"))
  sim_car = j.similarity(CAPTIONS[:4], judges.Concept.from_label("car"))
  assert sim_cat[0] > sim_cat[2] and sim_cat[0] > sim_cat[3]
  assert sim_car[2] > max(sim_car[0], sim_car[1], sim_car[3])
  assert j.judge(CAPTIONS[:4], judges.Concept.from_label("cat")) == [True, True, False, False]
  assert j.judge(CAPTIONS[:4], judges.Concept.from_label("car")) == [False, False, True, False]


class _FakeLLM(http.server.BaseHTTPRequestHandler):
  bodies: list = []

  def do_POST(self):  # noqa: N802
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    _FakeLLM.bodies.append((body, self.headers.get("Authorization")))
    text = [c for c in body["messages"][0]["content"] if c["type"] == "text"][0]["text"]
    answer = "Yes." if "cat" in text.split("Caption:")[1].lower() else "no"
    out = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(out)))
    self.end_headers()
    self.wfile.write(out)

  def log_message(self, *a):
    pass


def test_http_judge_protocol(monkeypatch):
  server = http.server.HTTPServer(("127.0.0.1", 0), _FakeLLM)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    monkeypatch.setenv("CSAE_JUDGE_URL", f"http://127.0.0.1:{server.server_port}/v1/chat")
    monkeypatch.setenv("CSAE_JUDGE_KEY", "secret")
    j = judges.make_judge("http")
    img = Image.new("RGB", (8, 8), (200, 10, 10))
    got = j.judge(CAPTIONS[:3], judges.Concept("cat"), images=[img] * 3)
    assert got == [True, True, False]
    body, auth = _FakeLLM.bodies[0]
    assert auth == "Bearer secret" and body["temperature"] == 0
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png")
    assert all("rand1" not in json.dumps(b) for b, _ in _FakeLLM.bodies)   # no arm names sent
  finally:
    server.shutdown()
  monkeypatch.delenv("CSAE_JUDGE_URL")
  with pytest.raises(ValueError, match="CSAE_JUDGE_URL"):
    judges.make_judge("http")
