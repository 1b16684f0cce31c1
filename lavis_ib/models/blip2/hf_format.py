"""Hugging Face format of BLIP-2: `Blip2ForConditionalGeneration` + `Blip2Processor`.

Reading and writing the layout transformers loads, so BLIP-2 models move both ways between
transformers and lavis_ib; what that layout has no place for (stage 1's text side) is
written beside it (`save_pretrained`)."""
from __future__ import annotations

import copy
import json
import logging
import os

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.precision import DTYPES
from lavis_ib.models.blip2.text_side import is_carried
from lavis_ib.models.weights.blip2 import hf_blip2_name, to_ours
from lavis_ib.models.weights.files import checkpoint_keys
from lavis_ib.models.weights.hf import (build_llm, image_processor_for,
                                                       load_directory_weights, tokenizer_with_token)
from lavis_ib.models.weights.files import write_safetensors
from lavis_ib.models.weights.hub import resolve_dir
from lavis_ib.models.weights.load_report import tied_aliases
from lavis_ib.models.weights.param_names import ours_to_hf_state
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.processors.image import CLIP_MEAN, CLIP_STD

logger = logging.getLogger(__name__)
IMAGE_TOKEN = "<image>"
SETTINGS_FILE = "lavis_ib.json"   # ln_vision's eps: transformers' config cannot hold it
TEXT_SIDE_FILE = "lavis_ib_qformer_text.safetensors"   # the carried stage-1 text side


def _carried(directory: str) -> dict[str, bool]:
    """The model settings that build the text side / ITG head a directory holds."""
    keys = checkpoint_keys(directory)
    return {"carry_text_side": "embeddings.word_embeddings.weight" in keys,
            "carry_lm_head": "lm_head.dense.weight" in keys}


def _to_ours(state: dict, keys: list[str]) -> tuple[dict, list[str]]:
    """transformers' BLIP-2 names, and the ITG head under its own name."""
    out, unused = to_ours("hf_blip2", state, [k for k in keys if not k.startswith("lm_head.")])
    for key in keys:
        if key.startswith("lm_head.") and key in state:
            out[key] = state[key]
    return out, [k for k in unused if not k.startswith("lm_head.")]


def _hf_name(name: str) -> str:
    return name if name.startswith("lm_head.") else hf_blip2_name(name)


def _spec(cls, hf_config):
    values = hf_config.to_dict()
    return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def load_pretrained(cls, path: str, settings: dict):
    """A BLIP-2 model from an HF `Blip2ForConditionalGeneration` directory or hub id.

    The directory (or a hub id in the local cache) gives the architecture, the weights
    (through the shared BLIP-2 reader, `weights.blip2`), the LLM tokenizer and the eval
    image settings; a carried stage-1 text side (`TEXT_SIDE_FILE`) is read back too.

    Raises:
        LavisIbError: no such directory, another model's directory, or missing weights.
    """
    from transformers import AutoTokenizer, Blip2Config

    directory = resolve_dir(path, "pretrained")
    cfg_path = os.path.join(directory, "config.json")
    if not os.path.isfile(cfg_path):
        raise LavisIbError(f"pretrained='{path}' has no config.json; it must be a directory "
                           f"written by Blip2ForConditionalGeneration.save_pretrained.")
    config = Blip2Config.from_pretrained(directory)
    if config.model_type != "blip-2":
        raise LavisIbError(f"pretrained='{path}' is a '{config.model_type}' checkpoint, not "
                           f"BLIP-2 (Blip2ForConditionalGeneration).")
    llm = build_llm(config.text_config, DTYPES[settings.get("llm_precision", "fp32")])
    ln_eps = config.vision_config.layer_norm_eps
    extra_path = os.path.join(directory, SETTINGS_FILE)
    if os.path.isfile(extra_path):
        with open(extra_path) as f:
            ln_eps = json.load(f).get("ln_vision_eps", ln_eps)
    settings = {**settings, **_carried(directory)}
    model = cls(_spec(VisionSpec, config.vision_config), _spec(QFormerSpec, config.qformer_config),
                llm, AutoTokenizer.from_pretrained(directory),
                num_query_token=config.num_query_tokens, ln_vision_eps=ln_eps, **settings)
    model.check_llm_vocab()
    return load_directory_weights(model, directory, path, _to_ours, _hf_name)


def _hf_state(model, rows: int | None) -> dict:
    """Our state dict under transformers' BLIP-2 names (ViT q/v biases fused), the LLM's
    embedding tables grown to `rows` with their mean row when the image token is new."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if k not in tied_aliases(model) and not is_carried(k)}
    if rows is not None:
        tables = {p for p in (model.llm.get_input_embeddings().weight,
                              getattr(model.llm.get_output_embeddings(), "weight", None))
                  if p is not None}
        for name, param in model.named_parameters():
            if any(param is t for t in tables) and name in state:
                weight = state[name]
                extra = weight.mean(0, keepdim=True).expand(rows - weight.shape[0], -1)
                state[name] = torch.cat([weight, extra.to(weight.dtype)], dim=0)
    return ours_to_hf_state(state, hf_blip2_name)


def save_pretrained(model, directory: str) -> str:
    """Write `model` as `Blip2ForConditionalGeneration` + `Blip2Processor` (config,
    safetensors, tokenizer with the `<image>` token, image processor).

    A model that carries stage 1's Q-Former text side (`text_side`) writes it beside that
    layout, in `TEXT_SIDE_FILE`, where transformers' stage-2 layout has no place for it:
    the text side under the names transformers' stage-1 layout (`Blip2ForImageTextRetrieval`)
    gives it, the ITG head as `lm_head.*`. `load_pretrained`, and InstructBLIP's
    `init_from`, read it back from the directory.
    """
    from transformers import Blip2Config, Blip2Processor

    os.makedirs(directory, exist_ok=True)
    tokenizer, image_id = tokenizer_with_token(model.llm_tokenizer, IMAGE_TOKEN)
    text_config = copy.deepcopy(model.llm.config)
    grow = image_id + 1 if image_id >= text_config.vocab_size else None
    if grow is not None:
        text_config.vocab_size = grow
    qformer = model.qformer_spec.to_dict()
    config = Blip2Config(vision_config=model.vision_spec.to_dict(), qformer_config=qformer,
                         text_config=text_config.to_dict(),
                         num_query_tokens=model.query_tokens.shape[1], image_token_index=image_id)
    config.architectures = ["Blip2ForConditionalGeneration"]
    config.save_pretrained(directory)
    write_safetensors(_hf_state(model, grow), os.path.join(directory, "model.safetensors"))
    settings = model.preprocess_overrides or {
        "image_size": model.vision_spec.image_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}
    Blip2Processor(image_processor=image_processor_for(settings), tokenizer=tokenizer,
                   num_query_tokens=model.query_tokens.shape[1]).save_pretrained(directory)
    with open(os.path.join(directory, SETTINGS_FILE), "w") as f:
        json.dump({"ln_vision_eps": model.ln_vision.eps}, f, indent=2)
    carried = {_hf_name(k): v.detach().cpu().contiguous()
               for k, v in model.state_dict().items() if is_carried(k)}
    if carried:
        write_safetensors(carried, os.path.join(directory, TEXT_SIDE_FILE))
        logger.info("wrote the carried stage-1 Q-Former text side (%d tensors) to %s: "
                    "transformers' stage-2 layout has no place for it", len(carried),
                    TEXT_SIDE_FILE)
    return directory
