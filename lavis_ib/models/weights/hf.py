"""What every model's Hugging Face side shares: building the LLM from a text config (random
for the tiny types, or without a wasted random init before loading a directory), and the
eval image settings (size, mean, std) of a saved image processor, in both directions."""
from __future__ import annotations

import copy
import logging
import json
import os
from typing import Any, Callable

import torch

from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.paths import resolve_path
from lavis_ib.models.weights.files import checkpoint_keys, iter_shards
from lavis_ib.models.weights.hub import resolve_dir
from lavis_ib.models.weights.load_report import LoadReport, load_in_pieces, untie_present
from lavis_ib.models.weights.tokenizers import load_tokenizer

logger = logging.getLogger(__name__)


def build_llm(text_config, dtype: torch.dtype):
    """An LLM of `text_config` with uninitialised weights (they are loaded next)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    factory = AutoModelForSeq2SeqLM if text_config.is_encoder_decoder else AutoModelForCausalLM
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: random init (slower, same result after loading)
        return factory.from_config(text_config, dtype=dtype)
    with no_init_weights():
        llm = factory.from_config(text_config, dtype=dtype)
    llm.tie_weights()  # not done under no_init_weights; the checkpoint omits tied copies
    return llm


def read_image_settings(directory: str) -> dict[str, Any] | None:
    """{image_size, mean, std} from the saved image processor, or None."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            node = json.load(f)
        node = node.get("image_processor", node)
        size = node.get("size") or {}
        height = size.get("height", size.get("shortest_edge")) if isinstance(size, dict) else size
        if height is None:
            continue
        return {"image_size": int(height), "mean": list(node.get("image_mean")),
                "std": list(node.get("image_std"))}
    return None


def merge_preprocess(default: Any, overrides: dict[str, Any] | None) -> Any:
    """`default` preprocess node with the checkpoint's image size / mean / std applied to
    both image processors."""
    if not overrides or default is None:
        return default
    from omegaconf import OmegaConf

    node = OmegaConf.create(copy.deepcopy(to_plain(default)))
    for split in ("train", "eval"):
        proc = (node.get("vis_processor") or {}).get(split)
        if proc is not None:
            for key, value in overrides.items():
                proc[key] = value
    return node


def image_processor_for(settings: dict[str, Any]):
    # The PIL backend resizes exactly like `blip_image_eval` (and transformers 4).
    import transformers

    cls = getattr(transformers, "BlipImageProcessorPil", None) or transformers.BlipImageProcessor
    return cls(size={"height": settings["image_size"], "width": settings["image_size"]},
               image_mean=settings["mean"], image_std=settings["std"], do_convert_rgb=True)


def build_random_llm(llm_config: dict, dtype=None):
    """A randomly initialised transformers LLM from a config dict with `model_type`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    node = dict(llm_config)
    if "model_type" not in node:
        raise ConfigError("model.llm_config needs a 'model_type' (e.g. llama, t5).")
    config = AutoConfig.for_model(node.pop("model_type"), **node)
    factory = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return factory.from_config(config)


def load_directory_weights(model, directory: str, path: str,
                           to_ours: Callable[[dict, list[str]], tuple[dict, list[str]]],
                           hf_name: Callable[[str], str]):
    """Fill `model` from an HF directory's weight files, one shard at a time (`to_ours` maps
    transformers' names onto the model's, `hf_name` back, for the error). Weights the
    directory holds for tied copies are untied first; a missing weight is one error naming
    transformers' names; unused tensors are a warning. Then the directory's eval image
    settings are kept and the freezing decision re-applied (loading replaced tensors)."""
    untie_present(model, set(to_ours(dict.fromkeys(checkpoint_keys(directory)),
                                     list(model.state_dict()))[0]))
    keys = list(model.state_dict())
    report = load_in_pieces(model, (to_ours(shard, keys) for shard in iter_shards(directory)),
                            f"pretrained={path}")
    check_directory_report(report, path, hf_name)
    model.load_report = {"pretrained": report}
    model.preprocess_overrides = read_image_settings(directory)
    model.configure_trainable()
    return model


def check_directory_report(report: LoadReport, path: str, hf_name: Callable[[str], str]) -> None:
    """What loading an HF directory (`pretrained=path`) left: a missing weight is one error
    naming transformers' names (`hf_name`), unused tensors a warning."""
    if report.missing:
        raise LavisIbError(f"pretrained='{path}' lacks {len(report.missing)} weights, e.g. "
                           f"{', '.join(hf_name(k) for k in report.missing[:5])}.")
    if report.unexpected:
        logger.warning("pretrained=%s: %d unused tensors, e.g. %s", path,
                       len(report.unexpected), report.unexpected[:5])


def tokenizer_with_token(tokenizer, token: str):
    """(a copy of `tokenizer` holding `token` as a special token, its id): transformers'
    processors mark image positions with a placeholder token the LLM tokenizer may lack."""
    from transformers import AddedToken

    tokenizer = copy.deepcopy(tokenizer)
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(token, normalized=False, special=True)],
                             special_tokens=True)
    return tokenizer, tokenizer.convert_tokens_to_ids(token)


def lavis_llm_directory(cfg: dict, dtype: torch.dtype, families: str):
    """(LLM, tokenizer) of the LAVIS route's `llm_model` directory (`families` names what it
    may hold, for the error). FlanT5 runs with exact GELU, as the authors' code ran it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if not cfg.get("llm_model"):
        raise LavisIbError(f"the LAVIS route needs llm_model=<{families} directory> next to "
                           f"checkpoint=/vit_weights=.")
    llm_dir = resolve_dir(resolve_path(cfg["llm_model"]), "llm_model")
    config = AutoConfig.from_pretrained(llm_dir)
    if config.is_encoder_decoder:
        config.dense_act_fn = "gelu"
        llm = AutoModelForSeq2SeqLM.from_pretrained(llm_dir, config=config, dtype=dtype)
    else:
        llm = AutoModelForCausalLM.from_pretrained(llm_dir, config=config, dtype=dtype)
    return llm, load_tokenizer(cfg.get("llm_tokenizer") or llm_dir, "llm_tokenizer")
