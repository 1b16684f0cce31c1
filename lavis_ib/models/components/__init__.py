"""The image path every Q-Former model shares: the ViT, the Q-Former, `QFormerLLM` (image ->
queries -> LLM inputs), the inference mixin, LAVIS's prompt layouts and the build routes
(random, Hugging Face directory, LAVIS files). The frozen LLM is in `models/llm/`, weight
files in `models/weights/`; nothing here imports a model package.
"""
