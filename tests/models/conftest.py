"""Shared fixtures for the model tests: tiny random InstructBLIP checkpoints written by
transformers itself (LLaMA, T5 and OPT text models, tokenizers built in code, processor saved).
Built once per session; every test reads them."""
from __future__ import annotations

import os

import pytest
import torch

Q = 4           # query tokens of the tiny HF checkpoints
IMAGE = 28      # image size (patch 14 -> 4 patches + cls)
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]   # not CLIP's: proves they come from the dir
#: transformers text model type -> the tiny model type whose settings load its checkpoint
FAMILY_TYPES = {"llama": "tiny_vicuna", "t5": "tiny_flant5", "opt": "tiny_opt"}


def hf_min_length(encoder_decoder: bool, min_length: int) -> dict:
    """transformers' `generate` keyword for our `min_length`: generated tokens for
    decoder-only LLMs; for T5 the count includes the decoder start token, as the authors'
    code passes it."""
    return {"min_length": min_length} if encoder_decoder else {"min_new_tokens": min_length}


def _text_config(family: str, vocab: int) -> dict:
    if family == "llama":
        return dict(model_type="llama", vocab_size=vocab, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                    pad_token_id=3, tie_word_embeddings=False)
    if family == "opt":
        return dict(model_type="opt", vocab_size=vocab, hidden_size=32, word_embed_proj_dim=32,
                    ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=256, bos_token_id=2, eos_token_id=2,
                    pad_token_id=1, dropout=0.0, tie_word_embeddings=True)
    return dict(model_type="t5", vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                num_decoder_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                dense_act_fn="gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                pad_token_id=0, eos_token_id=1)


def write_hf_checkpoint(directory: str, family: str, seed: int = 0) -> str:
    """A random `InstructBlipForConditionalGeneration` + `InstructBlipProcessor` directory."""
    from transformers import (BlipImageProcessorPil, InstructBlipConfig,
                              InstructBlipForConditionalGeneration, InstructBlipProcessor)

    from lavis_ib.testing.tiny_assets import BUILDERS, tiny_bert_tokenizer

    tok = BUILDERS[family]()
    qtok = tiny_bert_tokenizer()
    qtok.truncation_side = "left"
    image_proc = BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE},
                                       image_mean=MEAN, image_std=STD, do_convert_rgb=True)
    processor = InstructBlipProcessor(image_processor=image_proc, tokenizer=tok,
                                      qformer_tokenizer=qtok, num_query_tokens=Q)
    image_id = tok.convert_tokens_to_ids("<image>")
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=IMAGE, patch_size=14),
        qformer_config=dict(vocab_size=len(qtok), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=48,
                            max_position_embeddings=64, encoder_hidden_size=32),
        text_config=_text_config(family, len(tok)), num_query_tokens=Q,
        image_token_index=image_id)
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger-than-init weights so that outputs depend on everything
        model.query_tokens.normal_(0, 1.0)
        # transformers leaves the vision tower at zeros here: without this every image
        # would give the same tokens and no test would see the ViT
        for module in (model.qformer, model.vision_model):
            for name, p in module.named_parameters():
                if "layernorm" not in name.lower() and "layer_norm" not in name:
                    p.normal_(0, 0.2)
        model.language_projection.weight.normal_(0, 0.3)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Tiny models run faster on one intra-op thread, above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hf_instructblip")
    return {fam: write_hf_checkpoint(os.path.join(root, fam), fam) for fam in FAMILY_TYPES}


@pytest.fixture(scope="session")
def hf_models(hf_dirs):
    """(transformers model, processor) per family."""
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    return {fam: (InstructBlipForConditionalGeneration.from_pretrained(d).eval(),
                  InstructBlipProcessor.from_pretrained(d)) for fam, d in hf_dirs.items()}


@pytest.fixture(scope="session")
def our_models(hf_dirs):
    """lavis_ib models loaded with pretrained=<dir>, with their processors."""
    from lavis_ib import load_model_and_preprocess

    out = {}
    for fam, d in hf_dirs.items():
        out[fam] = load_model_and_preprocess("instructblip", FAMILY_TYPES[fam], is_eval=True,
                                             pretrained=d)
    return out
