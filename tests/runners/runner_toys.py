"""Tiny stand-ins registered for the runner tests: a model with frozen and trainable
parts (`toy_ib`), two map-style datasets (`toy_a`, `toy_b`) and an evaluation task
(`toy_cls`). Imported by the tests and, through `plugins: [runner_toys]`, by the
torchrun workers (PYTHONPATH holds this folder).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.base import BaseDataset, collate
from lavis_ib.models.base_model import BaseModel
from lavis_ib.tasks.base_task import BaseTask

HERE = os.path.dirname(os.path.abspath(__file__))
LETTERS = "abcdefghij"


class _InfGrad(torch.autograd.Function):
    """Identity forward; infinite gradient backward (a finite loss, a non-finite norm)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(self.norm(x)))


@registry.register_model("toy_ib")
class ToyIB(BaseModel):
    """Frozen encoder and "LLM" around a trainable query/Q-Former part."""

    PRETRAINED_MODEL_CONFIG_DICT = {"default": os.path.join(HERE, "configs", "toy_model.yaml")}

    def __init__(self, dim: int = 8, vocab: int = 11, queries: int = 3, layers: int = 2,
                 nan_after: int = 0, inf_grad_calls: tuple = (0, 0), inf_grad_rank: int = -1
                 ) -> None:
        super().__init__()
        self.vocab, self.nan_after, self.calls = vocab, nan_after, 0
        # forward calls first..last (1-based, inclusive) give an infinite gradient
        self.inf_grad_calls, self.inf_grad_rank = tuple(inf_grad_calls), inf_grad_rank
        self.patch = nn.Linear(12, dim)
        self.encoder = nn.ModuleList(Block(dim) for _ in range(layers))
        self.query_tokens = nn.Parameter(0.1 * torch.randn(1, queries, dim))
        self.qformer = nn.ModuleList(Block(dim) for _ in range(layers))
        self.ln_q = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.llm = nn.ModuleList(Block(dim) for _ in range(layers))
        self.lm_head = nn.Linear(dim, vocab)
        for module in (self.patch, self.encoder, self.llm, self.lm_head):
            module.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        return cls(dim=cfg.dim, vocab=cfg.vocab, queries=cfg.queries, layers=cfg.layers,
                   nan_after=cfg.get("nan_after", 0),
                   inf_grad_calls=tuple(cfg.get("inf_grad_calls", (0, 0))),
                   inf_grad_rank=cfg.get("inf_grad_rank", -1))

    def train(self, mode: bool = True):
        super().train(mode)
        for module in (self.patch, self.encoder, self.llm, self.lm_head):
            module.eval()
        return self

    def shard_units(self):
        return [*self.encoder, *self.qformer, *self.llm]

    def checkpoint_units(self):
        return list(self.llm)

    def logits(self, samples) -> torch.Tensor:
        x = self.patch(samples["image"].flatten(1))
        for block in self.encoder:
            x = block(x)
        q = self.query_tokens + x[:, None, :]
        for block in self.qformer:
            q = block(q)
        first, last = self.inf_grad_calls
        rank_ok = self.inf_grad_rank in (-1, int(os.environ.get("RANK", "0")))
        if self.training and first <= self.calls <= last and first > 0 and rank_ok:
            q = _InfGrad.apply(q)
        h = self.proj(self.ln_q(q)).mean(1)
        for block in self.llm:
            h = block(h)
        return self.lm_head(h)

    def forward(self, samples):
        self.calls += 1
        logits = self.logits(samples).float().log_softmax(-1)
        targets = [[LETTERS.index(c) for c in text] for text in samples["text_output"]]
        rows = torch.tensor([b for b, t in enumerate(targets) for _ in t])
        cols = torch.tensor([c for t in targets for c in t])
        loss_sum = -logits[rows, cols].sum()
        if self.nan_after and self.calls > self.nan_after:
            loss_sum = loss_sum * float("nan")
        num_tokens = torch.tensor(len(cols))
        return {"loss": loss_sum / num_tokens, "loss_sum": loss_sum, "num_tokens": num_tokens}

    def sample_token_counts(self, samples):
        """Its "LLM" positions per sample: queries, the instruction (one token), the target."""
        return [self.query_tokens.shape[1] + 1 + len(t) for t in samples["text_output"]]

    def predict_class(self, samples, candidates=None):
        return self.logits(samples)[:, :2].argsort(-1, descending=True)


class ToyDataset(torch.utils.data.Dataset):
    """Deterministic samples; indices past the end encode the epoch (dataset contract)."""

    def __init__(self, size: int, salt: int, split: str) -> None:
        self.size, self.salt, self.split = size, salt, split

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        i = i % self.size
        g = torch.Generator().manual_seed(1000 * self.salt + i)
        image = torch.randn(3, 2, 2, generator=g)
        n = 1 + int(torch.randint(0, 5, (1,), generator=g))
        text = "".join(LETTERS[int(k)] for k in torch.randint(0, 10, (n,), generator=g))
        return {"image": image, "text_input": "say", "text_output": text,
                "instance_id": f"{self.split}-{self.salt}-{i}", "label": int(image.sum() > 0)}

    def collater(self, samples):
        return collate(samples)


def jitter(image: torch.Tensor) -> torch.Tensor:
    """A training augmentation that, like torchvision's, draws from torch's global RNG."""
    return image + 0.3 * torch.randn(image.shape)


class ToyAugDataset(BaseDataset):
    """ToyDataset's samples read through BaseDataset, augmented by `jitter`: its batches
    match across workers, processes and resumes only if the per-sample seeding works."""

    is_train = True

    def __init__(self, size: int, salt: int) -> None:
        self.plain = ToyDataset(size, salt, "train")
        super().__init__(vis_processor=jitter, ann_paths=[f"toy_aug_{salt}.json"])

    def load_annotations(self, ann_paths):
        return [{"index": i} for i in range(len(self.plain))]

    def load_visual(self, record):
        return self.vis_processor(self.plain[record["index"]]["image"])

    def build_sample(self, record, visual, index, epoch):
        return {**self.plain[index], "image": visual}


class _ToyBuilder(BaseDatasetBuilder):
    salt = 0

    def build(self):
        cfg = self.config
        train = ToyAugDataset(int(cfg.n_train), self.salt) if cfg.get("augment") else \
            ToyDataset(int(cfg.n_train), self.salt, "train")
        return {"train": train, "val": ToyDataset(int(cfg.n_val), self.salt, "val")}


@registry.register_builder("toy_a")
class ToyABuilder(_ToyBuilder):
    salt = 1
    DATASET_CONFIG_DICT = {"default": os.path.join(HERE, "configs", "toy_a.yaml")}


@registry.register_builder("toy_b")
class ToyBBuilder(_ToyBuilder):
    salt = 2
    DATASET_CONFIG_DICT = {"default": os.path.join(HERE, "configs", "toy_b.yaml")}


@registry.register_task("toy_cls")
class ToyClsTask(BaseTask):
    """Accuracy of the first of two "classes" (scored with predict_class)."""

    def valid_step(self, model, samples):
        order = model.predict_class(samples, ["no", "yes"])
        return [{"id": i, "pred": int(o[0]), "label": int(y)}
                for i, o, y in zip(samples["instance_id"], order, samples["label"])]

    def metrics(self, records, dataset):
        return {"acc": 100.0 * sum(r["pred"] == r["label"] for r in records) / len(records)}


def _save_pretrained(self, directory: str) -> None:
    """Toy stand-in for the HF layout: one state dict file."""
    os.makedirs(directory, exist_ok=True)
    torch.save(self.state_dict(), os.path.join(directory, "toy_model.pt"))


ToyIB.save_pretrained = _save_pretrained
