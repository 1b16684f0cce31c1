"""The `model:` node, typed: every key a model reads, its default and its range, in one home
(as `common/schema.py` is for `run:`). Builders check a node with their class's `checked`,
the pre-flight calls `model_problems`; a plugin model declares its own subclass with
`register_model_config`. Imports nothing heavy (no torch): the pre-flight path reads it.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, LavisIbError, RegistryError, did_you_mean

logger = logging.getLogger(__name__)

#: precision names of `vit_precision` / `llm_precision` (the keys of common.precision.DTYPES,
#: which imports torch; a test keeps the two equal)
PRECISIONS = ("fp32", "bf16", "fp16")
#: the device types a per-device precision may name (common.precision.DEVICE_TYPES)
PRECISION_DEVICES = ("cuda", "cpu")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """A range a key's value must be in, and the line naming a value outside it."""

    test: Callable[[Any], bool]
    message: str            # formatted with `key` and `value`

    def problem(self, key: str, value: Any) -> str | None:
        return None if self.test(value) else self.message.format(key=key, value=value)


INT_AT_LEAST_1 = Rule(lambda v: _is_int(v) and v >= 1,
                      "model.{key} must be an integer >= 1; got {value!r}.")
INT_AT_LEAST_0 = Rule(lambda v: _is_int(v) and v >= 0,
                      "model.{key} must be an integer >= 0; got {value!r}.")
BOOL = Rule(lambda v: isinstance(v, bool), "model.{key} must be true or false; got {value!r}.")


def _is_precision(value: Any) -> bool:
    """A precision name, or a mapping of device types to names ({cuda: fp16, cpu: fp32})."""
    if isinstance(value, Mapping):
        return all(k in PRECISION_DEVICES and v in PRECISIONS for k, v in value.items())
    return isinstance(value, str) and value in PRECISIONS


PRECISION = Rule(_is_precision,
                 "model.{key}: '{value}' is not one of " + ", ".join(PRECISIONS)
                 + " (or a per-device mapping such as {{cuda: fp16, cpu: fp32}}).")
#: what the frozen LLM does in training: lavis (follows train/eval, its dropout active, as
#: LAVIS trained) | eval (kept in eval mode)
LLM_TRAIN_MODES = ("lavis", "eval")
LLM_TRAIN_MODE = Rule(lambda v: v in LLM_TRAIN_MODES,
                      "model.{key}: '{value}' is not one of " + ", ".join(LLM_TRAIN_MODES) + ".")
#: the order problems are reported in (one line per key)
RULES = (INT_AT_LEAST_1, INT_AT_LEAST_0, BOOL, PRECISION, LLM_TRAIN_MODE)

# What a key is for the builder (a field's `role`):
SETTING = "setting"     # a keyword of the model class's constructor (checked against its signature)
LAVIS_ROUTE = "lavis"   # setting it selects the LAVIS-files route
OPTION = "option"       # accepted on every Q-Former node, listed in its default YAML or not


def key(default: Any = None, *, rule: Rule | None = None, role: str | None = None) -> Any:
    """A config field with its range (`rule`) and its role for the builder."""
    metadata = {"rule": rule, "role": role}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    """Keys every model node has. Subclass it (a dataclass whose fields are made with `key`)
    to declare a model's keys; the defaults are what applies when a node lacks the key."""

    arch: Optional[str] = key()          # the registered model name (@registry.register_model)
    model_type: Optional[str] = key()    # an entry of the class's PRETRAINED_MODEL_CONFIG_DICT

    # -- what the fields say ----------------------------------------------------------
    @classmethod
    def keys(cls) -> frozenset[str]:
        """Every key a node of this model may have."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def keys_with(cls, role: str) -> tuple[str, ...]:
        """The keys of one role (`SETTING`, `LAVIS_ROUTE`, `OPTION`), in field order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("role") == role)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """{key: the value that applies when a node lacks the key}."""
        return dataclasses.asdict(cls())

    # -- checks -----------------------------------------------------------------------
    @classmethod
    def unknown_key_problem(cls, node: Mapping[str, Any]) -> str | None:
        """The line naming the node's keys this model does not read, with the closest known
        key for the first one; None when every key is known."""
        known = cls.keys()
        unknown = sorted(str(k) for k in node if k not in known)
        if not unknown:
            return None
        return (f"model config: unknown keys {unknown}.{did_you_mean(unknown[0], known)} "
                f"Known: {sorted(known)}.")

    @classmethod
    def range_problems(cls, node: Mapping[str, Any]) -> list[str]:
        """Every value out of its range among the keys the node sets, one line per key."""
        ruled = [(f.name, f.metadata.get("rule")) for f in dataclasses.fields(cls)]
        return [problem for rule in RULES for name, own in ruled
                if own is rule and name in node
                and (problem := rule.problem(name, node.get(name))) is not None]

    @classmethod
    def problems(cls, node: Mapping[str, Any]) -> list[str]:
        """Unknown keys and values out of range, one line each (the pre-flight's check)."""
        unknown = cls.unknown_key_problem(node)
        return ([unknown] if unknown else []) + cls.range_problems(node)

    @classmethod
    def checked(cls, node: Any, builder: Callable | None = None) -> tuple[dict, dict]:
        """(the node as a dict, the model settings it sets) for a builder.

        Raises:
            ConfigError: an unknown key (with the closest known one) or a precision that
                is not a dtype name.
            LavisIbError: a setting `builder`'s signature does not take (see
                `signature_problems`).
        """
        cfg = dict(to_plain(node) or {})
        unknown = cls.unknown_key_problem(cfg)
        if unknown:
            raise ConfigError(unknown)
        settings = {k: cfg[k] for k in cls.keys_with(SETTING) if cfg.get(k) is not None}
        for f in dataclasses.fields(cls):
            if f.metadata.get("rule") is PRECISION and f.name in settings:
                if not _is_precision(settings[f.name]):
                    raise ConfigError(f"model.{f.name} must be one of {', '.join(PRECISIONS)}; "
                                      f"got '{settings[f.name]}' (or a mapping of "
                                      f"{' / '.join(PRECISION_DEVICES)} to one of them).")
                cfg[f.name] = settings[f.name] = _on_this_device(f.name, settings[f.name])
            elif f.metadata.get("rule") is GATHER and f.name in settings:
                problem = GATHER.problem(f.name, settings[f.name])
                if problem:
                    raise ConfigError(problem)
        if builder is not None:
            _bind_settings(cls, builder, settings)
        return cfg, settings

    @classmethod
    def signature_problems(cls, builder: Callable) -> list[str]:
        """Settings the builder's signature lacks or defaults differently (torchtune's
        `config.validate` idea: a config is checked against what it will be passed to).
        A class is read through its first `__init__` without `**kwargs`."""
        params = explicit_parameters(builder)
        if params is None:
            return []
        out, defaults = [], cls.defaults()
        for name in cls.keys_with(SETTING):
            param = params.get(name)
            if param is None:
                out.append(f"{cls.__name__}.{name} is a model setting, but "
                           f"{_name(builder)}() takes no '{name}'.")
            elif param.default is not param.empty and param.default != defaults[name]:
                out.append(f"{cls.__name__}.{name} defaults to {defaults[name]!r}, "
                           f"{_name(builder)}() to {param.default!r}.")
        return out


def _on_this_device(key: str, value: Any) -> str:
    """A per-device precision that reached a builder unresolved (load_model and the runner
    resolve it for their device first): the name for the device `auto` picks."""
    if not isinstance(value, Mapping):
        return value
    from lavis_ib.common.precision import device_type, resolve_precision

    name = resolve_precision(value, None, f"model.{key}")
    logger.info("model.%s %s: %s on %s (the device auto picks)", key, dict(value), name,
                device_type(None))
    return name


def _name(builder: Callable) -> str:
    return getattr(builder, "__qualname__", repr(builder))


def explicit_parameters(builder: Callable) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters of `builder` (a class: of the first `__init__` in its MRO that
    does not pass `**kwargs` on), or None when every signature takes `**kwargs`."""
    targets = [k.__init__ for k in inspect.getmro(builder) if "__init__" in vars(k)] \
        if inspect.isclass(builder) else [builder]
    for target in targets:
        params = inspect.signature(target).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return dict(params)
    return None


def _bind_settings(config: type[ModelConfig], builder: Callable, settings: dict) -> None:
    params = explicit_parameters(builder)
    missing = [k for k in settings if params is not None and k not in params]
    if missing:
        raise LavisIbError(f"{config.__name__} declares model setting(s) {missing}, but "
                           f"{_name(builder)}() takes no such keyword; make the config class "
                           f"and the model's constructor agree.")


@dataclass
class QFormerModelConfig(ModelConfig):
    """What every Q-Former model (InstructBLIP, BLIP-2) reads. Where the weights come from
    is the first route that applies: LAVIS files, `pretrained`, or random (docs/checkpoints.md)."""

    # -- where the weights come from
    pretrained: Optional[str] = key()                   # HF directory or hub id
    checkpoint: Optional[str] = key(role=LAVIS_ROUTE)   # LAVIS .pth of the trained parts
    vit_weights: Optional[str] = key(role=LAVIS_ROUTE)  # LAVIS eva_vit_g.pth
    llm_model: Optional[str] = key(role=LAVIS_ROUTE)    # LLM directory (weights + tokenizer)
    llm_tokenizer: Optional[str] = key()                # None: llm_model's (random route: needed)
    # -- model settings (keywords of the model class's constructor)
    # instruction tokens kept in training (left-truncated); targets kept, EOS included
    max_txt_len: int = key(128, rule=INT_AT_LEAST_1, role=SETTING)
    max_output_txt_len: int = key(256, rule=INT_AT_LEAST_1, role=SETTING)
    prompt: str = key("", role=SETTING)                 # generate's prompt when a batch has none
    freeze_vit: bool = key(True, rule=BOOL, role=SETTING)            # False: the ViT trains too
    vit_precision: str = key("fp32", rule=PRECISION, role=SETTING)   # storage dtype of the ViT
    llm_precision: str = key("fp32", rule=PRECISION, role=SETTING)   # storage dtype of the LLM
    # -- architecture of the LAVIS and random routes (pretrained= reads it from its files)
    num_query_token: Optional[int] = key(rule=INT_AT_LEAST_1)  # learned queries per image
    vision: Optional[dict] = key()          # ViT sizes (components.vision.VisionSpec)
    qformer: Optional[dict] = key()         # Q-Former sizes (components.qformer.QFormerSpec)
    llm_config: Optional[dict] = key()      # a random LLM's transformers config (tiny types)
    ln_vision_eps: Optional[float] = key()  # None: the route's (LAVIS 1e-5; random: the model's)
    # -- training
    vit_grad_ckpt: bool = key(False, rule=BOOL)         # recompute ViT activations in backward
    qformer_grad_ckpt: bool = key(False, rule=BOOL)     # same for the Q-Former
    # lavis: the frozen LLM's dropout is active in training (LAVIS); eval: it is not
    llm_train_mode: str = key("lavis", rule=LLM_TRAIN_MODE)
    # -- options, checked with the run and the machine by models/llm/options.py
    # none | int8_weight_only | int8 | nf4 (docs/quantization.md)
    llm_quantization: str = key("none", role=OPTION)
    llm_lora: Optional[dict] = key(role=OPTION)         # {r, alpha, dropout, target_modules}
    random_init_seed: int = key(0, rule=INT_AT_LEAST_0, role=OPTION)  # the random route's seed


@dataclass
class InstructBlipConfig(QFormerModelConfig):
    """`instructblip`: the Q-Former also reads the instruction; training may start from
    other checkpoints (`init_from`)."""

    # the Q-Former's BERT tokenizer ([DEC] added); the LAVIS route's default: bert-base-uncased
    qformer_tokenizer: Optional[str] = key()
    qformer_text_input: bool = key(True, rule=BOOL, role=SETTING)  # False: the ablation without it
    init_from: list = key([])                   # training init sources, applied in order
    allow_random_init: bool = key(False, rule=BOOL)  # init_from may leave trainable weights random


OBJECTIVES = (None, "prefix_lm")
OBJECTIVE = Rule(lambda v: v in OBJECTIVES, "model.{key}: '{value}' is not one of null, prefix_lm.")
RULES = RULES + (OBJECTIVE,)


@dataclass
class Blip2Config(QFormerModelConfig):
    """`blip2_opt`, `blip2_t5`: queries only (the Q-Former reads no text); LAVIS's lengths."""

    max_txt_len: int = key(32, rule=INT_AT_LEAST_1, role=SETTING)
    max_output_txt_len: int = key(32, rule=INT_AT_LEAST_1, role=SETTING)
    # stage 2: None = LM loss on the text (decoder-only; instruction data on FlanT5);
    # prefix_lm = the paper's split caption (blip2_t5 only; docs/pretraining.md)
    stage2_objective: Optional[str] = key(None, rule=OBJECTIVE, role=SETTING)
    init_from: list = key([])                   # stage-1 sources of what the node's weights lack
    allow_random_init: bool = key(False, rule=BOOL)  # init_from may leave trainable weights random


GATHERS = ("autograd", "lavis")
GATHER = Rule(lambda v: v in GATHERS, "model.{key}: '{value}' is not one of " + ", ".join(GATHERS) + ".")
RULES = RULES + (GATHER,)


@dataclass
class Blip2Stage1Config(ModelConfig):
    """`blip2` (stage 1: ITC + ITM + ITG, no LLM), `blip2_feature_extractor`,
    `blip2_image_text_matching`. Routes: LAVIS files, `pretrained` (transformers'
    `Blip2ForImageTextRetrieval`), or random (docs/pretraining.md)."""

    # -- where the weights come from
    pretrained: Optional[str] = key()                   # HF directory or hub id
    checkpoint: Optional[str] = key(role=LAVIS_ROUTE)   # LAVIS stage-1 .pth
    vit_weights: Optional[str] = key(role=LAVIS_ROUTE)  # LAVIS eva_vit_g.pth
    bert_weights: Optional[str] = key()                 # BERT-base: LAVIS's starting point
    tokenizer: Optional[str] = key()                    # the Q-Former's BERT tokenizer ([DEC] added)
    # -- model settings (keywords of the model class's constructor)
    max_txt_len: int = key(32, rule=INT_AT_LEAST_1, role=SETTING)       # caption tokens kept
    freeze_vit: bool = key(True, rule=BOOL, role=SETTING)               # False: `coco` trains it
    vit_precision: str = key("fp32", rule=PRECISION, role=SETTING)      # storage dtype of the ViT
    # autograd: ITC features gathered with gradient (N processes == 1); lavis: LAVIS's no-grad gather
    itc_gather: str = key("autograd", rule=GATHER, role=SETTING)
    # -- architecture of the random and LAVIS routes (pretrained= reads it from its files)
    num_query_token: Optional[int] = key(rule=INT_AT_LEAST_1)  # learned queries per image
    embed_dim: Optional[int] = key(rule=INT_AT_LEAST_1)        # ITC projection width (None: 256)
    ln_vision_eps: Optional[float] = key()                     # None: LAVIS's 1e-5
    vision: Optional[dict] = key()          # ViT sizes (components.vision.VisionSpec)
    qformer: Optional[dict] = key()         # Q-Former sizes (components.qformer.QFormerSpec)
    # -- training
    vit_grad_ckpt: bool = key(False, rule=BOOL)         # recompute ViT activations in backward
    qformer_grad_ckpt: bool = key(False, rule=BOOL)     # same for the Q-Former
    random_init_seed: int = key(0, rule=INT_AT_LEAST_0, role=OPTION)  # the random route's seed
    # accepted so the shared option checks read them; the stage-1 model has no LLM and refuses
    # any value but none/null
    llm_quantization: str = key("none", role=OPTION)
    llm_lora: Optional[dict] = key(role=OPTION)


# -- which config a registered model name reads ------------------------------------------
_CONFIGS: dict[str, type[ModelConfig]] = {
    "instructblip": InstructBlipConfig, "blip2_opt": Blip2Config, "blip2_t5": Blip2Config,
    "blip2_llm": Blip2Config,
    "blip2": Blip2Stage1Config, "blip2_feature_extractor": Blip2Stage1Config,
    "blip2_image_text_matching": Blip2Stage1Config}


def register_model_config(name: str, config: type[ModelConfig] | None = None,
                          force: bool = False) -> Any:
    """Declare the config class of registered model `name` (a `ModelConfig` dataclass);
    without `config`, a class decorator. Its keys are then the node's keys: the pre-flight
    refuses others and checks the fields' rules. A model without one has its node checked
    only against the shipped models' ranges, where it has their keys.

    Raises:
        RegistryError: not a `ModelConfig` dataclass, or `name` taken (force=True replaces).
    """
    if config is None:
        return lambda target: register_model_config(name, target, force)
    if not (inspect.isclass(config) and issubclass(config, ModelConfig)
            and dataclasses.is_dataclass(config)):
        raise RegistryError(f"model config '{name}': {config!r} must be a dataclass subclassing "
                            f"lavis_ib.models.config.ModelConfig.")
    if name in _CONFIGS and _CONFIGS[name] is not config and not force:
        raise RegistryError(f"model config '{name}' is already registered "
                            f"({_CONFIGS[name].__qualname__}); pass force=True to replace it.")
    _CONFIGS[name] = config
    return config


def config_class(arch: Any) -> type[ModelConfig] | None:
    """The config class model `arch` declared, or None."""
    return _CONFIGS.get(str(arch))


def accepted_keys(arch: str, default_node: Mapping[str, Any]) -> set[str]:
    """Keys an override of model `arch` may set: its config's, or for a model without one
    its default YAML's and the Q-Former options (`llm_quantization`, ...)."""
    config = config_class(arch)
    extra = config.keys() if config else QFormerModelConfig.keys_with(OPTION)
    return {*default_node.keys(), *extra}


def model_problems(model: Mapping[str, Any] | None) -> list[str]:
    """Every problem of a `model:` node found without building anything, one line each:
    keys its model's config does not declare and values out of range. A model without a
    config has the shipped models' ranges checked on the keys it shares with them."""
    if model is None:
        return []
    config = config_class(model.get("arch"))
    if config is None:
        return InstructBlipConfig.range_problems(model)
    return config.problems(model)
