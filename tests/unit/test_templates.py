from __future__ import annotations

from pathlib import Path

import pytest

from somner.core import Message
from somner.engine.templates import (
    BUILTINS,
    ChatTemplate,
    TemplateNotFound,
    TemplateTextError,
    builtin_source,
    choose_template,
)

CHAT = [
    Message("system", "Be brief."),
    Message("user", "Hi"),
    Message("assistant", "Hello."),
    Message("user", "Bye"),
]


def render(name: str, messages: list[Message] = CHAT) -> str:
    return ChatTemplate(builtin_source(name), bos_token="<s>", eos_token="</s>", label=name).render(messages)


def test_gemma_turns_and_system_prefix() -> None:
    assert render("gemma") == (
        "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_llama3() -> None:
    assert render("llama3", [Message("system", "S"), Message("user", "U")]) == (
        "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_chatml_and_alias() -> None:
    expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert render("chatml", [Message("developer", "S"), Message("user", "U")]) == expected
    assert builtin_source("qwen") == builtin_source("chatml")


def test_mistral() -> None:
    assert render("mistral") == "<s>[INST] Be brief.\n\nHi [/INST] Hello.</s>[INST] Bye [/INST]"


def test_phi3() -> None:
    assert render("phi3", [Message("user", "U")]) == "<|user|>\nU<|end|>\n<|assistant|>\n"


def test_every_builtin_renders() -> None:
    for name in BUILTINS:
        assert "Bye" in render(name)


def test_precedence() -> None:
    def no_tokens(_: str) -> bool:
        return False

    assert choose_template("chatml", "{{ gguf }}", "gemma3", no_tokens)[0] == "chatml"
    assert choose_template(None, "{{ gguf }}", "gemma3", no_tokens) == ("gguf", "{{ gguf }}")
    assert choose_template(None, None, "gemma3", no_tokens)[0] == "gemma"
    assert choose_template(None, None, "llama", lambda t: t == "<|start_header_id|>")[0] == "llama3"
    assert choose_template(None, None, "llama", lambda t: t == "[INST]")[0] == "mistral"
    with pytest.raises(TemplateNotFound, match="has no chat template"):
        choose_template(None, None, "mystery", no_tokens)


def test_template_from_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}")
    label, source = choose_template(str(path), None, "x", lambda _: False)
    assert ChatTemplate(source, bos_token="", eos_token="", label=label).render(CHAT[:2]) == "[system]Be brief.[user]Hi"
    with pytest.raises(TemplateNotFound, match="neither a built-in"):
        choose_template(str(tmp_path / "missing.jinja"), None, "x", lambda _: False)


def test_sandbox_blocks_python_internals() -> None:
    hostile = ChatTemplate("{{ messages.__class__.__mro__ }}", bos_token="", eos_token="")
    with pytest.raises(TemplateTextError):
        hostile.render(CHAT)
    with pytest.raises(TemplateNotFound, match="does not compile"):
        ChatTemplate("{% for %}", bos_token="", eos_token="")


def test_raise_exception_becomes_a_client_error() -> None:
    strict = ChatTemplate(
        "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}",
        bos_token="",
        eos_token="",
    )
    with pytest.raises(TemplateTextError, match="first message must be from the user") as info:
        strict.render(CHAT)
    assert info.value.status == 400
