"""Prompt templates: the R1-Zero instruction, and Hugging Face style Jinja chat templates.

A `Template` turns a question into the exact text the policy sees. 'r1_zero' is the DeepSeek-R1
paper's template (Table 1, REFERENCE.md section 2) for base models; 'chat' renders a user turn
through a chat template (ChatML, as Qwen2.5 uses, unless one is given, e.g. the tokenizer's
`chat_template`) and ends with the assistant header so generation starts the answer.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from typing import Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

SLOT = "{prompt}"

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {prompt}. Assistant:")

# ChatML, the turn format of Qwen2.5's chat template (its tool-calling branches left out).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def format_prompt(question: str, template: "str | Template" = R1_ZERO_TEMPLATE) -> str:
  """The prompt text for `question`.

  `template` is either a string with a '{prompt}' slot (filled by plain substitution, so other
  braces such as '\\boxed{}' stay as they are) or a `Template`.
  """
  if isinstance(template, Template):
    return template.render(question)
  if SLOT not in template:
    raise ValueError(f"template {template[:80]!r}{'...' if len(template) > 80 else ''} has no {SLOT} slot "
                     "for the question")
  return template.replace(SLOT, question)


class _GenerationTag(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask marker) renders its body."""
  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

  def _render(self, caller):
    return caller()


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=16)
def _compile(chat_template: str) -> jinja2.Template:
  """Compile in the environment transformers renders chat templates in."""
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[_GenerationTag, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(chat_template)


def apply_chat_template(messages: Sequence[Mapping[str, str]], chat_template: str,
                        add_generation_prompt: bool = True, **kw) -> str:
  """Render `messages` ([{'role': ..., 'content': ...}]) through a Hugging Face Jinja chat template.

  Extra keywords reach the template as variables (transformers passes bos_token / eos_token this
  way: see `Tokenizer.special_tokens_map`). A template's `raise_exception(...)` raises
  jinja2.TemplateError.
  """
  return _compile(chat_template).render(messages=[dict(m) for m in messages],
                                        add_generation_prompt=add_generation_prompt, **kw)


@dataclasses.dataclass(frozen=True)
class Template:
  """How a question becomes prompt text."""
  name: str
  prompt_format: str = SLOT
  """The question's text with a '{prompt}' slot; for 'chat', the user message content."""
  chat_template: str | None = None
  """A Jinja chat template; None sends `prompt_format` filled in as the whole prompt."""
  system: str | None = None
  """A system message placed before the user turn (chat only)."""

  def __post_init__(self):
    if SLOT not in self.prompt_format:
      raise ValueError(f"Template {self.name!r}: prompt_format {self.prompt_format[:80]!r} has no {SLOT} slot")

  def render(self, question: str, **kw) -> str:
    """The prompt text for `question`; `kw` reaches a chat template as variables."""
    text = format_prompt(question, self.prompt_format)
    if self.chat_template is None:
      return text
    messages = ([{"role": "system", "content": self.system}] if self.system else [])
    return apply_chat_template(messages + [{"role": "user", "content": text}], self.chat_template, **kw)


BOXED_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."
"""The boxed-answer instruction small-base R1-Zero studies prompt with (SimpleRL-Zoo, Qwen2.5-Math)."""

TEMPLATES = {
    "r1_zero": Template("r1_zero", prompt_format=R1_ZERO_TEMPLATE),
    "chat": Template("chat", chat_template=CHATML_TEMPLATE),
    "chat_boxed": Template("chat_boxed", prompt_format=SLOT + BOXED_INSTRUCTION, chat_template=CHATML_TEMPLATE),
}


def check_spec(spec: str, field: str = "template") -> None:
  """A `template` setting is a registered name or a text with a {prompt} slot; else ValueError."""
  if spec not in TEMPLATES and SLOT not in spec:
    raise ValueError(f"{field}={spec[:60]!r}: use one of {sorted(TEMPLATES)} or a text with a {SLOT} slot")


def resolve(spec: str, tokenizer, field: str = "template") -> "str | Template":
  """A `template` setting as `format_prompt` takes it: 'r1_zero' -> the R1 text, a chat name ->
  that Template with the tokenizer's own chat template (which it must have), a text -> itself."""
  check_spec(spec, field)
  if spec not in TEMPLATES:
    return spec
  t = TEMPLATES[spec]
  if t.chat_template is None:
    return t.prompt_format
  if not getattr(tokenizer, "chat_template", None):
    raise ValueError(f"{field}={spec!r} but the tokenizer {getattr(tokenizer, 'source', '')!r} has no chat template "
                     "(tokenizer_config.json's chat_template or chat_template.jinja); use template='r1_zero' or a text "
                     f"with a {SLOT} slot")
  return dataclasses.replace(t, chat_template=tokenizer.chat_template)


def get_template(name: str, chat_template: str | None = None, **overrides) -> Template:
  """The registered template `name`; `chat_template` (e.g. a tokenizer's) replaces a chat template."""
  if name not in TEMPLATES:
    raise ValueError(f"template={name!r} is not one of {sorted(TEMPLATES)}")
  t = TEMPLATES[name]
  if chat_template is not None:
    if t.chat_template is None:
      raise ValueError(f"template={name!r} is not a chat template; chat_template applies only to 'chat'")
    overrides["chat_template"] = chat_template
  return dataclasses.replace(t, **overrides) if overrides else t
