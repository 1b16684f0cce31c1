"""Tiny copies of every dataset in its real on-disk format, for tests and the demo.

Builders are tested on the formats they really read, in seconds and offline, and the demo
trains on them (`write_fixtures`; command line: ``lavis-ib fixtures ROOT [NAME ...]``)."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

WORDS = ("dog", "cat", "red", "bus", "two", "tree", "man", "blue", "table", "sign", "yes", "no")
SIZE = 24  # pixels: tiny, but large enough for every processor's crop


def write_image(path: str, rng: np.random.Generator, size: int = SIZE) -> str:
    """A random RGB image at `path`; the format follows the extension."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def write_video(path: str, rng: np.random.Generator, frames: int = 8, size: int = 32) -> str:
    """A short mpeg4 video of random frames at `path`, written with PyAV."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return path


def _dump(path: str, data: Any) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            f.writelines(json.dumps(row) + "\n" for row in data)
        else:
            json.dump(data, f)
    return path


def _phrase(rng: np.random.Generator, n: int = 3) -> str:
    return " ".join(rng.choice(WORDS, n))


def _info(annotations: dict[str, Any], root: str, key: str = "images", **extra: Any) -> dict[str, Any]:
    build = {"annotations": {s: {"storage": p} for s, p in annotations.items()}, key: {"storage": root}}
    build.update(extra)
    return {"build_info": build}


# -- captioning ------------------------------------------------------------------------
def _coco_caption(d: str, rng: np.random.Generator) -> dict[str, Any]:
    ann = {}
    for split, sub, n in (("train", "train2014", 3), ("val", "val2014", 2), ("test", "val2014", 2)):
        rows = []
        for k in range(n):
            image_id = {"train": 9, "val": 42, "test": 73}[split] + k
            image = f"{sub}/COCO_{sub}_{image_id:012d}.jpg"
            write_image(os.path.join(d, "images", image), rng)
            if split == "train":
                rows += [{"image": image, "caption": f"A {_phrase(rng)}.", "image_id": f"coco_{image_id}"}
                         for _ in range(2)]
            else:
                rows.append({"image": image, "caption": [f"A {_phrase(rng)}." for _ in range(5)]})
        ann[split] = _dump(f"{d}/annotations/coco_karpathy_{split}.json", rows)
    return _info(ann, f"{d}/images")


def _capfilt(d: str, rng: np.random.Generator) -> dict[str, Any]:
    import webdataset as wds
    from PIL import Image

    os.makedirs(f"{d}/shards", exist_ok=True)
    for s in range(4):
        with wds.TarWriter(f"{d}/shards/{s:03d}.tar") as sink:
            for i in range(3):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buf, "JPEG")
                caption = f"a {_phrase(rng)}"
                sample = {"__key__": f"{s:03d}{i:03d}", "jpg": buf.getvalue()}
                sample.update({"txt": caption} if i % 2 == 0 else {"json": {"caption": caption}})
                sink.write(sample)
    return {"build_info": {"annotations": {"train": {"storage": f"{d}/shards/{{000..003}}.tar"}}},
            "num_samples": 12}


def _nocaps(d: str, rng: np.random.Generator) -> dict[str, Any]:
    images = [{"id": k, "file_name": f"{k:04x}abcd.jpg"} for k in range(3)]
    for img in images:
        write_image(f"{d}/images/val/{img['file_name']}", rng)
    anns = [{"image_id": img["id"], "id": 10 * img["id"] + c, "caption": f"A {_phrase(rng)}."}
            for img in images for c in range(10)]
    path = _dump(f"{d}/nocaps_val_4500_captions.json", {"licenses": [], "info": {}, "images": images,
                                                          "annotations": anns})
    return _info({"val": path}, f"{d}/images/val")


def _flickr(d: str, rng: np.random.Generator) -> dict[str, Any]:
    ann = {}
    for split, base in (("val", 1000), ("test", 2000)):
        rows = []
        for k in range(2):
            image = f"flickr30k-images/{base + k}.jpg"
            write_image(f"{d}/images/{image}", rng)
            rows.append({"image": image, "caption": [f"A {_phrase(rng)}." for _ in range(5)]})
        ann[split] = _dump(f"{d}/annotations/flickr30k_{split}.json", rows)
    return _info(ann, f"{d}/images")


def _textcaps(d: str, rng: np.random.Generator) -> dict[str, Any]:
    ann, ocr = {}, {}
    for split, n in (("train", 3), ("val", 2)):
        data, ocr_rows = [], [{"dataset_name": "textvqa", "dataset_type": split}]
        for k in range(n):
            image_id = f"{split[0]}{k:03d}beef"
            write_image(f"{d}/train_images/{image_id}.jpg", rng)
            refs = [f"A sign that says {_phrase(rng, 2)}." for _ in range(5)]
            data += [{"image_id": image_id, "image_path": f"train/{image_id}.jpg", "caption_id": c,
                      "caption_str": ref, "reference_strs": refs, "set_name": split} for c, ref in enumerate(refs[:2])]
            ocr_rows.append({"image_id": image_id, "ocr_tokens": [f"tok{k}a", f"tok{k}b"], "ocr_info": []})
        ann[split] = _dump(f"{d}/TextCaps_0.1_{split}.json", {"dataset_type": split, "data": data})
        ocr[split] = {"storage": _dump(f"{d}/TextVQA_Rosetta_OCR_v0.2_{split}.json",
                                       {"dataset_type": split, "data": ocr_rows})}
    return _info(ann, f"{d}/train_images", ocr=ocr)


# -- retrieval and pretraining captions ---------------------------------------------------
def _retrieval_rows(rng: np.random.Generator, images: list[str], ids: list[str], split: str,
                    counts: Sequence[int]) -> list[dict[str, Any]]:
    """LAVIS retrieval lists: train one row per caption (with image_id), eval one row per
    image with its captions (an image may have more than 5, as some COCO images do)."""
    if split == "train":
        return [{"image": image, "caption": f"A {_phrase(rng)}.", "image_id": image_id}
                for image, image_id, n in zip(images, ids, counts) for _ in range(n)]
    return [{"image": image, "caption": [f"A {_phrase(rng, 4)}." for _ in range(n)]}
            for image, n in zip(images, counts)]


def _coco_retrieval(d: str, rng: np.random.Generator) -> dict[str, Any]:
    ann = {}
    for split, sub, counts in (("train", "train2014", (3, 2, 3)), ("val", "val2014", (5, 5, 5)),
                               ("test", "val2014", (5, 6, 5, 5))):
        base = {"train": 110, "val": 140, "test": 170}[split]
        numbers = [base + k for k in range(len(counts))]
        images = [f"{sub}/COCO_{sub}_{n:012d}.jpg" for n in numbers]
        for image in images:
            write_image(os.path.join(d, "images", image), rng)
        rows = _retrieval_rows(rng, images, [f"coco_{n}" for n in numbers], split, counts)
        ann[split] = _dump(f"{d}/annotations/coco_karpathy_{split}.json", rows)
    return _info(ann, f"{d}/images")


def _flickr_retrieval(d: str, rng: np.random.Generator) -> dict[str, Any]:
    ann = {}
    for split, base, n in (("train", 3000, 3), ("val", 4000, 3), ("test", 5000, 4)):
        numbers = [base + k for k in range(n)]
        images = [f"flickr30k-images/{k}.jpg" for k in numbers]
        for image in images:
            write_image(f"{d}/images/{image}", rng)
        rows = _retrieval_rows(rng, images, [str(k) for k in numbers], split, [5] * n)
        ann[split] = _dump(f"{d}/annotations/flickr30k_{split}.json", rows)
    return _info(ann, f"{d}/images")


def _vg_caption(d: str, rng: np.random.Generator) -> dict[str, Any]:
    """BLIP's vg_caption.json keeps the authors' absolute image paths (the builder cuts them)."""
    rows = []
    for k, n in zip(range(1, 4), (3, 1, 4)):
        write_image(f"{d}/images/{k}.jpg", rng)
        rows += [{"image": f"/export/share/datasets/vision/visual-genome/image/{k}.jpg",
                  "caption": f"the {_phrase(rng, 2)}", "image_id": f"vg_{k}"} for _ in range(n)]
    return _info({"train": _dump(f"{d}/annotations/vg_caption.json", rows)}, f"{d}/images")


# -- question answering ------------------------------------------------------------------
def _vqa_official(d: str, rng: np.random.Generator, splits: Sequence[str] = ("train", "val"),
                  prefix: str = "v2_", qbase: int = 1000) -> dict[str, Any]:
    ann = {}
    for split in splits:
        sub = f"{split}2014"
        questions, annotations = [], []
        for k in range(3):
            image_id = qbase + 10 * k + (0 if split == "train" else 5)
            write_image(f"{d}/images/{sub}/COCO_{sub}_{image_id:012d}.jpg", rng)
            for j in range(2):
                qid = image_id * 10 + j
                questions.append({"image_id": image_id, "question": f"What is the {_phrase(rng, 1)}?",
                                  "question_id": qid})
                pool = [str(w) for w in rng.choice(WORDS, 3, replace=False)]
                answers = [pool[0]] * 6 + [pool[1]] * 3 + [pool[2]]
                annotations.append({"question_id": qid, "image_id": image_id, "question_type": "what is",
                                    "answer_type": "other", "multiple_choice_answer": pool[0],
                                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                                for i, a in enumerate(answers)]})
        q = _dump(f"{d}/{prefix}OpenEnded_mscoco_{sub}_questions.json",
                  {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                   "data_subtype": sub, "questions": questions})
        a = _dump(f"{d}/{prefix}mscoco_{sub}_annotations.json",
                  {"info": {}, "data_type": "mscoco", "license": {}, "data_subtype": sub,
                   "annotations": annotations})
        ann[split] = [q, a]
    return _info(ann, f"{d}/images")


def _aokvqa(d: str, rng: np.random.Generator, splits: Sequence[str] = ("train", "val")) -> dict[str, Any]:
    ann = {}
    for split in splits:
        rows = []
        for k in range(3):
            image_id = 500 + k + (0 if split == "train" else 50)
            write_image(f"{d}/images/{split}2017/{image_id:012d}.jpg", rng)
            choices = [str(w) for w in rng.choice(WORDS, 4, replace=False)]
            rows.append({"split": split, "image_id": image_id, "question_id": f"{split}{k}x22",
                         "question": f"Why is the {_phrase(rng, 1)} here?", "choices": choices,
                         "correct_choice_idx": k % 4, "direct_answers": [choices[k % 4]] * 7 + [choices[0]] * 3,
                         "difficult_direct_answer": False, "rationales": ["because"]})
        ann[split] = _dump(f"{d}/aokvqa_v1p0_{split}.json", rows)
    return _info(ann, f"{d}/images")


def _ocrvqa(d: str, rng: np.random.Generator) -> dict[str, Any]:
    data, ocr = {}, {}
    for k, split in enumerate((1, 1, 2, 3)):
        asin = f"00{k}123456X"
        write_image(f"{d}/images/{asin}.jpg", rng)
        data[asin] = {"imageURL": f"http://ecx.images-amazon.com/images/I/{asin}.jpg", "title": "A Book",
                      "authorName": "Someone", "genre": "Travel", "split": split,
                      "questions": ["Who wrote this book?", "What is the genre of this book?"],
                      "answers": ["Someone", "Travel"]}
        ocr[asin] = ["A", "Book", f"vol{k}"]
    path = _dump(f"{d}/dataset.json", data)
    ocr_path = _dump(f"{d}/ocr_tokens.json", ocr)
    return _info({s: path for s in ("train", "val", "test")}, f"{d}/images",
                 ocr={s: {"storage": ocr_path} for s in ("train", "val", "test")})


def _gqa(d: str, rng: np.random.Generator) -> dict[str, Any]:
    data = {}
    for k in range(3):
        image = f"n{1000 + k}"
        write_image(f"{d}/images/{image}.jpg", rng)
        data[f"20{k}1234"] = {"imageId": image, "question": f"Is the {_phrase(rng, 1)} on the left?",
                              "answer": str(rng.choice(["yes", "no"])), "fullAnswer": "Yes, it is.",
                              "isBalanced": True, "types": {}, "semantic": []}
    return _info({"test": _dump(f"{d}/testdev_balanced_questions.json", data)}, f"{d}/images")


def _textvqa(d: str, rng: np.random.Generator) -> dict[str, Any]:
    data, ocr_rows = [], [{"dataset_name": "textvqa"}]
    for k in range(3):
        image_id = f"{k:04d}cafe"
        write_image(f"{d}/train_images/{image_id}.jpg", rng)
        data.append({"question": "What does the sign say?", "image_id": image_id, "question_id": 34602 + k,
                     "answers": [f"stop{k}"] * 8 + ["go"] * 2, "set_name": "val", "image_classes": []})
        ocr_rows.append({"image_id": image_id, "ocr_tokens": [f"stop{k}", "sign"], "ocr_info": []})
    return _info({"val": _dump(f"{d}/TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})},
                 f"{d}/train_images",
                 ocr={"val": {"storage": _dump(f"{d}/TextVQA_Rosetta_OCR_v0.2_val.json", {"data": ocr_rows})}})


def _vizwiz(d: str, rng: np.random.Generator) -> dict[str, Any]:
    ann = {}
    for split in ("val", "test"):
        rows = []
        for k in range(2):
            image = f"VizWiz_{split}_{k:08d}.jpg"
            write_image(f"{d}/{split}/{image}", rng)
            row = {"image": image, "question": "What is this?"}
            if split == "val":
                row.update(answers=[{"answer": "soup", "answer_confidence": "yes"}] * 10,
                           answer_type="other", answerable=1)
            rows.append(row)
        ann[split] = _dump(f"{d}/Annotations/{split}.json", rows)
    info = _info(ann, "")
    info["build_info"]["images"] = {"storage": {s: f"{d}/{s}" for s in ("val", "test")}}
    return info


def _llava(d: str, rng: np.random.Generator, turns: int) -> dict[str, Any]:
    rows = []
    for k in range(2):
        image = f"{k:012d}.jpg"
        write_image(f"{d}/images/{image}", rng)
        conv = []
        for t in range(turns):
            q = f"What is the {_phrase(rng, 1)} doing?"
            conv += [{"from": "human", "value": ("<image>\n" + q) if t == 0 else q},
                     {"from": "gpt", "value": f"The {_phrase(rng)} is turn {t}."}]
        rows.append({"id": f"{k:012d}", "image": image, "conversations": conv})
    return _info({"train": _dump(f"{d}/llava.json", rows)}, f"{d}/images")


# -- multiple choice, classification, dialog ----------------------------------------------
def _scienceqa(d: str, rng: np.random.Generator) -> dict[str, Any]:
    problems = {}
    splits = ("val", "test", "test", "test", "train", "train")   # problem 13 has no image
    for k, split in enumerate(splits):
        pid = str(10 + k)
        has_image = k != 3
        problems[pid] = {"question": "Which is a mammal?", "choices": ["dog", "fish", "frog"][: 2 + k % 2],
                         "answer": k % 2, "hint": "" if k == 0 else "Look at the picture.",
                         "image": "image.png" if has_image else None, "task": "closed choice",
                         "grade": "grade2", "subject": "natural science", "split": split,
                         "lecture": "", "solution": ""}
        if has_image:
            write_image(f"{d}/images/{problems[pid]['split']}/{pid}/image.png", rng)
    return _info({"test": _dump(f"{d}/problems.json", problems)}, f"{d}/images")


def _iconqa(d: str, rng: np.random.Generator) -> dict[str, Any]:
    problems = {}
    for k, qtype in enumerate(("choose_txt", "choose_txt", "choose_img", "choose_txt")):
        pid = str(200 + k)
        problems[pid] = {"question": "How many shapes?", "choices": ["1", "2", "3"], "answer": k % 3,
                         "ques_type": qtype, "grade": "grade1", "label": "counting", "split": "test"}
        if qtype == "choose_txt":
            write_image(f"{d}/iconqa/test/choose_txt/{pid}/image.png", rng)
    return _info({"test": _dump(f"{d}/problems.json", problems)}, f"{d}/iconqa")


def _hateful(d: str, rng: np.random.Generator) -> dict[str, Any]:
    rows = []
    for k in range(4):
        mid = 42950 + k
        write_image(f"{d}/img/{mid}.png", rng)
        rows.append({"id": mid, "img": f"img/{mid}.png", "label": k % 2, "text": f"a {_phrase(rng)}"})
    return _info({"val": _dump(f"{d}/dev_seen.jsonl", rows)}, d)


def _vsr(d: str, rng: np.random.Generator) -> dict[str, Any]:
    rows = []
    for k in range(4):
        image = f"{300 + k:012d}.jpg"
        write_image(f"{d}/images/{image}", rng)
        rows.append({"image": image, "image_link": "http://images.cocodataset.org/x.jpg",
                     "caption": f"The {_phrase(rng, 1)} is left of the {_phrase(rng, 1)}.",
                     "label": k % 2, "relation": "left of", "subj": "cat", "obj": "dog"})
    return _info({"test": _dump(f"{d}/zeroshot/test.jsonl", rows)}, f"{d}/images")


def _visdial(d: str, rng: np.random.Generator) -> dict[str, Any]:
    answers = [f"answer {i}" for i in range(120)]
    questions = [f"is there a {w}" for w in WORDS]
    dialogs = []
    for k in range(2):
        image_id = 185565 + k
        write_image(f"{d}/VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg", rng)
        rounds = []
        for r in range(10):
            options = [int(i) for i in rng.choice(len(answers), 100, replace=False)]
            gt = int(rng.integers(100))
            rounds.append({"question": int(rng.integers(len(questions))), "answer": options[gt],
                           "answer_options": options, "gt_index": gt})
        dialogs.append({"image_id": image_id, "caption": f"a {_phrase(rng)}", "dialog": rounds})
    path = _dump(f"{d}/visdial_1.0_val.json", {"version": "1.0", "split": "val2018",
                                                "data": {"questions": questions, "answers": answers,
                                                         "dialogs": dialogs}})
    return _info({"val": path}, f"{d}/VisualDialog_val2018")


# -- video --------------------------------------------------------------------------------
def _video_lavis(d: str, rng: np.random.Generator, official: bool) -> dict[str, Any]:
    ann, vocab = {}, {}
    for split, base in (("train", 7000), ("val", 7100), ("test", 7200)):
        rows = []
        for k in range(2):
            vid = base + k
            write_video(f"{d}/videos/video{vid}.mp4", rng)
            answer = str(rng.choice(WORDS))
            vocab.setdefault(answer, len(vocab)) if split == "train" else None
            if official:   # MSRVTT-QA as released: video_id + id
                rows.append({"video_id": vid, "id": vid * 10, "question": "what is shown?", "answer": answer})
            else:
                rows.append({"video": f"video{vid}.mp4", "question_id": vid * 10, "question": "what is shown?",
                             "answer": answer})
        ann[split] = _dump(f"{d}/annotations/qa_{split}.json", rows)
    return _info(ann, f"{d}/videos", key="videos",
                 answer_list={"storage": _dump(f"{d}/annotations/train_ans2label.json", vocab)})


def _ivqa(d: str, rng: np.random.Generator) -> dict[str, Any]:
    ann = {}
    for split, base in (("train", 0), ("val", 10), ("test", 20)):
        path = f"{d}/{split}.csv"
        os.makedirs(d, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["video_id", "start", "end", "question", *[f"answer{i}" for i in range(1, 6)]])
            for k in range(2):
                vid, start, end = f"vid{base + k:05d}", 3 + k, 13 + k
                write_video(f"{d}/videos/{vid}_{start}_{end}.mp4", rng)
                writer.writerow([vid, start, end, "what is the man holding?",
                                 *[str(rng.choice(WORDS[:3])) for _ in range(5)]])
        ann[split] = path
    return _info(ann, f"{d}/videos", key="videos", answer_list={"storage": ann["train"]})


WRITERS: dict[str, Callable[[str, np.random.Generator], dict[str, Any]]] = {
    "coco_caption": _coco_caption, "capfilt14m": _capfilt, "nocaps": _nocaps, "flickr30k": _flickr,
    "textcaps": _textcaps,
    "coco_vqa": _vqa_official, "coco_vqg": lambda d, r: _vqa_official(d, r, ("train",)),
    "ok_vqa": lambda d, r: _vqa_official(d, r, prefix="", qbase=2000),
    "ok_vqg": lambda d, r: _vqa_official(d, r, ("train",), prefix="", qbase=2000),
    "aok_vqa": _aokvqa, "aok_vqg": lambda d, r: _aokvqa(d, r, ("train",)), "ocr_vqa": _ocrvqa,
    "gqa": _gqa, "textvqa": _textvqa, "vizwiz_vqa": _vizwiz,
    "llava_conversation": lambda d, r: _llava(d, r, 3), "llava_detail": lambda d, r: _llava(d, r, 1),
    "llava_reasoning": lambda d, r: _llava(d, r, 1),
    "scienceqa": _scienceqa, "iconqa": _iconqa, "hateful_memes": _hateful, "vsr": _vsr, "visdial": _visdial,
    "msvd_qa": lambda d, r: _video_lavis(d, r, False), "msrvtt_qa": lambda d, r: _video_lavis(d, r, True),
    "ivqa": _ivqa,
    "coco_retrieval": _coco_retrieval, "flickr30k_retrieval": _flickr_retrieval, "vg_caption": _vg_caption,
}


def write_fixtures(root: str, names: Sequence[str] | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Write tiny copies of datasets under ``root/<name>/``.

    A few records per split of each dataset, in the same annotation format its builder
    reads (official JSON/JSONL/CSV layouts, LAVIS lists where the builder reads those),
    synthetic images (PIL), short videos (PyAV, mpeg4) and webdataset tar shards.

    Layout (stable: project files such as demo_tiny.yaml point `cache_root` at a fixture
    root and use relative paths): everything of dataset <name> lies under ``root/<name>/``
    with the official file names, e.g. ``coco_caption/annotations/coco_karpathy_train.json``,
    ``ok_vqa/OpenEnded_mscoco_train2014_questions.json``, ``ok_vqa/images/train2014/...``.
    Each override holds absolute ``build_info`` storage paths (annotations per split, images
    or videos, OCR files, answer lists) and, for capfilt14m, ``num_samples``. Processors
    are not touched: set ``vis_processor.*.image_size`` yourself for a smaller model.

    Example::

        overrides = write_fixtures("/tmp/fx", ["coco_vqa"])
        cfg = OmegaConf.merge(OmegaConf.load(default_yaml).datasets.coco_vqa, overrides["coco_vqa"])
        datasets = registry.get_builder_class("coco_vqa")(cfg).build_datasets()

    Args:
        root: folder to write into (created).
        names: datasets to write (default: all of `WRITERS`).
        seed: seed of the synthetic content (each dataset seeded by (seed, its name)).

    Returns:
        {name: overrides}: merge each into ``datasets.<name>`` of a config (absolute
        build_info storage paths; ``num_samples`` for capfilt14m).

    Raises:
        ConfigError: an unknown dataset name (the message lists the known ones).
    """
    from lavis_ib.common.errors import ConfigError, did_you_mean

    names = list(WRITERS) if names is None else list(names)
    out = {}
    for name in names:
        if name not in WRITERS:
            raise ConfigError(f"write_fixtures: no fixture for dataset '{name}'.{did_you_mean(name, WRITERS)} "
                              f"Known: {', '.join(WRITERS)}.")
        rng = np.random.default_rng([int(seed), *name.encode("utf-8")])
        out[name] = WRITERS[name](os.path.join(os.path.abspath(root), name), rng)
    return out
