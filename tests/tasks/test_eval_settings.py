"""Per-dataset settings: defaults, overrides, per-family values keyed by the model's
`llm_family`, the model's own generate signature, and one clear error for every ignored key."""
import pytest
import torch
from omegaconf import OmegaConf

from lavis_ib import registry
from lavis_ib.common.config import compose_dataset
from lavis_ib.common.errors import ConfigError
from lavis_ib.common.prompts import format_options
from lavis_ib.tasks.eval_settings import EvalSettings


def task(kind, name, cfg=None, model_cls=None):
    entry = compose_dataset(name, {"task": kind, **(cfg or {})})
    return registry.get_task_class(kind).for_dataset(name, entry, model_cls=model_cls)


def test_project_entry_overrides_defaults_and_accepts_omegaconf():
    cfg = OmegaConf.create({"prompt": "Q: {} A:", "generate": {"num_beams": 3},
                            "eval_subset": 10, "build_info": {"x": 1}, "task": "vqa"})
    t = task("vqa", "ok_vqa", cfg)
    # a project's `generate` replaces the defaults' as a whole
    assert t.prompt == "Q: {} A:" and t.generate_kwargs == {"num_beams": 3}
    assert isinstance(t.eval_settings, EvalSettings) and t.eval_settings.eval_subset == 10
    # a dataset without defaults starts from the task's generic settings
    t = registry.get_task_class("vqa").for_dataset("my_vqa", {})
    assert t.prompt == "Question: {} Short answer:" and t.generate_kwargs["max_length"] == 10
    assert "metric" not in t.generate_kwargs and t.settings["metric"] == "vqa"


def test_a_builder_entry_evaluates_one_dataset_another_way():
    """A-OKVQA as multiple choice: the aok_vqa builder's files, its own task's settings."""
    entry = compose_dataset("aok_vqa_mc", {"builder": "aok_vqa", "task": "multiple_choice"})
    assert entry.build_info.annotations.val.storage.endswith("aokvqa_v1p0_val.json")
    assert "metric" not in entry and "generate" not in entry   # the vqa defaults dropped
    t = registry.get_task_class(entry.task).for_dataset("aok_vqa_mc", entry)
    assert t.inference == "rank" and t.prompt == "Question: {} Options: {}. Short answer:"
    assert t.candidates == "choices" and t.append_eos is None   # the model's default


@pytest.mark.parametrize("kind, name, cfg, match", [
    ("captioning", "nocaps", {"append_eos": True}, "does not read 'append_eos'"),
    ("captioning", "nocaps", {"candidates": ["a"]}, "does not read 'candidates'"),
    ("multiple_choice", "scienceqa", {"generate": {"num_beams": 1}}, "does not read 'generate'"),
    ("vqa", "gqa", {"inference": "rank", "generate": {"num_beams": 1}},
     "only read with inference: generate"),
    ("vqa", "gqa", {"append_eos": False}, "only read with inference: rank"),
    ("vqa", "gqa", {"promt": "x"}, "Did you mean 'prompt'"),
    ("vqa", "gqa", {"inference": "ranking"}, "not supported"),
    ("multiple_choice", "iconqa", {"inference": "generate"}, "not supported"),
    ("vqa", "gqa", {"metric": "vqa2"}, "Did you mean 'vqa'"),
    ("vqa", "gqa", {"prompt": "{} {} {}"}, "at most 2"),
    ("vqa", "gqa", {"prompt": "{} {}", "prompt_fields": ["question"]}, "names 1 field"),
    ("vqa", "gqa", {"prompt": "{}", "prompt_fields": ["questoin"]}, "Did you mean"),
    ("classification", "vsr", {"candidates": ["yes", "no"]}, "positive"),
    ("classification", "vsr", {"candidates": {"positive": ["yes"], "negative": ["yes"]}},
     "both sets"),
    ("classification", "vsr", {"append_eos": "yes"}, "true, false"),
    ("classification", "vsr", {"append_eos": {}}, "per-family value"),
    ("dialog", "visdial", {"candidates": "answer_list"}, "sample's own"),
    ("captioning", "nocaps", {"metric": "bleu"}, "coco"),
])
def test_bad_settings_raise_one_clear_error(kind, name, cfg, match):
    with pytest.raises(ConfigError, match=match):
        task(kind, name, cfg)


def test_generate_keys_come_from_the_models_own_signature(fake_model):
    assert fake_model.generation_settings() >= {"num_beams", "max_length", "length_penalty"}
    assert "samples" not in fake_model.generation_settings()
    with pytest.raises(ConfigError, match="generate.beams: model.generate has no such argument"
                                          ".*Did you mean 'num_beams'"):
        task("vqa", "gqa", {"generate": {"beams": 2}}, model_cls=fake_model)

    class Sampler(fake_model):
        def generate(self, samples, temperature=1.0, top_k=5):
            return ["x"] * len(samples["image"])

    task("vqa", "gqa", {"generate": {"top_k": 3}}, model_cls=Sampler)   # its own argument
    # without the class at construction, the first batch checks it
    t = task("vqa", "gqa", {"generate": {"top_k": 3}})
    with pytest.raises(ConfigError, match="generate.top_k: model.generate has no such"):
        t.valid_step(fake_model(), {"image": torch.zeros(1, 3, 2, 2), "question_id": [1],
                                    "question": ["q"], "answers": [["a"]]})


def test_a_family_missing_from_a_per_family_value_names_dataset_key_and_family(fake_model):
    batch = {"image": torch.zeros(1, 3, 2, 2), "question_id": [1], "question": ["q"],
             "text_input": ["q"], "answers": [["a"]]}
    t = task("vqa", "gqa")                              # length_penalty per family
    for family, expected in (("vicuna", 0), ("flant5", -1), ("opt", 0)):
        model = fake_model(llm_family=family)
        t.valid_step(model, batch)
        assert model.calls[0][2]["length_penalty"] == expected
    with pytest.raises(ConfigError, match=r"datasets\.gqa\.generate\.length_penalty: no value "
                                          r"for LLM family 'mistral'"):
        t.valid_step(fake_model(llm_family="mistral"), batch)
    t = task("classification", "vsr", {"append_eos": {"vicuna": True}})
    with pytest.raises(ConfigError, match=r"datasets\.vsr\.append_eos: no value for LLM "
                                          r"family 'flant5'"):
        t.valid_step(fake_model(llm_family="flant5"), {**batch, "text_input": ["s"],
                                                        "label": [1], "instance_id": [1]})


def test_append_eos_absent_is_the_models_default(fake_model):
    batch = {"image": torch.zeros(1, 3, 2, 2), "instance_id": [1], "text_input": ["s"],
             "label": [1]}
    t = task("classification", "vsr")
    for default in (True, False):
        model = fake_model(llm_family="any", default_append_eos=default)
        t.valid_step(model, batch)
        assert model.calls[0][2]["append_eos"] is default
    model = fake_model(llm_family="any", default_append_eos=True)
    task("classification", "vsr", {"append_eos": False}).valid_step(model, batch)
    assert model.calls[0][2]["append_eos"] is False


def test_switching_inference_drops_the_other_modes_defaults():
    t = task("video_qa", "msvd_qa", {"inference": "generate",
                                     "generate": {"num_beams": 1, "max_length": 5}})
    assert t.inference == "generate" and t.generate_kwargs == {"num_beams": 1, "max_length": 5}
    assert "candidates" not in t.settings


@pytest.mark.parametrize("defaults, entry, option, replaced", [
    ({"task": "gqa", "inference": "generate"}, {"task": "vqa"}, None,
     {"inference", "prompt", "prompt_fields", "generate", "append_eos", "aggregate",
      "candidates", "metric"}),
    ({"task": "gqa", "inference": "generate"}, {"task": "gqa", "inference": "rank"}, None,
     {"generate", "candidates", "append_eos", "aggregate"}),
    ({"task": "gqa", "inference": "generate"}, {}, {"inference": "rank"},
     {"generate", "candidates", "append_eos", "aggregate"}),               # an --options switch too
    ({"task": "gqa", "inference": "generate"}, {"inference": "rank"}, {"inference": "generate"},
     set()),                                                  # --options wins: no switch
    ({"task": "gqa"}, {"generate": {"num_beams": 1}}, None, {"generate"}),   # whole
    ({"task": "gqa"}, {}, {"generate": {"num_beams": 1}}, set()),   # --options: key by key
    ({"inference": "rank"}, {"prompt": "x"}, None, set()),
])
def test_one_rule_says_which_defaults_an_entry_replaces(defaults, entry, option, replaced):
    from lavis_ib.tasks.eval_settings import replaced_defaults

    assert replaced_defaults(defaults, entry, option) == replaced


def test_composition_uses_the_rule_registered_by_the_evaluation_settings():
    """common/config.py knows no task keys: the registry hands it this module's rule, the
    same one a task applies to its generic settings."""
    import lavis_ib.common.config as config
    from lavis_ib.tasks.eval_settings import replaced_defaults

    assert dict(registry.entry_rules) == {"evaluation_settings": replaced_defaults}
    assert not {"TASK_SETTING_KEYS", "INFERENCE_SETTING_KEYS", "WHOLE_SETTING_KEYS"} & set(vars(config))
    # a dataset without defaults of its own: the vqa task's generic settings, switched
    t = registry.get_task_class("vqa").for_dataset("my_vqa", {"inference": "rank",
                                                               "candidates": ["a", "b"]})
    assert t.inference == "rank" and "generate" not in t.settings
    assert t.prompt == "Question: {} Short answer:"           # the generic prompt stays


def test_every_prompt_field_has_a_reader():
    from lavis_ib.tasks.eval_settings import PROMPT_FIELD_KEYS
    from lavis_ib.tasks.eval_task import FIELD_GETTERS

    assert FIELD_GETTERS.keys() == PROMPT_FIELD_KEYS.keys()


def test_prompt_fields_override_the_documented_order(fake_model):
    t = task("vqa", "textvqa", {"prompt": "Q: {} OCR: {}",
                                "prompt_fields": ["question", "ocr_tokens"]})
    model = fake_model()
    t.valid_step(model, {"image": torch.zeros(1, 3, 2, 2), "question_id": [1],
                         "question": ["Q?"], "text_input": ["q"], "ocr_tokens": [["a", "b"]],
                         "answers": [["x"]]})
    assert model.calls[0][1] == ["Q: q OCR: a, b"]


def test_helpers():
    assert format_options(["x", "y"]) == "(a) x (b) y"
    settings = EvalSettings.from_mapping("d", {"inference": "rank", "append_eos": {"a": True},
                                               "threshold": 0.3})
    assert settings.append_eos_for("a", False) is True and settings.extra == {"threshold": 0.3}
    assert settings.as_dict() == {"inference": "rank", "append_eos": {"a": True},
                                  "threshold": 0.3}


def test_training_and_evaluation_tasks_stay_in_their_roles():
    from lavis_ib.common.errors import LavisIbError
    from lavis_ib.tasks import BaseTask, EvalTask, TrainTask

    train_cls = registry.get_task_class("instruction_tuning")
    assert issubclass(train_cls, TrainTask) and issubclass(EvalTask, BaseTask)
    with pytest.raises(ConfigError, match=r"datasets\.x\.task: .* trains and does not evaluate"):
        train_cls.for_dataset("x", {})
    with pytest.raises(ConfigError, match="run.task: 'VQATask' is not a training task"):
        registry.get_task_class("vqa").setup_task({})
    task = train_cls.setup_task({"run": {}})
    assert task.config == {"run": {}}
    out = {"loss": 1.0, "loss_sum": 2.0, "num_tokens": 2}
    assert task.train_step(lambda samples: out, {}) is out   # the model's output as is
    with pytest.raises(LavisIbError, match=r"must return \{loss, loss_sum, num_tokens\}.*"
                                           r"got \['loss'\]"):
        task.train_step(lambda samples: {"loss": 1.0}, {})
