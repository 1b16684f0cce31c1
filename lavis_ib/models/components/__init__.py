"""Parts shared by every model: ViT, Q-Former, the image path of Q-Former models
(`qformer_model`), LLM adapters, the inference mixin, parameter-name maps, tokenizer
loading, hub resolution, checkpoint files and load reports.

The one checkpoint format here is BLIP-2's (`blip2_weights`), because two models read it:
BLIP-2 itself and InstructBLIP's `init_from`. Model packages (`lavis_ib.models.instructblip`,
`lavis_ib.models.blip2`) compose these parts.
"""
