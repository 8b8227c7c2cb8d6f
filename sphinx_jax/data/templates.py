"""The `conv_v1_2` chat template of LLaMA2-Accessory (accessory/data/conversation/lib.py), SPHINX's.

A prompt is `SYSTEM + "\\n\\n###"`, then `" Human: q\\n###"` and `" Assistant: a\\n###"` per turn; a
last answer of None ends the prompt at `" Assistant:"`, where generation starts and runs until STOP.
Training supervises every answer together with its trailing STOP (the reference's `to_predict`).
"""
from __future__ import annotations

from sphinx_jax.util.errors import UserError

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
ROLES = ("Human", "Assistant")
SEP = "###"
STOP = "\n" + SEP  # the reference's response_end_signal: generation stops here


def conversation(turns: list[tuple[str, str | None]]) -> tuple[str, list[str]]:
  """(prompt, targets): targets are the answers with their STOP, in order, as they appear."""
  prompt, targets = SYSTEM + "\n\n" + SEP, []
  for i, (question, answer) in enumerate(turns):
    prompt += f" {ROLES[0]}: {question}{STOP}"
    if answer is None:
      if i != len(turns) - 1:
        raise UserError("only the last answer can be None")
      prompt += f" {ROLES[1]}:"
    else:
      prompt += f" {ROLES[1]}: {answer}{STOP}"
      targets.append(answer + STOP)
  return prompt, targets


def conversation_prompt(turns: list[tuple[str, str | None]]) -> str:
  """The conv_v1_2 text of `turns` [(question, answer)]; a None last answer leaves it open."""
  return conversation(turns)[0]
