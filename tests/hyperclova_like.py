"""A tiny stand-in for HyperCLOVAX-SEED's tokenizer: its control tokens and chat format, a toy vocabulary.

The vocabulary is a byte-level BPE trained in-process on a few English and Korean sentences. The chat
template follows HyperCLOVA X's ChatML variant: every block is `<|im_start|>{role}\\n{content}<|im_end|>`,
an assistant answer is closed by `<|im_end|><|endofturn|>`, a function call by `<|im_end|><|stop|>`.
As in the real config, eos is `<|endoftext|>`, so the end-of-turn markers must be found elsewhere.
"""

from __future__ import annotations

from functools import lru_cache

import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|endofturn|>", "<|stop|>")

# Rendered with trim_blocks/lstrip_blocks (as transformers does), so each line below is one output line.
CHAT_TEMPLATE = """\
{% for message in messages %}
{% if message.tool_calls is defined %}
{% if message.content %}
<|im_start|>assistant
{{ message.content }}<|im_end|>
{% endif %}
<|im_start|>assistant -> tool/function_call
{{ message.tool_calls | tojson }}<|im_end|><|stop|>
{% elif message.role == 'assistant' %}
<|im_start|>assistant
{{ message.content }}<|im_end|><|endofturn|>
{% else %}
<|im_start|>{{ 'tool/function_call' if message.role == 'tool' else message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

TRAINING_TEXT = (
    "You are CLOVA X, an AI language model developed by NAVER.",
    "The weather in Seoul is clear and the temperature is 25 degrees.",
    "Tell me the weather in Seoul, then tell me about the river.",
    "안녕하세요, 저는 네이버에서 만든 인공지능 언어모델 클로바 X입니다.",
    "오늘 서울의 날씨는 맑고 기온은 25도입니다.",
    "자기소개 해줘. 안녕? 반가워요!",
)


@lru_cache(maxsize=1)
def hyperclova_like_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A ~300-token byte-level BPE with HyperCLOVAX-SEED's special tokens and chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    # Added after training, so the control tokens sit after the learned vocabulary as in the real model.
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
