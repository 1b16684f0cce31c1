"""`BaseDatasetBuilder`: reads a dataset's config (`build_info`, processors) and builds its
splits, so a new dataset only names its dataset classes and default YAML.

The LAVIS signature of dataset classes is kept (vis_processor=, text_processor=, vis_root=,
ann_paths=), and missing files are found before anything is read (`check_files`)."""
from __future__ import annotations

import os
import shutil
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lavis_ib.common import dist_utils
from lavis_ib.common.errors import ConfigError, DataError, did_you_mean
from lavis_ib.common.paths import package_path
from lavis_ib.common.schema import expand_path
from lavis_ib.processors.build import build_processor


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def download_file(url: str, storage: str) -> str:
    """Copy `url` to `storage` through iopath (http(s), or any path iopath can open)."""
    from iopath.common.file_io import HTTPURLHandler, PathManager

    manager = PathManager()
    manager.register_handler(HTTPURLHandler())
    try:
        local = manager.get_local_path(url)
    except Exception as exc:  # iopath raises whatever its handler raises
        raise DataError(f"cannot download '{url}' to '{storage}': {exc}") from None
    os.makedirs(os.path.dirname(os.path.abspath(storage)) or ".", exist_ok=True)
    tmp = f"{storage}.part"
    shutil.copyfile(local, tmp)
    os.replace(tmp, storage)
    return storage


class BaseDatasetBuilder:
    """Base of registered dataset builders.

    Dataset config (``configs/datasets/<name>/defaults.yaml``, under ``datasets.<name>``)::

        data_type: images                    # or videos
        download: false                      # true: fetch missing `url` files (rank 0 only)
        cache_root: null                     # prefix of relative storage paths
        build_info:
          annotations:                       # one entry per split; "train" trains, others evaluate
            train: {url: <url or [urls]>, storage: <path or [paths]>}
            val:   {storage: ...}
          images: {storage: <folder>}        # or {storage: {split: folder}}; `videos`: video data
          ocr:    {train: {storage: ...}}    # optional OCR-token files per split
        vis_processor: {train: {name: ...}, eval: {name: ...}}
        text_processor: {train: {name: instruction_template, family: vqa}, eval: {...}}

        allow_outside_root: false            # true: media paths may leave the images/videos folder

    A file that is missing (and not downloaded) raises one `DataError` naming the path, the
    config key and where the data comes from; `check_files()` lists every such problem
    without reading or downloading anything (the pre-flight check).

    Class attributes:
        train_dataset_cls: dataset class of the training split (None: evaluation only).
        eval_dataset_cls: dataset class of the val/test splits (None: training only).
        DATASET_CONFIG_DICT: {type: default YAML path} ("default" at least).
        DATA_SOURCE: where users get the data (shown when a file is missing).
        dataset_kwargs: extra keyword arguments of every split's dataset.
        CONFIG_KWARGS: dataset config keys passed on to the dataset classes when set.
    """

    train_dataset_cls: type | None = None
    eval_dataset_cls: type | None = None
    DATASET_CONFIG_DICT: dict[str, str] = {}
    DATA_SOURCE: str = ""
    data_type: str = "images"
    dataset_kwargs: dict[str, Any] = {}
    CONFIG_KWARGS: tuple[str, ...] = ()
    #: the annotations carry no OCR tokens, so every split needs `build_info.ocr.<split>`
    OCR_FILES_REQUIRED = False

    def __init__(self, cfg: Any = None) -> None:
        if cfg is None:
            cfg = OmegaConf.load(self.default_config_path()).datasets
            cfg = next(iter(cfg.values())) if len(cfg) == 1 else cfg
        elif not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        self.config = cfg
        self.data_type = cfg.get("data_type", self.data_type)
        self.vis_processors: dict[str, Any] = {"train": None, "eval": None}
        self.text_processors: dict[str, Any] = {"train": None, "eval": None}
        self._problems: list[str] | None = None   # a list while check_files() runs

    @classmethod
    def default_config_path(cls, type: str = "default") -> str:  # noqa: A002 (LAVIS name)
        if type not in cls.DATASET_CONFIG_DICT:
            raise ConfigError(
                f"{cls.__name__} has no config type '{type}'."
                f"{did_you_mean(type, cls.DATASET_CONFIG_DICT)} "
                f"Types: {', '.join(sorted(cls.DATASET_CONFIG_DICT)) or '(none)'}.")
        return package_path(cls.DATASET_CONFIG_DICT[type])

    # -- processors -----------------------------------------------------------------
    def build_processors(self) -> None:
        for attr, key in (("vis_processors", "vis_processor"), ("text_processors", "text_processor")):
            node = self.config.get(key) or {}
            getattr(self, attr).update({split: build_processor(node.get(split))
                                        for split in ("train", "eval") if node.get(split)})

    # -- files ----------------------------------------------------------------------
    def resolve_path(self, path: str) -> str:
        """Relative storage paths are taken from `cache_root` (or the working directory);
        `~` and environment variables expand in both."""
        path = expand_path(path)
        root = self.config.get("cache_root")
        if os.path.isabs(path) or not root:
            return path
        return os.path.join(expand_path(root), path)

    def require(self, path: str, what: str, hint: str = "") -> str:
        """`path` if it exists, else a DataError naming it and the data's source."""
        if not os.path.exists(path):
            source = f" Get it from {self.DATA_SOURCE}." if self.DATA_SOURCE else ""
            message = (f"{type(self).__name__}: {what} '{path}' does not exist.{source}{hint} "
                       f"Set its location under build_info in the dataset config.")
            if self._problems is None:
                raise DataError(message)
            self._problems.append(message)
        return path

    # -- pre-flight -------------------------------------------------------------------
    def _collect(self, walk: Any) -> list[str]:
        """Run `walk()` with `require` collecting instead of raising; the problems found."""
        self._problems = []
        try:
            walk()
        except (ConfigError, DataError) as exc:
            self._problems.append(str(exc))
        finally:
            problems, self._problems = self._problems, None
        return problems

    def check_files(self) -> list[str]:
        """Every annotation file, media folder, OCR file and answer list the build would
        need and cannot find (files a `download: true` dataset would fetch excepted),
        without reading or downloading anything. A builder with a `build` of its own
        (another file layout) is not walked: it overrides this method to list its files."""
        if type(self).build is not BaseDatasetBuilder.build:
            return []

        def walk() -> None:
            for split in self.splits():
                cls = self.train_dataset_cls if split == "train" else self.eval_dataset_cls
                self._files(self.config.build_info.annotations[split],
                            f"annotation file (build_info.annotations.{split})")
                self.vis_root(split)
                if cls is not None:
                    self.split_kwargs(split, cls)
        return self._collect(walk)

    def _files(self, node: Any, what: str) -> list[str]:
        """Storage paths of a `{url, storage}` node, downloading missing ones when asked."""
        if node is None:
            return []
        if isinstance(node, (str, list, ListConfig)):
            node = {"storage": node}
        urls = [str(u) for u in _as_list(node.get("url"))]
        # LAVIS allows `url` alone: the file is then stored under cache_root by its name
        storage = node.get("storage") or [os.path.basename(u.split("?")[0]) for u in urls]
        storages = [self.resolve_path(p) for p in _as_list(storage)]
        if not storages:
            raise ConfigError(f"{type(self).__name__}: {what} has neither 'storage' nor 'url'.")
        if self._problems is not None and self.config.get("download", False) and urls:
            return storages   # pre-flight: missing files will be downloaded
        if self.config.get("download", False) and urls:
            if len(urls) != len(storages):
                raise ConfigError(f"{type(self).__name__}: {what} lists {len(urls)} url(s) for "
                                  f"{len(storages)} storage path(s); give one url per path.")
            # every rank reaches the barrier whatever its file system shows; rank 0 fetches
            if dist_utils.is_main_process():
                for url, path in zip(urls, storages):
                    if not os.path.exists(path):
                        download_file(url, path)
            dist_utils.barrier()
        for i, path in enumerate(storages):
            hint = f" Or set download: true to fetch it from {urls[min(i, len(urls) - 1)]}." \
                if urls and not self.config.get("download", False) else ""
            self.require(path, what, hint)
        return storages

    def vis_root(self, split: str) -> str | None:
        info = self.config.build_info
        key = "videos" if self.data_type == "videos" else "images"
        node = info.get(key) or info.get("images") or info.get("videos")
        if node is None:
            return None
        storage = node.get("storage")
        if isinstance(storage, (dict, DictConfig)):
            if split not in storage:
                raise ConfigError(f"{type(self).__name__}: build_info.{key}.storage has no entry "
                                  f"for split '{split}' (has {sorted(storage)}).")
            storage = storage[split]
        return self.require(self.resolve_path(storage), f"{key} folder (build_info.{key}.storage)")

    def splits(self) -> list[str]:
        annotations = self.config.get("build_info", {}).get("annotations")
        if not annotations:
            raise ConfigError(f"{type(self).__name__}: build_info.annotations lists no split.")
        return [str(s) for s in annotations.keys()]

    # -- building -------------------------------------------------------------------
    def build_datasets(self) -> dict[str, Any]:
        """{split: dataset} for every split listed under `build_info.annotations`."""
        self.build_processors()
        return self.build()

    def split_kwargs(self, split: str, cls: type) -> dict[str, Any]:
        """Extra dataset arguments of one split: `dataset_kwargs`, the split name (for
        datasets whose splits share one file) and OCR files."""
        kwargs = dict(self.dataset_kwargs)
        kwargs.update({k: self.config[k] for k in self.CONFIG_KWARGS if self.config.get(k) is not None})
        if "split" in getattr(cls, "extra_args", dict)():
            kwargs["split"] = split
        if self.config.get("allow_outside_root", False):
            kwargs["allow_outside_root"] = True
        ocr = (self.config.build_info.get("ocr") or {}).get(split)
        if ocr is not None:
            kwargs["ocr_paths"] = self._files(ocr, f"OCR file (build_info.ocr.{split})")
        elif self.OCR_FILES_REQUIRED:
            # an OCR dataset without tokens would silently read "OCR tokens: . Question: ..."
            raise ConfigError(
                f"{type(self).__name__}: split '{split}' uses OCR tokens but its annotations "
                f"carry none: set build_info.ocr.{split} to an OCR file, either the Rosetta "
                f"layout ({{data: [{{image_id, ocr_tokens}}]}}) or a JSON mapping "
                f"{{image id: [tokens]}} (docs/protocol.md, OCR).")
        return kwargs

    def _check_processors(self, cls: type, proc: str, split: str) -> None:
        """A split without its image processor would yield PIL images, and a templated
        training set without its template processor would silently skip the templates."""
        if self.vis_processors.get(proc) is None and getattr(cls, "needs_vis_processor", True):
            raise ConfigError(f"{type(self).__name__}: split '{split}' needs vis_processor.{proc} "
                              f"(e.g. {{name: blip_image_{proc}}}) in the dataset config.")
        if self.text_processors.get(proc) is None and getattr(cls, "uses_template", False):
            raise ConfigError(f"{type(self).__name__}: split '{split}' needs text_processor.{proc} "
                              f"(e.g. {{name: instruction_template, family: vqa}}) in the dataset config.")

    def build(self) -> dict[str, Any]:
        datasets = {}
        for split in self.splits():
            is_train = split == "train"
            cls = self.train_dataset_cls if is_train else self.eval_dataset_cls
            if cls is None:
                kind = "evaluation" if is_train else "training"
                raise ConfigError(f"{type(self).__name__}: this dataset is {kind}-only; remove "
                                  f"build_info.annotations.{split} from its config.")
            ann_paths = self._files(self.config.build_info.annotations[split],
                                    f"annotation file (build_info.annotations.{split})")
            proc = "train" if is_train else "eval"
            self._check_processors(cls, proc, split)
            datasets[split] = cls(vis_processor=self.vis_processors.get(proc),
                                  text_processor=self.text_processors.get(proc),
                                  vis_root=self.vis_root(split), ann_paths=ann_paths,
                                  **self.split_kwargs(split, cls))
        return datasets
