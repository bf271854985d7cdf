"""Rendering chat templates as transformers renders them, without importing transformers (seconds of start-up).

The environment mirrors `transformers.utils.chat_template_utils`: a sandboxed Jinja environment with
`trim_blocks` and `lstrip_blocks`, loop controls, a `{% generation %}` block, the `tojson` filter without
HTML escaping, and the globals `raise_exception`, `strftime_now`, `dict` and `namespace`; the tokenizer's
special tokens (`bos_token`, `eos_token`, ...) are template variables, as `apply_chat_template` passes them.
A test renders every tiny model's template both ways and compares the text.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

SAMPLE_CONVERSATIONS = (
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello! Who are you?"}],
    [{"role": "user", "content": "Hello! Who are you?"}],  # for templates that refuse a system message
)


@functools.lru_cache(maxsize=1)
def environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text; rendering keeps it as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_keep"), [], [], body).set_lineno(lineno)

        def _keep(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        def __setitem__(self, name, value):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"templates cannot set {name!r} on a namespace")
            super().__setitem__(name, value)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt),
                       dict=dict, namespace=Namespace)
    return env


def parse(template: str) -> None:
    """Raise jinja2.TemplateSyntaxError when the template does not parse."""
    environment().parse(template)


def render(template: str, messages: list[dict], special_tokens: dict[str, str], *,
           add_generation_prompt: bool = True) -> str:
    """The text `tokenizer.apply_chat_template(messages, tokenize=False)` gives for this template."""
    return environment().from_string(template).render(messages=messages, tools=None, documents=None,
                                                      add_generation_prompt=add_generation_prompt, **special_tokens)


def render_sample(template: str, special_tokens: dict[str, str]) -> str:
    """A sample conversation rendered with a system message, or without when the template refuses one;
    raises what the template raises when it renders neither."""
    error: Exception | None = None
    for messages in SAMPLE_CONVERSATIONS:
        try:
            return render(template, messages, special_tokens)
        except Exception as err:  # noqa: BLE001 - templates raise whatever jinja raises
            error = err
    assert error is not None
    raise error
