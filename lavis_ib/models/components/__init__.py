"""Parts shared by every model: ViT, Q-Former, LLM adapters, the inference mixin, tokenizer
loading, hub resolution and checkpoint load reports.

Nothing here knows a particular model's checkpoint format; model packages (such as
`lavis_ib.models.instructblip`) compose these parts.
"""
