"""Hugging Face format: load `InstructBlipForConditionalGeneration` directories and write them.

The same layout both ways, so transformers' checkpoints load here and a model trained here
loads in transformers (and back through `pretrained=`)."""
from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.precision import DTYPES
from lavis_ib.models.weights.hf import (build_llm, image_processor_for,
                                                       load_directory_weights, tokenizer_with_token)
from lavis_ib.models.weights.files import write_safetensors
from lavis_ib.models.weights.hub import resolve_dir
from lavis_ib.models.weights.load_report import tied_aliases
from lavis_ib.models.weights.param_names import hf_state_to_ours, ours_to_hf_state, to_hf
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.weights.tokenizers import check_vocab, qformer_tokenizer_from
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.processors.image import CLIP_MEAN, CLIP_STD

logger = logging.getLogger(__name__)
IMAGE_TOKEN = "<image>"
#: lavis_ib settings transformers' config cannot hold, written next to it by save_pretrained
SETTINGS_FILE = "lavis_ib.json"


def _spec(cls, hf_config) -> Any:
    values = hf_config.to_dict()
    return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def load_pretrained(cls, path: str, settings: dict):
    """An InstructBLIP model from an HF directory or hub id (route 2 of `build`).

    A directory written by `InstructBlipForConditionalGeneration.save_pretrained` and
    `InstructBlipProcessor.save_pretrained` holds everything: `config.json` (architecture),
    weights (safetensors or .bin, possibly sharded), the LLM tokenizer, `qformer_tokenizer/`
    and the image processor settings.

    Raises:
        LavisIbError: missing directory/hub id, or weights the directory lacks.
    """
    from transformers import AutoTokenizer, InstructBlipConfig

    directory = resolve_dir(path, "pretrained")
    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise LavisIbError(f"pretrained='{path}' has no config.json; it must be a directory "
                           f"written by InstructBlipForConditionalGeneration.save_pretrained.")
    config = InstructBlipConfig.from_pretrained(directory)
    qdir = os.path.join(directory, "qformer_tokenizer")
    if not os.path.isdir(qdir):
        raise LavisIbError(f"pretrained='{path}' has no qformer_tokenizer/ folder (written by "
                           f"InstructBlipProcessor.save_pretrained).")
    llm = build_llm(config.text_config, DTYPES[settings.get("llm_precision", "fp32")])
    ln_eps = config.vision_config.layer_norm_eps
    saved = _read_settings(directory)
    if saved:
        ln_eps = saved.get("ln_vision_eps", ln_eps)
        if saved.get("qformer_text_input") is False and settings.get("qformer_text_input", True):
            logger.warning("pretrained=%s was trained without the instruction in the Q-Former "
                           "(qformer_text_input=false); using that setting.", path)
            settings = {**settings, "qformer_text_input": False}
    model = cls(_spec(VisionSpec, config.vision_config), _spec(QFormerSpec, config.qformer_config),
                llm, AutoTokenizer.from_pretrained(directory), qformer_tokenizer_from(qdir),
                num_query_token=config.num_query_tokens, ln_vision_eps=ln_eps, **settings)
    check_vocab(model)
    return load_directory_weights(model, directory, path, hf_state_to_ours, to_hf)


def _read_settings(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, SETTINGS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _grow_rows(state: dict, key: str, rows: int) -> None:
    weight = state[key]
    extra = weight.mean(0, keepdim=True).expand(rows - weight.shape[0], -1)
    state[key] = torch.cat([weight, extra.to(weight.dtype)], dim=0)


def save_pretrained(model, directory: str) -> str:
    """Write `model` in the HF InstructBLIP layout (config, safetensors, processor with both
    tokenizers). An LLM tokenizer without the `<image>` placeholder gets it, and the LLM's
    embedding tables grow by one row (the mean row) when it needs a new id."""
    from transformers import InstructBlipConfig, InstructBlipProcessor

    os.makedirs(directory, exist_ok=True)
    tokenizer, image_id = tokenizer_with_token(model.llm_tokenizer, IMAGE_TOKEN)
    text_config = copy.deepcopy(model.llm.config)
    state = {k: v.detach().cpu().contiguous()
             for k, v in model.state_dict().items() if k not in tied_aliases(model)}
    rows = text_config.vocab_size
    if image_id >= rows:
        in_key = next(n for n, p in model.named_parameters()
                      if p is model.llm.get_input_embeddings().weight)
        grow = [in_key]
        out_emb = model.llm.get_output_embeddings()
        if out_emb is not None and out_emb.weight is not model.llm.get_input_embeddings().weight:
            grow.append(next(n for n, p in model.named_parameters() if p is out_emb.weight))
        for key in grow:
            _grow_rows(state, key, image_id + 1)
        text_config.vocab_size = image_id + 1
    config = InstructBlipConfig(
        vision_config=model.vision_spec.to_dict(), qformer_config=model.qformer_spec.to_dict(),
        text_config=text_config.to_dict(), num_query_tokens=model.query_tokens.shape[1],
        image_token_index=image_id)
    config.use_decoder_only_language_model = not model.llm.config.is_encoder_decoder
    config.architectures = ["InstructBlipForConditionalGeneration"]
    config.save_pretrained(directory)
    write_safetensors(ours_to_hf_state(state), os.path.join(directory, "model.safetensors"))
    settings = model.preprocess_overrides or {
        "image_size": model.vision_spec.image_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}
    processor = InstructBlipProcessor(image_processor=image_processor_for(settings),
                                      tokenizer=tokenizer,
                                      qformer_tokenizer=model.qformer_tokenizer,
                                      num_query_tokens=model.query_tokens.shape[1])
    processor.save_pretrained(directory)
    # What transformers' config cannot say: LAVIS's ln_vision eps (1e-5; transformers uses
    # the ViT's eps) and the no-instruction ablation. lavis_ib restores both on loading.
    extra = {"ln_vision_eps": model.ln_vision.eps, "qformer_text_input": model.qformer_text_input}
    with open(os.path.join(directory, SETTINGS_FILE), "w") as f:
        json.dump(extra, f, indent=2)
    if not model.qformer_text_input:
        logger.warning("saved a model trained with qformer_text_input=false: transformers "
                       "always feeds the instruction to the Q-Former; lavis_ib does not.")
    return directory
