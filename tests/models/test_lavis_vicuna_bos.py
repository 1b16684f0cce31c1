"""LAVIS route with a Vicuna directory as distributed (no pad token): the authors' code adds
`[PAD]` and makes `</s>` bos/eos/unk, so the released checkpoints saw `</s>` first in every
prompt. Loss and greedy generation must equal transformers' InstructBLIP fed hand-built ids
that start with the id of `</s>` (not `<s>`).
"""
from __future__ import annotations

import torch
from transformers import AutoTokenizer

from lavis_ib import load_model
from tests.models.conftest import Q
from tests.models.test_hf_parity import _images
from tests.models.test_lavis_route import lavis_arch, write_lavis_files

PROMPT, TARGET = "what is on the table?", "two red cups"


def test_vicuna_prompts_start_with_eos_token_on_the_lavis_route(hf_dirs, hf_models, tmp_path):
    hf, processor = hf_models["llama"]
    files = write_lavis_files(hf_dirs["llama"], hf, processor, str(tmp_path / "lavis"), False)
    vicuna = AutoTokenizer.from_pretrained(files["llm_model"])
    vicuna.pad_token = None                       # a Vicuna directory has no pad token
    vicuna.save_pretrained(files["llm_model"])
    model = load_model("instructblip", "tiny_vicuna", is_eval=True, llm_tokenizer=None,
                       **files, **lavis_arch(hf))
    tok = model.llm_tokenizer
    eos = tok.convert_tokens_to_ids("</s>")
    assert tok.bos_token_id == tok.eos_token_id == eos and tok.pad_token == "[PAD]"

    prompt = [eos] + tok(PROMPT, add_special_tokens=False).input_ids      # hand-built
    target = tok(TARGET, add_special_tokens=False).input_ids + [eos]
    assert prompt[0] != processor.tokenizer(PROMPT).input_ids[0]          # not <s>
    image = _images(1, seed=9)
    q = processor.qformer_tokenizer([PROMPT], return_tensors="pt")
    ids = torch.tensor([[hf.config.image_token_index] * Q + prompt + target])
    labels = torch.full_like(ids, -100)
    labels[0, -len(target):] = torch.tensor(target)
    with torch.no_grad():
        ref_loss = hf(pixel_values=image, qformer_input_ids=q.input_ids,
                      qformer_attention_mask=q.attention_mask, input_ids=ids,
                      labels=labels).loss.item()
        loss = model({"image": image, "text_input": [PROMPT],
                      "text_output": [TARGET]})["loss"].item()
    assert abs(loss - ref_loss) < 1e-4

    gen_ids = torch.tensor([[hf.config.image_token_index] * Q + prompt])
    with torch.no_grad():
        out = hf.generate(pixel_values=image, qformer_input_ids=q.input_ids,
                          qformer_attention_mask=q.attention_mask, input_ids=gen_ids,
                          attention_mask=torch.ones_like(gen_ids), do_sample=False,
                          num_beams=1, max_new_tokens=6, min_new_tokens=1)
    ref_text = tok.batch_decode(out[:, gen_ids.shape[1]:], skip_special_tokens=True)[0].strip()
    text = model.generate({"image": image, "prompt": PROMPT}, num_beams=1, max_length=6,
                          min_length=1, repetition_penalty=1.0)[0]
    assert text == ref_text
