from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from corl.data.templates import question_prompt
from corl.modules.prompts import JanusPrompts, span_mask
from corl.modules.tiny import CHAT_TEMPLATE

QUESTIONS = [
    "What colour is the circle? Options: A. red B. blue C. green D. orange",
    "  How many shapes are there?  ",  # leading and trailing whitespace
    "Look closely.\nWhich shape is red?\n",  # several lines
]
PROMPTS = ["a red circle on a white background", "  an orange square ", "a blue circle\nand a green square\n"]
SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.\n\n"
)


def processor_ids(processor, text, images=None, mode="text"):
    """What a user of transformers gets from the processor, the reference corl must equal."""
    return processor(text=text, images=images, generation_mode=mode, return_tensors="pt")["input_ids"][0].tolist()


def unpadded(ids, mask):
    return ids[mask.bool()].tolist()


def test_tiny_processor_has_janus_pro_layout(tiny_policy):
    processor = tiny_policy().processor
    assert processor.chat_template == CHAT_TEMPLATE and processor.use_default_system_prompt
    tokenizer = processor.tokenizer
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id  # the tokenizer adds BOS itself
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What?\n"}]}]
    chat = processor.apply_chat_template(conversation, add_generation_prompt=True)
    # No BOS; the last part is right-stripped only; the turn ends in "\n\n".
    assert chat == "<|User|>: <image_placeholder>\n What?\n\n<|Assistant|>:"
    for token in ("<|User|>", "<|Assistant|>", "<begin_of_image>", "<end_of_image>", "<image_placeholder>"):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token


@pytest.mark.parametrize("qa_type", ["MC", "counting"])
def test_understanding_prompts_equal_the_processors(tiny_policy, qa_type):
    policy = tiny_policy()
    images = [Image.new("RGB", (40, 30), (200, 10, 10)) for _ in QUESTIONS]
    ids, mask, _, _ = policy.understanding_prompts(QUESTIONS, [qa_type] * len(QUESTIONS), images)
    for row, question in enumerate(QUESTIONS):
        conversation = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": question_prompt(question, qa_type)}]}]
        text = policy.processor.apply_chat_template(conversation, add_generation_prompt=True)
        expected = processor_ids(policy.processor, text, images=[images[row]], mode="text")
        assert unpadded(ids[row], mask[row]) == expected
        decoded = policy.tokenizer.decode(expected)
        assert decoded.startswith(policy.tokenizer.bos_token + SYSTEM + "<|User|>: <begin_of_image>")
        assert decoded.endswith("\n\n<|Assistant|>:")


def test_generation_prompts_equal_the_processors(tiny_policy):
    policy = tiny_policy()
    ids, mask, _ = policy.generation_prompts(PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        conversation = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        text = policy.processor.apply_chat_template(conversation, add_generation_prompt=True)
        expected = processor_ids(policy.processor, text, mode="image")
        assert unpadded(ids[row], mask[row]) == expected
        decoded = policy.tokenizer.decode(expected)
        assert decoded == f"{policy.tokenizer.bos_token}<|User|>: {prompt.strip()}\n\n<|Assistant|>:<begin_of_image>"


def test_self_captioner_prompt_equals_the_processors(tiny_policy):
    policy = tiny_policy()
    seen = []

    def sample_texts(ids, mask, *args, **kwargs):
        seen.append(unpadded(ids[0], mask[0]))
        return SimpleNamespace(texts=["a caption"])

    policy.sample_texts = sample_texts
    policy.describe(torch.zeros(1, policy.num_image_tokens, 64), "Describe this image in one sentence.", 4)
    conversation = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": "Describe this image in one sentence."}]}]
    text = policy.processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert seen == [processor_ids(policy.processor, text, images=[Image.new("RGB", (8, 8))])]


@pytest.mark.parametrize("prompt", PROMPTS + ["a red circle ", " a", "a"])
def test_matching_span_is_exactly_the_prompts_tokens(tiny_policy, prompt):
    policy = tiny_policy()
    prompts = JanusPrompts(policy.processor, policy.num_image_tokens)
    content = [{"type": "image"}, {"type": "text", "text": prompt}]
    batch = prompts.encode([content, [{"type": "image"}, {"type": "text", "text": "a much longer prompt to pad"}]],
                           "text")
    start, end = prompts.part_span(content, 1, "text")
    assert batch.texts[0][start:end].strip() == prompt.strip()
    text_mask = span_mask(batch, [(start, end), (0, 0)])[0]
    # The prompt's own tokens: those of the template-stripped prompt where the chat text has it.
    assert policy.tokenizer.decode(batch.ids[0][text_mask]).strip() == prompt.strip()
    tokens_alone = policy.tokenizer(batch.texts[0][start:end], add_special_tokens=False)["input_ids"]
    assert batch.ids[0][text_mask].tolist() == tokens_alone
    roles = {policy.tokenizer.convert_tokens_to_ids(t) for t in ("<|User|>", "<|Assistant|>", "<end_of_image>")}
    assert not set(batch.ids[0][text_mask].tolist()) & roles


def test_a_prompt_the_template_changes_is_an_error_that_names_it(tiny_policy):
    processor = tiny_policy().processor
    processor.chat_template = CHAT_TEMPLATE.replace("{{text}}", "{{text|upper}}")
    prompts = JanusPrompts(processor, 4)
    content = [{"type": "image"}, {"type": "text", "text": "a red circle "}]
    with pytest.raises(ValueError, match="'a red circle '"):
        prompts.part_span(content, 1, "text")
