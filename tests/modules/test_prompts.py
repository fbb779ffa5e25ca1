import copy
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


@pytest.mark.parametrize("instruction", ["authors", "poster"])
@pytest.mark.parametrize("qa_type", ["MC", "counting"])
def test_understanding_prompts_with_the_default_system_prompt_equal_the_processors(tiny_policy, qa_type, instruction):
    policy = tiny_policy(system_prompt="default", instruction=instruction)
    images = [Image.new("RGB", (40, 30), (200, 10, 10)) for _ in QUESTIONS]
    ids, mask, _, _ = policy.understanding_prompts(QUESTIONS, [qa_type] * len(QUESTIONS), images)
    for row, question in enumerate(QUESTIONS):
        user_turn = question_prompt(question, qa_type, instruction)
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_turn}]}]
        text = policy.processor.apply_chat_template(conversation, add_generation_prompt=True)
        expected = processor_ids(policy.processor, text, images=[images[row]], mode="text")
        assert unpadded(ids[row], mask[row]) == expected
        decoded = policy.tokenizer.decode(expected)
        assert decoded.startswith(policy.tokenizer.bos_token + SYSTEM + "<|User|>: <begin_of_image>")
        assert decoded.endswith("\n\n<|Assistant|>:")


@pytest.mark.parametrize("qa_type", ["MC", "counting"])
def test_understanding_prompts_in_the_authors_layout_token_for_token(tiny_policy, qa_type):
    policy = tiny_policy()  # the default: no system prompt, the authors' instruction
    images = [Image.new("RGB", (40, 30), (10, 200, 10)) for _ in QUESTIONS]
    ids, mask, _, _ = policy.understanding_prompts(QUESTIONS, [qa_type] * len(QUESTIONS), images)
    n = policy.num_image_tokens
    for row, question in enumerate(QUESTIONS):
        # <bos><|User|>: <begin_of_image>…<end_of_image>\n{qa_problem}\n\n<|Assistant|>: (grpo_trainer_unified.py,
        # system_prompt = ""), the question followed by the authors' instruction (r_utils.py)
        text = (f"<|User|>: <begin_of_image>{'<image_placeholder>' * n}<end_of_image>\n"
                f"{question_prompt(question, qa_type, 'authors')}\n\n<|Assistant|>:")
        assert unpadded(ids[row], mask[row]) == policy.tokenizer(text)["input_ids"]
        decoded = policy.tokenizer.decode(unpadded(ids[row], mask[row]))
        assert decoded.startswith(policy.tokenizer.bos_token + "<|User|>: ") and "helpful" not in decoded
        assert decoded.count("Answer the question based on the image") == 1
    # the processor says the same once its default system prompt is off
    processor = copy.deepcopy(policy.processor)
    processor.use_default_system_prompt = False
    conversation = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": question_prompt(QUESTIONS[0], qa_type)}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert unpadded(ids[0], mask[0]) == processor_ids(processor, text, images=[images[0]], mode="text")


def test_a_system_prompt_of_ones_own_stands_before_the_user_turn(tiny_policy):
    policy = tiny_policy(system_prompt="You are a careful visual assistant.\n")
    ids, mask, _, _ = policy.understanding_prompts(QUESTIONS[:1], ["MC"], [Image.new("RGB", (8, 8))])
    decoded = policy.tokenizer.decode(unpadded(ids[0], mask[0]))
    assert decoded.startswith(policy.tokenizer.bos_token + "You are a careful visual assistant.\n\n<|User|>: ")
    with pytest.raises(ValueError, match="system_prompt"):
        tiny_policy(system_prompt=None)


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


@pytest.mark.parametrize("system_prompt", ["default", "none"])
def test_self_captioner_prompt_equals_the_processors(tiny_policy, system_prompt):
    policy = tiny_policy(system_prompt=system_prompt)
    policy.processor.use_default_system_prompt = system_prompt == "default"  # the processor as the layout wants
    seen = []

    def sample_texts(ids, mask, *args, **kwargs):
        seen.append(unpadded(ids[0], mask[0]))
        return SimpleNamespace(texts=["a caption"])

    policy.sampler.texts = sample_texts
    policy.reader.describe(torch.zeros(1, policy.num_image_tokens, 64), "Describe this image in one sentence.", 4)
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
