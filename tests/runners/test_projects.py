"""The shipped instruction-tuning projects compose and follow the paper's recipe."""
import pytest

from lavis_ib.common.config import Config
from lavis_ib.common.containers import to_plain
from lavis_ib.common.paths import package_path
from lavis_ib.runners.batching import derive_batching

HELD_IN = {"coco_caption", "capfilt14m", "textcaps", "coco_vqa", "ok_vqa", "aok_vqa", "ocr_vqa",
           "coco_vqg", "ok_vqg", "aok_vqg", "llava_conversation", "llava_detail",
           "llava_reasoning"}
BATCH = {"vicuna7b": 128, "vicuna13b": 64, "flant5xl": 192, "flant5xxl": 64}


def _load(name):
    return Config(package_path(f"configs/projects/instructblip/{name}.yaml"))


@pytest.mark.parametrize("model_type", sorted(BATCH))
def test_recipe(model_type):
    cfg = _load(f"instruction_tuning_{model_type}")
    run = cfg.run_cfg
    assert set(cfg.datasets_cfg) == HELD_IN
    assert (run["max_iters"], run["val_every"], run["init_lr"], run["warmup_lr"],
            run["warmup_steps"], run["min_lr"], run["weight_decay"], run["beta2"]) == (
        60000, 3000, 1e-5, 1e-8, 1000, 0.0, 0.05, 0.999)
    assert run["lr_sched"] == "linear_warmup_cosine_lr" and run["balanced_sampling"]
    for world in (1, 8, 16, 32):
        glob, micro, accum = derive_batching(run, world)
        assert glob == BATCH[model_type] == micro * accum * world
        assert micro <= run["batch_size_train"]
    for item in run["select_metric"]:
        name = item.split(".")[0]
        entry = cfg.datasets_cfg[name]
        assert entry.task and entry.eval_subset and "val" in entry.build_info.annotations
    model = cfg.model_cfg
    assert model.model_type == model_type and model.pretrained is None and model.init_from
    assert cfg.datasets_cfg.ok_vqa.sample_ratio > 1 > cfg.datasets_cfg.aok_vqa.sample_ratio
    if model_type.startswith("flant5"):
        assert list(model.init_from)[-1] == "bert-base-uncased" and not model.allow_random_init
        assert cfg.datasets_cfg.coco_caption.vis_processor.train.name == "blip_image_train"


def test_ablations_differ_from_the_base_in_one_setting():
    base = _load("instruction_tuning_flant5xl")
    no_qf = _load("instruction_tuning_flant5xl_no_instruction_qformer")
    no_bal = _load("instruction_tuning_flant5xl_no_balancing")
    assert base.model_cfg.qformer_text_input and not no_qf.model_cfg.qformer_text_input
    assert base.run_cfg.balanced_sampling and not no_bal.run_cfg.balanced_sampling
    assert to_plain(no_bal.model_cfg) == to_plain(base.model_cfg)
    assert to_plain(no_qf.datasets_cfg) == to_plain(base.datasets_cfg)
