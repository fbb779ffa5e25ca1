"""DeepSeek's original Janus layout (``deepseek-ai/Janus-Pro-1B``): what the evaluation suites load.

VLMEvalKit, ULMEvalKit and the Janus repository's own GenEval / DPG scripts load Janus through the
``janus`` package (``MultiModalityCausalLM``, ``VLChatProcessor``), not through transformers' Janus
classes, which corl trains. This package converts between the two: ``keys`` renames and reshapes the
weights, ``config`` translates the configuration and the processor files, ``folder`` reads and writes
whole folders.
"""
