"""`lavis-ib export RUN_DIR OUT_DIR [--checkpoint best|latest|PATH] [--plugins MODULE ...]`:
a training run's weights in the Hugging Face layout (`InstructBlipForConditionalGeneration`
+ processor), so a trained run can be used without lavis_ib: transformers reads the directory,
as does `load_model_and_preprocess(..., pretrained=OUT_DIR)` (docs/checkpoints.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from lavis_ib.cli.entry import run_entry, setup_logging
from lavis_ib.cli.session import checkpoint_folder

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the model from the run's saved `config.yaml` with the run's seed (frozen
    weights come from its `init_from`/`pretrained` sources, or the same random draw, as in
    training), load the checkpoint's trainable weights over it and write it with
    `model.save_pretrained(OUT_DIR)`.

    LoRA adapters (`model.llm_lora`) are loaded with the other trainable weights and merged
    into the LLM's weights first (`model.merge_adapters()`), so the directory is a plain
    InstructBLIP / BLIP-2 one; a quantised run's LLM is built unquantised (`unquantised`).
    Both are logged."""
    parser = argparse.ArgumentParser(prog="lavis-ib export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="training run folder (holds config.yaml and checkpoints/)")
    parser.add_argument("out_dir", help="folder to write the Hugging Face layout into")
    parser.add_argument("--checkpoint", default="best",
                        help="'best' (default; else, with a warning when best/ is damaged "
                             "or not finite, the newest that verifies), 'latest', or a path")
    parser.add_argument("--plugins", nargs="+", default=[], metavar="MODULE",
                        help="plugin modules to import (the run's config.yaml lists them, but "
                             "a run folder is data: only modules named here are imported)")
    args = parser.parse_args(argv)
    setup_logging(0)   # one process: its warnings (e.g. a best/ passed over) are shown
    from lavis_ib.common.project_files import load_yaml
    from lavis_ib.common.registry import import_plugins, registry
    from lavis_ib.common.seeding import seed_everything
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights, resolve_checkpoint

    cfg = load_yaml(os.path.join(args.run_dir, "config.yaml"), "run config")
    check_run_plugins(args.run_dir, cfg.get("plugins") or [], args.plugins)
    import_plugins(list(args.plugins), source="--plugins")
    if args.checkpoint == "best":
        ckpt = checkpoint_folder(args.run_dir)
    elif args.checkpoint == "latest":
        ckpt = resolve_checkpoint(args.run_dir)
    else:
        ckpt = resolve_checkpoint(args.checkpoint)
    seed_everything(int(cfg.run.seed))  # as in training: randomly initialised parts match
    model_node = unquantised(cfg.model)
    model = registry.get_model_class(model_node.arch).from_config(model_node)
    load_trainable_weights(model, ckpt)
    merged = model.merge_adapters()
    if merged:
        logger.info("merged the LoRA adapters of %d LLM layers into the LLM weights", merged)
    model.save_pretrained(args.out_dir)  # BaseModel's default raises: no export format
    note = f" (LoRA adapters of {merged} LLM layers merged)" if merged else ""
    print(f"exported {ckpt} to {args.out_dir}{note}")
    return 0


def check_run_plugins(run_dir: str, listed, allowed) -> None:
    """Refuse a plugin module named only by the run folder's config.yaml (before anything
    is imported): a folder handed over is data, and importing a module runs its code."""
    from lavis_ib.common.errors import ConfigError

    listed = [listed] if isinstance(listed, str) else list(listed)
    refused = [str(m) for m in listed if str(m) not in set(map(str, allowed))]
    if refused:
        raise ConfigError(
            f"{os.path.join(run_dir, 'config.yaml')} names the plugin module(s) "
            f"{', '.join(refused)}; a run folder is data, so its modules are not imported "
            f"unless the command line names them too: if you trust this run, add "
            f"--plugins {' '.join(refused)}.")


def unquantised(model_node):
    """The run's model node with `llm_quantization` off (logged when it was on): the frozen
    LLM's stored weights are the originals, and writing (or merging adapters into)
    quantised ones would lose precision."""
    mode = model_node.get("llm_quantization") or "none"
    if mode == "none":
        return model_node
    note = (f"the run used model.llm_quantization={mode}; the export builds the LLM "
            f"unquantised from its original weights (quantised weights would be lossy to "
            f"write or merge into)")
    logger.info(note)
    print(note)
    from omegaconf import OmegaConf

    node = OmegaConf.create(OmegaConf.to_container(model_node))
    node.llm_quantization = "none"
    return node


if __name__ == "__main__":
    sys.exit(run_entry(main, None, "lavis-ib export"))
