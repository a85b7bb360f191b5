"""Tiny random VLMs of the three real architectures, saved as their Hub repos lay them out.

LLaVA-1.5 (llava-hf/llava-1.5-7b-hf: CLIP ViT + Llama, LlavaForConditionalGeneration),
LLaVA-NeXT (llava-hf/llava-v1.6-vicuna-7b-hf: any-resolution tiles over image_grid_pinpoints)
and Llama 3.2 Vision (meta-llama/Llama-3.2-11B-Vision-Instruct: Mllama, a local encoder
tapped at intermediate layers, a global encoder, cross-attention; gated on the Hub). Weights
are sharded (model-0000k-of-0000n.safetensors + model.safetensors.index.json) as the real
repos are; Meta's repos also carry `original/` (consolidated .pth, params.json, tokenizer.model).

Files and chat templates are the real repos' (`hub_layout`; src/icet/mirror/README.md has
each file list's source): transformers 5 would save `processor_config.json` with the image
processor nested in it and `chat_template.jinja`, where the repos serve the image processor
in `preprocessor_config.json`, the template in `chat_template.json` (Meta's also inside
`tokenizer_config.json`) and `special_tokens_map.json` beside the tokenizer. transformers 5
reads both layouts; the rehearsal reads the one a cluster downloads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SHARD = "60KB"  # small enough that every tiny model is written in several shards, as the real ones
LLAVA_LAYERS = 4  # CLIP layers: ICET layers 0..4 (the real 24 scaled down)
MLLAMA_LAYERS = 5  # local encoder layers, tapped after layers 1, 3, 4 (real: 32, taps 3,7,15,23,30)
MLLAMA_TAPS = [0, 2, 3]

# llava-hf/llava-1.5-7b-hf chat_template.json (701 bytes at the repo's latest commits; the
# text as its public duplicate FriendliAI/llava-1.5-7b-hf serves it, which
# json.dumps({"chat_template": ...}, indent=2) turns back into exactly 701 bytes).
# llava-hf/llava-v1.6-vicuna-7b-hf's chat_template.json came from the same change
# ("incorporate `generation` tag", 700 bytes) and is taken to hold the same text (not read).
# The system turn's text is written as is, then "USER: <image>\n{prompt} ASSISTANT:".
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}"
    "{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# meta-llama/Llama-3.2-11B-Vision-Instruct chat_template.json's template (the gated repo was
# out of reach): the text as the Swift Jinja package's tests quote it as Llama 3.2 Vision's
# (maiqingqiang/Jinja, Tests/JinjaTests/ChatTemplateTests.swift, llama3_2visionChatTemplate),
# identical in two further public copies; json.dumps({"chat_template": ...}, indent=2) of it
# is 5,150 bytes, the "5.15 kB" public clones of the repo list for chat_template.json. With an
# image in the conversation it writes no system turn (and refuses a system message).
LLAMA_3_2_VISION_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- Find out if there are any images #}
{% set image_ns = namespace(has_images=false) %}      
{%- for message in messages %}
    {%- for content in message['content'] %}
        {%- if content['type'] == 'image' %}
            {%- set image_ns.has_images = true %}
        {%- endif %}
    {%- endfor %}
{%- endfor %}

{#- Error out if there are images and system message #}
{%- if image_ns.has_images and not system_message == "" %}
    {{- raise_exception("Prompting with images is incompatible with system messages.") }}
{%- endif %}

{#- System message if there are no images #}
{%- if not image_ns.has_images %}
    {{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
    {%- if tools is not none %}
        {{- "Environment: ipython\n" }}
    {%- endif %}
    {{- "Cutting Knowledge Date: December 2023\n" }}
    {{- "Today Date: " + date_string + "\n\n" }}
    {%- if tools is not none and not tools_in_user_message %}
        {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
        {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
        {{- "Do not use variables.\n\n" }}
        {%- for t in tools %}
            {{- t | tojson(indent=4) }}
            {{- "\n\n" }}
        {%- endfor %}
    {%- endif %}
    {{- system_message }}
    {{- "<|eot_id|>" }}
{%- endif %}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
        {%- if message['content'] is string %}
            {{- message['content'] }}
        {%- else %}
            {%- for content in message['content'] %}
                {%- if content['type'] == 'image' %}
                    {{- '<|image|>' }}
                {%- elif content['type'] == 'text' %}
                    {{- content['text'] }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""
# Llama 3's special tokens the template and Mllama's processor use; <|image|> is Mllama's
# image token (MllamaProcessor's default), <|finetune_right_pad_id|> Meta's pad token.
LLAMA3_VISION_TOKENS = {"pad": "<|finetune_right_pad_id|>", "bos": "<|begin_of_text|>",
                        "eos": "<|eot_id|>", "unk": "<unk>", "image": "<|image|>"}
LLAMA3_VISION_EXTRA = ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>",
                       "<|python_tag|>"]


def _text_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, vocab_size=vocab_size, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2, max_position_embeddings=1024,
                       initializer_range=0.2)


def _vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, num_hidden_layers=LLAVA_LAYERS, num_attention_heads=2,
                            intermediate_size=64, image_size=32, patch_size=8)


def hub_layout(out: Path, *, processor_config: bool = False, chat_template_json: bool = True,
               template_in_tokenizer_config: bool = False, added_tokens: list[str] = ()) -> None:
    """Rewrite a transformers-5 save into the Hub layout of the real repos (module docstring).

    A processor's processor_config.json, which nests the image processor, becomes
    preprocessor_config.json (the image processor, with the processor class as the llava-hf
    and Meta files carry it) and, where the real repo has one, a processor_config.json with
    what is left (patch_size, image_token, ...). chat_template.jinja goes: its text into
    chat_template.json ({"chat_template": ...}) and/or tokenizer_config.json's
    "chat_template", as the repo keeps it. special_tokens_map.json and, where the repo has
    one, added_tokens.json are written beside the tokenizer."""
    composite_path = out / "processor_config.json"
    if composite_path.exists():
        composite = json.loads(composite_path.read_text(encoding="utf-8"))
        image = {**composite.pop("image_processor"), "processor_class": composite["processor_class"]}
        _write_json(out / "preprocessor_config.json", image)
        if processor_config:
            _write_json(composite_path, composite)
        else:
            composite_path.unlink()
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    jinja = out / "chat_template.jinja"
    if jinja.exists():
        template = jinja.read_text(encoding="utf-8")
        jinja.unlink()
        if chat_template_json:
            _write_json(out / "chat_template.json", {"chat_template": template})
        if template_in_tokenizer_config:
            tokenizer_config["chat_template"] = template
            _write_json(out / "tokenizer_config.json", tokenizer_config)
    _write_json(out / "special_tokens_map.json",
                {k: tokenizer_config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")
                 if tokenizer_config.get(k)})
    if added_tokens:
        vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        _write_json(out / "added_tokens.json", {t: vocab[t] for t in added_tokens})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def _save(model, processor, tokenizer, out: Path, **layout) -> Path:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, max_shard_size=SHARD)
    processor.save_pretrained(out)
    hub_layout(out, **layout)
    return out


# llava-hf's repos: preprocessor_config.json, processor_config.json (llava-1.5-7b-hf's 173 B
# one at its latest commits, llava-v1.6-mistral-7b-hf's: patch_size, image_token, strategy),
# chat_template.json, tokenizer files with added_tokens.json ({"<image>", "<pad>"}).
LLAVA_HF_LAYOUT = {"processor_config": True, "template_in_tokenizer_config": False,
                   "added_tokens": ["<image>", "<pad>"]}


def build_llava(out: Path, words: list[str], seed: int = 0) -> Path:
    """llava-hf/llava-1.5-7b-hf's architecture (vision_feature_layer -2, "default" select)."""
    from transformers import (CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)

    from icet.word_tokenizers import build_word_tokenizer

    tokenizer = build_word_tokenizer(list(words) + ["user assistant"], out,
                                     chat_template=LLAVA_HF_CHAT_TEMPLATE)
    config = LlavaConfig(vision_config=_vision_config(), text_config=_text_config(len(tokenizer)),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         initializer_range=0.2)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                              crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_HF_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    return _save(LlavaForConditionalGeneration(config).eval(), processor, tokenizer, out,
                 **LLAVA_HF_LAYOUT)


def build_llava_next(out: Path, words: list[str], seed: int = 0) -> Path:
    """llava-hf/llava-v1.6-vicuna-7b-hf's architecture: any-resolution tiles (pinpoints)."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessorPil, LlavaNextProcessor)

    from icet.word_tokenizers import build_word_tokenizer

    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]  # real: 336x(672|1008) grids
    tokenizer = build_word_tokenizer(list(words) + ["user assistant"], out,
                                     chat_template=LLAVA_HF_CHAT_TEMPLATE)
    config = LlavaNextConfig(vision_config=_vision_config(), text_config=_text_config(len(tokenizer)),
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                             image_grid_pinpoints=pinpoints, vision_feature_layer=-2,
                             vision_feature_select_strategy="default")
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(size={"shortest_edge": 32},
                                                   crop_size={"height": 32, "width": 32},
                                                   image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_HF_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    return _save(LlavaNextForConditionalGeneration(config).eval(), processor, tokenizer, out,
                 **LLAVA_HF_LAYOUT)


def write_meta_original(out: Path, seed: int = 0) -> None:
    """Meta's repos also hold original/ (the non-HF checkpoint): consolidated.pth is pickled
    (never fetched: *.pth is forbidden), params.json and tokenizer.model are matched by the
    model allow patterns (*.json, *.model) and so land in the download."""
    original = out / "original"
    original.mkdir(parents=True, exist_ok=True)
    torch.save({"tok_embeddings.weight": torch.zeros(2, 2)}, original / "consolidated.pth")
    (original / "params.json").write_text('{"dim": 32, "n_layers": 2}\n')
    (original / "tokenizer.model").write_bytes(b"tiktoken-bpe-ranks placeholder\n")


def build_mllama(out: Path, words: list[str], seed: int = 0) -> Path:
    """meta-llama/Llama-3.2-11B-Vision-Instruct's architecture, scaled down, with its chat
    template and Llama 3's special tokens (<|image|> the image token); Meta's layout: no
    processor_config.json, the template in chat_template.json and tokenizer_config.json."""
    from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil,
                              MllamaProcessor, MllamaTextConfig, MllamaVisionConfig)

    from icet.word_tokenizers import build_word_tokenizer

    tokenizer = build_word_tokenizer(list(words) + ["user assistant system"], out,
                                     chat_template=LLAMA_3_2_VISION_CHAT_TEMPLATE,
                                     names=LLAMA3_VISION_TOKENS,
                                     extra_special_tokens=LLAMA3_VISION_EXTRA)
    vision = MllamaVisionConfig(hidden_size=16, num_hidden_layers=MLLAMA_LAYERS, num_global_layers=2,
                                attention_heads=2, intermediate_size=32, image_size=16, patch_size=8,
                                max_num_tiles=4, intermediate_layers_indices=MLLAMA_TAPS,
                                vision_output_dim=16 * (len(MLLAMA_TAPS) + 1), initializer_range=0.2)
    text = MllamaTextConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64, vocab_size=len(tokenizer),
                            cross_attention_layers=[1], max_position_embeddings=1024,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, initializer_range=0.2)
    config = MllamaConfig(vision_config=vision, text_config=text,
                          image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"))
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=4),
        tokenizer=tokenizer, chat_template=LLAMA_3_2_VISION_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config).eval()
    # Random init leaves the cross-attention gates at 0 (the LM would ignore the image).
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
            if "gate" in name and "vision_model" in name:
                param.fill_(0.5)
    _save(model, processor, tokenizer, out, template_in_tokenizer_config=True)
    write_meta_original(out, seed)
    return out
